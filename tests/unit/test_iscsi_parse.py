"""iSCSI agent records and metrics: synthetic runs with known stalls, and a saved real failover."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import pytest

from vclab.workloads.iscsi import agent as iscsi_agent
from vclab.workloads.iscsi import libiscsi
from vclab.workloads.iscsi.workload import STALL_FLOOR_FACTOR, Iscsi, parse, quiet_stall, series
from vclab.workloads.iscsi.records import (
    FAILED,
    OK,
    UNFINISHED,
    IoPattern,
    RecordLog,
    Row,
    parse_mix,
    read_log,
)
from vclab.workloads.iscsi.libiscsi import portal_address

DATA = Path(__file__).parent.parent / "data" / "iscsi"
MS = 1_000_000
T0 = 1_700_000_000 * 10**9
PORTALS = ["10.0.0.1:3260", "10.0.1.1:3260"]


def test_mix() -> None:
    assert parse_mix("70/30") == 70
    assert parse_mix("0/100") == 0
    for bad in ("70/20", "70", "a/b", "-10/110"):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_portal_address() -> None:
    assert portal_address("10.0.0.1") == "10.0.0.1:3260"
    assert portal_address("10.0.0.1:3261") == "10.0.0.1:3261"


def test_random_4k_is_aligned_inside_the_lun_and_mixed() -> None:
    p = IoPattern("random-4k", 70, lun_blocks=131072, block_size=512, seed=3)
    ios = [p.next() for _ in range(5000)]
    assert p.io_bytes == 4096 and p.blocks == 8
    assert all(lba % 8 == 0 and 0 <= lba <= 131072 - 8 for _, lba in ios)
    reads = sum(op == "r" for op, _ in ios) / len(ios)
    assert 0.67 < reads < 0.73
    assert len({lba for _, lba in ios}) > 3000  # spread, not stuck
    again = IoPattern("random-4k", 70, lun_blocks=131072, block_size=512, seed=3)
    assert [again.next() for _ in range(5000)] == ios  # seeded: a run can be replayed


def test_sequential_64k_wraps_at_the_end() -> None:
    p = IoPattern("sequential-64k", 100, lun_blocks=128 * 3 + 5, block_size=512)
    lbas = [p.next()[1] for _ in range(5)]
    assert lbas == [0, 128, 256, 0, 128]
    big_blocks = IoPattern("sequential-64k", 0, lun_blocks=100, block_size=4096)
    assert big_blocks.blocks == 16 and big_blocks.next() == ("w", 0)


def test_bad_pattern_and_tiny_lun() -> None:
    with pytest.raises(ValueError, match="pattern"):
        IoPattern("random-1m", 50, 1000, 512)
    with pytest.raises(ValueError, match="smaller"):
        IoPattern("sequential-64k", 50, 64, 512)


def test_log_round_trip(tmp_path) -> None:
    out = tmp_path / "io.csv"
    log = RecordLog(out, {"portals": PORTALS, "depth": 1})
    log.file.write('#capacity {"block_size": 512, "io_bytes": 4096}\n')
    log.add("r", T0, T0 + MS, OK, 0, 1)
    log.add("switch", T0 + 2 * MS, T0 + 3 * MS, OK, 1, 0)
    log.flush()
    log.add("w", T0 + 4 * MS, T0 + 9 * MS, FAILED, 1, 2)
    log.close({"t_start_ns": T0, "t_end_ns": T0 + 10 * MS})
    with out.open("a") as f:
        f.write("r,123,45")  # cut short by a SIGKILL mid-line
    header, rows, trailer = read_log(out)
    assert header == {"portals": PORTALS, "depth": 1, "block_size": 512, "io_bytes": 4096}
    assert rows == [Row("r", T0, T0 + MS, OK, 0, 1),
                    Row("switch", T0 + 2 * MS, T0 + 3 * MS, OK, 1, 0),
                    Row("w", T0 + 4 * MS, T0 + 9 * MS, FAILED, 1, 2)]
    assert trailer == {"t_start_ns": T0, "t_end_ns": T0 + 10 * MS}
    (tmp_path / "bad").write_text("hello\n")
    with pytest.raises(ValueError):
        read_log(tmp_path / "bad")


def steady(n: int, start: int, path: int = 0, lat_ms: float = 0.5, every_ms: float = 1.0,
           op_every: int = 3) -> list[Row]:
    """n I/Os, one completing every `every_ms`; every `op_every`-th is a write."""
    rows = []
    for i in range(n):
        t1 = start + int((i + 1) * every_ms * MS)
        rows.append(Row("w" if i % op_every == 0 else "r", t1 - int(lat_ms * MS), t1, OK, path, 1))
    return rows


def raw(rows: list[Row], t_start: int, t_end: int, io_bytes: int = 4096) -> dict:
    return {"header": {"portals": PORTALS, "io_bytes": io_bytes}, "rows": rows,
            "trailer": {"t_start_ns": t_start, "t_end_ns": t_end}}


def test_steady_run() -> None:
    res = parse(raw(steady(1000, T0, lat_ms=0.5), T0, T0 + 1000 * MS))
    assert res["ios"] == 1000 and res["failed"] == 0 and res["unfinished"] == 0
    assert res["iops"] == pytest.approx(1000)
    assert res["writes"] == 334 and res["reads"] == 666
    assert res["throughput_bps"] == pytest.approx(1000 * 4096 * 8)
    assert res["latency_ms"]["median"] == pytest.approx(0.5)
    assert res["longest_stall_ms"] == pytest.approx(1.0)
    assert res["path_switches"] == [] and res["ios_per_path"] == {PORTALS[0]: 1000}
    assert res["longest_io"]["attempts"] == 1 and res["longest_io"]["finished"]
    s = res["series"]
    assert len(s["t_ms"]) == 11 and s["iops"][0] == pytest.approx(990) and s["iops"][5] == 1000


def test_failover_run_with_fault() -> None:
    """1 s of steady I/O on A, a fault, one I/O that waits out the 1 s timeout and completes
    on B, then steady I/O on B."""
    fault = T0 + 1000 * MS
    before = steady(1000, T0, path=0)
    detect = fault + 1000 * MS
    stuck = Row("r", fault - MS // 2, detect + 2 * MS, OK, 1, 2)
    after = steady(500, detect + 2 * MS, path=1)
    events = [Row("down", detect, detect, FAILED, 0, 1),
              Row("switch", detect, detect + MS, OK, 1, 0),
              Row("up", detect + 600 * MS, detect + 610 * MS, OK, 0, 0)]
    res = parse(raw(before + [stuck] + after + events, T0, detect + 600 * MS), fault_ns=fault)
    assert res["path_switches"] == [{"t_ns": detect + MS, "detected_ns": detect,
                                     "from": PORTALS[0], "to": PORTALS[1], "switch_ms": 1.0}]
    assert res["paths_down"] == [{"t_ns": detect, "path": PORTALS[0], "reason": "timeout"}]
    assert res["paths_up"][0]["login_ms"] == pytest.approx(10)
    assert res["fault_stall_ms"] == pytest.approx(1002)  # last completion on A -> the stuck one
    assert res["fault_stall"]["start_ns"] == fault
    assert res["stall_noise_floor_ms"] == pytest.approx(1.0)
    assert res["detect_ms"] == pytest.approx(1000) and res["failover_ms"] == pytest.approx(1001)
    assert res["resumed_on_other_path_ms"] == pytest.approx(1002)
    assert res["longest_io"]["ms"] == pytest.approx(1002.5) and res["longest_io"]["attempts"] == 2
    assert res["retried"] == 1
    assert res["ios_per_path"] == {PORTALS[0]: 1000, PORTALS[1]: 501}


def test_unfinished_io_counts_as_stall_until_the_end() -> None:
    """A path dies with no other path: the I/O never completes; the stall runs to the stop."""
    rows = steady(100, T0) + [Row("w", T0 + 100 * MS, T0 + 5100 * MS, UNFINISHED, 0, 1)]
    res = parse(raw(rows, T0, T0 + 5100 * MS), fault_ns=T0 + 100 * MS)
    assert res["unfinished"] == 1 and res["ios"] == 100
    assert res["longest_stall_ms"] == pytest.approx(5000)
    assert res["fault_stall_ms"] == pytest.approx(5000)
    assert res["longest_io"]["finished"] is False
    assert res["failover_ms"] is None and res["resumed_on_other_path_ms"] is None


def test_empty_run() -> None:
    res = parse({"header": {}, "rows": [], "trailer": {}})
    assert res["ios"] == 0 and res["iops"] == 0 and res["longest_stall_ms"] is None
    assert res["latency_ms"]["median"] is None and res["longest_io"] is None
    assert series([], 0, 0) == {"t_ms": [], "iops": [], "latency_max_ms": []}


def test_saved_real_failover() -> None:
    """A real run (tests/integration/test_iscsi.py, silent cut, 1 s I/O timeout), trimmed to
    1 s before and 2 s after the fault: it failed over from A to B once."""
    header, rows, trailer = read_log(DATA / "failover-silent.csv")
    fault = json.loads((DATA / "failover-silent.json").read_text())
    res = Iscsi.parse({"header": header, "rows": rows, "trailer": trailer},
                      fault_ns=fault["fault_ns"])
    a, b = header["portals"]
    assert [(s["from"], s["to"]) for s in res["path_switches"]] == [(a, b)]
    assert res["failed"] == 0 and res["unfinished"] == 0
    assert 900 < res["fault_stall_ms"] < 1200
    # This run also stalled 732 ms with no fault at all (the shared OVS was busy and TCP
    # retransmitted): under the 1 s I/O timeout, so it did not fail over.
    assert res["stall_noise_floor_ms"] == pytest.approx(732.1, abs=0.1)
    assert len(res["paths_down"]) == 1
    assert 950 < res["detect_ms"] < 1100
    assert res["longest_io"]["path"] == b and res["longest_io"]["attempts"] == 2
    assert res["ios_per_path"][a] > 20 and res["ios_per_path"][b] > 100
    assert res["iops"] > 100


def test_task_layout_matches_libiscsi() -> None:
    """Offsets checked with gcc against libiscsi 1.19's scsi-lowlevel.h."""
    assert libiscsi._Task.sense.offset == 48
    assert ctypes.sizeof(libiscsi._Sense) == 16
    assert libiscsi._Sense.bit_pointer.offset == 13
    assert libiscsi._Task.datain_size.offset == 64
    assert libiscsi._Task.datain_data.offset == 72
    assert ctypes.sizeof(libiscsi._ProutBasic) == 24


