"""Outages charged honestly (issue 14, part 2): the gap at the fault is the fault's outage; later
gaps count as a separate late disruption only above the run's own fault-free floor, and the
floor is measured only where nothing is scheduled."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vclab.experiments.spec import Workload as WorkloadEntry
from vclab.workloads.probe.adapter import ProbeAdapter
from vclab.results.fidelity import clock_steps_text
from vclab.results.model import WALL_CLOCK_STEP, FaultRecord
from vclab.workloads.probe.metrics import (
    SETTLE_NS,
    Stream,
    analyse,
    fault_outage,
    gap_at,
    quiet_noise_floor,
)
from vclab.workloads.adapter import quiet_windows

MS = 1_000_000
T0 = 1_700_000_000 * 10**9


def lost_runs(*runs: tuple[float, int]) -> set[int]:
    """{seq} for runs of `count` lost 1 ms probes starting at `at_s`."""
    return {int(at * 1000) + k for at, count in runs for k in range(count)}


def stream(seconds: float, lost: set[int]) -> Stream:
    n = int(seconds * 1000)
    sent = [T0 + i * MS for i in range(n)]
    got = [i for i in range(n) if i not in lost]
    return Stream(MS, list(range(n)), sent, got, [sent[i] for i in got],
                  [sent[i] + MS // 10 for i in got], rx_start_ns=T0 - 10 * MS,
                  rx_end_ns=sent[-1] + SETTLE_NS + 50 * MS)


def test_the_gap_spanning_the_fault_is_its_outage_later_ones_are_apart():
    s = stream(10, lost_runs((2.0, 14), (4.0, 30)))
    r = fault_outage(s, T0 + 2000 * MS, T0 + 1990 * MS, T0 + 9000 * MS, floor_ms=3.0)
    assert r.outage_ms == pytest.approx(14.0) and r.loss_outage_ms == pytest.approx(14.0)
    assert r.late_disruption_ms == pytest.approx(30.0) and r.late_loss_outage_ms == pytest.approx(30.0)
    assert r.lost == 44


def test_a_later_gap_inside_the_noise_floor_is_not_charged():
    s = stream(10, lost_runs((4.0, 3)))  # a repair costs nothing; noise 2 s later
    r = fault_outage(s, T0 + 2000 * MS, T0 + 1990 * MS, T0 + 9000 * MS, floor_ms=5.0)
    assert (r.outage_ms, r.late_disruption_ms) == (0.0, 0.0)
    assert r.lost == 3  # still counted as lost probes in the window


def test_spanning_allows_the_fault_uncertainty_and_the_gap_error_bar():
    gaps = analyse(stream(5, lost_runs((2.005, 10))), T0 + 2000 * MS).gaps
    assert gap_at(gaps, T0 + 2000 * MS) is None  # starts 5 ms after the fault: not the fault's
    assert gap_at(gaps, T0 + 2000 * MS, uncertainty_ns=50 * MS) is None  # nor with a slow command
    assert gap_at(gaps, T0 + 2006 * MS).lost == 10  # began within the error bar of the fault
    # the command took 20 ms and returned after the gap ended: the fault may have caused it
    assert gap_at(gaps, T0 + 2030 * MS, uncertainty_ns=20 * MS).lost == 10
    assert gap_at(gaps, T0 + 2030 * MS) is None


def test_quiet_windows_skip_every_scheduled_event():
    w = quiet_windows(0, 30_000, [6000, 5000, 14_000], margin_ns=10, settle_ns=3000)
    assert w == [(0, 4990), (9000, 13_990), (17_000, 30_000)]
    assert quiet_windows(0, 30_000, [5000], 10, settle_ns=30_000) == [(0, 4990)]
    assert quiet_windows(0, 30_000, [0], 10, settle_ns=30_000) == []
    assert quiet_noise_floor(stream(1, set()), []) is None


def probe_raw(seconds: float, lost: set[int]) -> dict:
    s = stream(seconds, lost)

    def log(me: Stream, peer: Stream) -> SimpleNamespace:
        return SimpleNamespace(sent_seq=me.sent_seq, sent_t=me.sent_t, sent_mono=me.sent_mono,
                               recv_seq=peer.recv_seq,
                               recv_t_send=peer.recv_t_send, recv_t_recv=peer.recv_t_recv,
                               rx_start_ns=peer.rx_start_ns, rx_end_ns=peer.rx_end_ns,
                               recv_echo_seq=[], recv_echo_hold=[])

    clean = stream(seconds, set())
    return {"a": log(s, clean), "b": log(clean, s), "interval_ns": MS}


def fault(name: str, at_s: float) -> FaultRecord:
    return FaultRecord(name, "link", "esx1.vmnic0", name.split()[1].split("@")[0], at_s * 1e3,
                       T0 + int(at_s * 1e3) * MS, at_s * 1e3, detail={"uncertainty_ms": 0.5})


def test_probe_adapter_books_noise_apart_from_the_fault():
    """The default experiment's shape: a vMotion starts at 5 s (its congestion must not enter the
    floor), the uplink goes down at 6 s (14 ms outage) and up at 11 s (0 ms on a quiet bench;
    4 ms of noise at 12 s is within the floor; a 40 ms failback at 15 s is its late disruption)."""
    entry = WorkloadEntry.model_validate({"probe": {"from": "esx1", "to": "esx2", "network": "vmotion"}})
    a = ProbeAdapter(entry, 0)
    migration = SimpleNamespace(start_at_ms=5000.0)
    a.connect(None, [(a, None), (migration, None)])
    raw = probe_raw(20, lost_runs((2.0, 5), (5.3, 15), (6.0, 14), (12.0, 4), (15.0, 40)))
    faults = [fault("esx1.vmnic0 down@6s", 6), fault("esx1.vmnic0 up@11s", 11)]
    out = a.outcome(raw, T0, T0 + 20_000 * MS, faults)
    got = {(m.name, m.fault): m.value for m in out.metrics}
    assert got[("noise_floor_ms", "")] == pytest.approx(5.0)  # the 2 s gap, not the vMotion's 15
    assert got[("outage_ms", faults[0].name)] == pytest.approx(14.0)
    assert got[("late_disruption_ms", faults[0].name)] == 0.0
    assert got[("outage_ms", faults[1].name)] == 0.0
    assert got[("late_disruption_ms", faults[1].name)] == pytest.approx(40.0)  # above the floor
    assert got[("loss_outage_ms", faults[1].name)] == 0.0


def test_a_stepped_wall_clock_is_an_event_and_not_outage():
    """A runner's wall clock stepped +4 ms at 7 s, in the middle of the 14 ms uplink outage: the
    outage is still 14 ms (monotonic lengths), and the step is booked as an event at 7 s."""
    entry = WorkloadEntry.model_validate({"probe": {"from": "esx1", "to": "esx2", "network": "vmotion"}})
    a = ProbeAdapter(entry, 0)
    a.connect(None, [(a, None)])
    raw = probe_raw(12, lost_runs((6.995, 14)))
    for side in ("a", "b"):
        log = raw[side]
        log.sent_mono = [t - T0 for t in log.sent_t]
        log.sent_t = [t + (4 * MS if t >= T0 + 7000 * MS else 0) for t in log.sent_t]
        peer = raw["b" if side == "a" else "a"]
        peer.recv_t_send = [t + (4 * MS if t >= T0 + 7000 * MS else 0) for t in peer.recv_t_send]
    out = a.outcome(raw, T0, T0 + 12_000 * MS, [fault("esx1.vmnic0 down@7s", 6.995)])
    got = {(m.name, m.fault): m.value for m in out.metrics}
    assert got[("outage_ms", "esx1.vmnic0 down@7s")] == pytest.approx(14.0)
    steps = [e for e in out.events if e.kind == WALL_CLOCK_STEP]
    assert len(steps) == 2  # one per direction
    assert all(e.detail["step_ms"] == 4.0 and 7000 <= e.t_ms <= 7010 for e in steps)
    assert clock_steps_text({"sdn 1": [4.0, 4.0], "rstp 1": []}).startswith(
        "The host's wall clock was stepped during 1 repetition (sdn 1; up to 4 ms")
    assert clock_steps_text({"sdn 1": []}) is None


def test_the_queue_a_fault_found_is_booked_beside_its_outage():
    """Probes waited 12 ms in a queue on esx1 -> esx2 before the uplink died (0.1 ms the other
    way): delay_before_ms says 12 beside the 14 ms outage, the longer direction's queue. A
    fault that finds a quiet lab books the lab's 0.1 ms."""
    entry = WorkloadEntry.model_validate({"probe": {"from": "esx1", "to": "esx2", "network": "vmotion"}})
    a = ProbeAdapter(entry, 0)
    a.connect(None, [(a, None)])
    raw = probe_raw(20, lost_runs((6.0, 14)))
    b = raw["b"]  # what esx2 received from esx1
    b.recv_t_recv = [r + (12 * MS - MS // 10 if 5_900 * MS <= t - T0 < 6_000 * MS else 0)
                     for t, r in zip(b.recv_t_send, b.recv_t_recv)]
    faults = [fault("esx1.vmnic0 down@6s", 6), fault("esx1.vmnic0 up@11s", 11)]
    out = a.outcome(raw, T0, T0 + 20_000 * MS, faults)
    got = {(m.name, m.fault): m.value for m in out.metrics}
    assert got[("outage_ms", faults[0].name)] == pytest.approx(14.0)
    assert got[("delay_before_ms", faults[0].name)] == pytest.approx(12.0)
    assert got[("delay_before_ms", faults[1].name)] == pytest.approx(0.1)


def test_a_vms_switch_over_is_its_vmotions_and_not_the_faults():
    """web1 -> web2 while web1 migrates: the uplink dies at 6 s (14 ms outage) and the vMotion
    pauses web1 from 7.5 s until its announcement 250 ms later. That gap is the vMotion's
    (switch-over, VM outage), not a later disruption of the uplink failure nor its lost probes;
    a probe between two hosts that stay put still books a 40 ms gap at 8 s as the fault's."""
    class Moving:  # a finished migration as the probe sees it (_Migration.off_network)
        def off_network(self):
            return [("web1", T0 + 7500 * MS, T0 + 7750 * MS)]

    faults = [fault("esx1.vmnic0 down@6s", 6), fault("esx1.vmnic0 up@11s", 11)]
    got = {}
    for src, dst in (("web1", "web2"), ("esx1", "esx2")):
        entry = WorkloadEntry.model_validate({"probe": {"from": src, "to": dst, "network": "vm-web"}})
        a = ProbeAdapter(entry, 0)
        a.connect(a, [(a, a), (SimpleNamespace(start_at_ms=5000.0), Moving())])
        raw = probe_raw(20, lost_runs((6.0, 14), (7.5, 250) if src == "web1" else (8.0, 40)))
        out = a.outcome(raw, T0, T0 + 20_000 * MS, faults)
        got[src] = {(m.name, m.fault): m.value for m in out.metrics if m.fault == faults[0].name}
    moved = got["web1"]
    assert moved[("outage_ms", faults[0].name)] == pytest.approx(14.0)
    assert moved[("late_disruption_ms", faults[0].name)] == 0.0
    assert moved[("lost", faults[0].name)] == 14.0
    stayed = got["esx1"]
    assert stayed[("late_disruption_ms", faults[0].name)] == pytest.approx(40.0)
    assert stayed[("lost", faults[0].name)] == 54.0