def test_agent_refuses_bad_arguments(tmp_path, capsys) -> None:
    base = ["run", "--portal", "10.0.0.1", "--target", "iqn.x:y", "--out", str(tmp_path / "o")]
    assert iscsi_agent.main(base + ["--mix", "80/30"]) == 2
    assert iscsi_agent.main(base + ["--depth", "0"]) == 2
    assert "100" in capsys.readouterr().err


def test_workload_check_names_every_problem(tmp_path) -> None:
    from vclab.lab.procs import ProcessTracker
    from vclab.workloads.base import WorkloadError

    wl = Iscsi(object(), ["10.0.0.1", "nope"], "iqn.x:y", 1,
               ProcessTracker(run_id="unit", state_dir=tmp_path), pattern="random-1m",
               mix="50/40", depth=0)
    with pytest.raises(WorkloadError) as e:
        wl.check()
    msg = str(e.value)
    for part in ("random-1m", "50/40", "queue depth", "'nope'", "popen"):
        assert part in msg


def _io_every(times_ms: list[float]) -> list[Row]:
    """One read completing at each time (ms after T0), each 1 ms long."""
    return [Row("r", T0 + int((t - 1) * MS), T0 + int(t * MS), OK, 0, 1) for t in times_ms]


def test_a_fault_is_charged_only_what_exceeds_the_noise_floor() -> None:
    """I/O completing every 3 ms with an 8 ms pause now and then (the emulator's own): the
    noise floor is that pause, measured in the fault-free stretch. A fault that merely finds
    the I/O in such a pause is charged nothing; one that stops it is charged the stall, even
    when the last unharmed completion came just after the fault; a stall later in the
    window is the fault's later stall, kept apart."""
    times, t = [], 0.0
    while t < 6000:
        t += 8.0 if int(t) % 500 < 3 else 3.0  # an 8 ms pause every ~0.5 s
        times.append(t)
    quiet = [(T0, T0 + 1990 * MS)]  # the fault-free stretch before the first fault
    ordinary = {"header": {"io_bytes": 4096}, "rows": _io_every(times), "trailer": {}}
    floor = quiet_stall(ordinary, quiet)
    assert floor == pytest.approx(8.0, abs=0.01)
    # A fault at 2 s whose only trace is an ordinary pause around it: within the floor.
    res = parse(ordinary, T0 + 2000 * MS, floor_ms=floor)
    assert res["fault_stall_ms"] == 0.0 and res["late_stall_ms"] == 0.0
    assert res["stall_noise_floor_ms"] == floor
    # Without a floor the gap at the fault is as measured.
    assert 0 < parse(ordinary, T0 + 2000 * MS)["fault_stall_ms"] <= 8.0
    # A fault at 3 s: one more completion 2 ms after it (already past the failure point), then
    # nothing for 210 ms (TCP's retransmission); 1 s later a 40 ms stall (a failback).
    stalled = [x for x in times if not (3002 < x < 3212 or 4100 < x < 4140)]
    stalled += [3002.0, 3212.0, 4140.0]
    run = {"header": {"io_bytes": 4096}, "rows": _io_every(sorted(set(stalled))), "trailer": {}}
    res = parse(run, T0 + 3000 * MS, floor_ms=floor)
    assert res["fault_stall_ms"] == pytest.approx(210, abs=1)
    # Alone (a bench's or a test's one fault): the longest gap before the fault is the grace.
    assert parse(run, T0 + 3000 * MS)["fault_stall_ms"] == pytest.approx(210, abs=1)
    assert res["late_stall_ms"] == pytest.approx(40, abs=3)
    assert res["late_stall"]["start_ns"] > T0 + 4000 * MS
    # A later pause under the bar (twice the floor) is not a stall.
    assert STALL_FLOOR_FACTOR * floor > 8.0
    assert quiet_stall(run, []) is None
