"""Probe metrics on synthetic records: known gaps, jitter, reordering, duplicates, one-way loss."""

from __future__ import annotations

import random
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vclab.workloads.probe import agent as probe_agent
from vclab.workloads.probe.workload import Probe
from vclab.workloads.probe.metrics import (
    NO_ECHO,
    SETTLE_NS,
    Stream,
    accuracy,
    analyse,
    delay_stats,
    nearest_gap,
    noise_floor,
    overlaps,
    own_noise_floor,
    percentile,
    rtt_samples,
    summarize,
)

MS = 1_000_000
T0 = 1_700_000_000 * 10**9  # a realistic CLOCK_REALTIME origin


def make_stream(n: int = 1000, interval_ms: float = 1.0, lost: set[int] = frozenset(),
                owd_ms: float = 0.1, send_times: list[int] | None = None,
                order: list[int] | None = None, dup: set[int] = frozenset(),
                owd_of=None) -> Stream:
    """n probes sent every interval from T0; `lost` never arrive; arrivals in `order`."""
    interval = int(interval_ms * MS)
    sent_t = send_times or [T0 + i * interval for i in range(n)]
    arrivals = [s for s in (order or range(n)) if s not in lost]
    arrivals += [s for s in sorted(dup)]
    recv_seq, recv_ts, recv_tr = [], [], []
    for s in arrivals:
        delay = owd_of(s) if owd_of else owd_ms
        recv_seq.append(s)
        recv_ts.append(sent_t[s])
        recv_tr.append(sent_t[s] + int(delay * MS))
    return Stream(interval, list(range(n)), sent_t, recv_seq, recv_ts, recv_tr,
                  rx_start_ns=T0 - 10 * MS, rx_end_ns=sent_t[-1] + SETTLE_NS + 50 * MS)


def test_no_loss_means_no_outage_but_an_interval_of_doubt():
    r = analyse(make_stream())
    assert (r.expected, r.received, r.lost, r.duplicates, r.reordered) == (1000, 1000, 0, 0, 0)
    assert r.outage_ms == 0.0 and r.loss_outage_ms == 0.0
    assert r.outage_error_ms == 1.0  # a gap shorter than one interval is invisible
    assert r.gaps == [] and r.outage is None
    assert r.owd.median_ms == pytest.approx(0.1) and r.owd.max_ms == pytest.approx(0.1)


def test_known_gap_both_methods():
    r = analyse(make_stream(lost=set(range(100, 150))), fault_ns=T0 + 99_500_000)
    assert r.lost == 50
    # sends at 99 and 150 got through: 150 - 99 - 1 = 50 ms
    assert r.outage_ms == pytest.approx(50.0)
    assert r.outage_error_ms == pytest.approx(1.0)
    assert r.loss_outage_ms == pytest.approx(50.0)
    assert r.loss_outage_error_ms == pytest.approx(1.0)
    gap = r.outage
    assert (gap.first_lost, gap.last_lost, gap.lost) == (100, 149, 50)
    assert not gap.open_start and not gap.open_end
    # edges at the midpoints 99.5 ms and 149.5 ms; the fault was applied at 99.5 ms
    assert gap.start_rel_ms == pytest.approx(0.0)
    assert gap.end_rel_ms == pytest.approx(50.0)
    assert r.fault_gap == gap


def test_single_lost_probe_is_one_interval():
    r = analyse(make_stream(lost={500}))
    assert r.outage_ms == pytest.approx(1.0) and r.loss_outage_ms == pytest.approx(1.0)


def test_sender_stall_without_loss_is_not_an_outage():
    # The sender was descheduled for 6 ms after probe 300: the naive receive gap sees it.
    times = [T0 + i * MS + (6 * MS if i > 300 else 0) for i in range(1000)]
    r = analyse(make_stream(send_times=times))
    assert r.outage_ms == 0.0 and r.lost == 0
    assert r.recv_gap_ms == pytest.approx(6.0)
    assert r.send_gap_ms == pytest.approx(6.0)


def test_a_sender_stalled_through_the_whole_fault_widens_the_bar_instead_of_a_gap():
    """Seen once at load (test_kernel_black_hole_of_known_length[20]: 0 ms for 20 ms): the
    sender sent nothing from 1 ms before a 20 ms fault to 2 ms after it, then caught up; no
    probe was lost, so no gap, and only its silence says the fault could not be seen."""
    sends = [T0 + i * MS for i in range(500)] + [T0 + 522 * MS + i * 10_000 for i in range(23)]
    sends += [T0 + (523 + i) * MS for i in range(477)]
    fault_ns = T0 + 500 * MS
    r = analyse(make_stream(send_times=sends), fault_ns=fault_ns)
    assert r.fault_gap is None and r.lost == 0
    assert r.fault_send_gap_ms == pytest.approx(23.0 - 1.0)  # 499 -> 500 sent 23 ms apart
    assert analyse(make_stream(), fault_ns=fault_ns).fault_send_gap_ms == 0.0


def test_receive_time_jitter_does_not_count():
    rng = random.Random(1)
    r = analyse(make_stream(owd_of=lambda s: 0.05 + rng.random() * 4))
    assert r.outage_ms == 0.0
    assert r.recv_gap_ms > 2  # what a naive probe would have reported
    assert r.owd.max_ms < 4.1 and r.owd.min_ms >= 0.05


def test_sender_stall_inside_a_gap_uses_real_send_times():
    # Probes 100..109 lost; the sender stalled 5 ms before sending 105.
    times = [T0 + i * MS + (5 * MS if i >= 105 else 0) for i in range(1000)]
    r = analyse(make_stream(send_times=times, lost=set(range(100, 110))))
    # edges: mid(99, 100) = 99.5 ms, mid(109, 110) = 114.5 ms
    assert r.outage_ms == pytest.approx(15.0)
    assert r.loss_outage_ms == pytest.approx(10.0)  # the loss method cannot see the stall


def test_irregular_send_brackets_widen_the_error_bar():
    times = [T0 + i * MS for i in range(1000)]
    times[100] += int(0.8 * MS)  # first lost probe sent late
    r = analyse(make_stream(send_times=times, lost={100, 101}))
    assert r.outage_error_ms == pytest.approx((1.8 + 1.0) / 2)


def test_reordering_is_counted_not_lost():
    order = list(range(1000))
    order[10], order[11] = order[11], order[10]
    order[500], order[503] = order[503], order[500]
    r = analyse(make_stream(order=order))
    assert r.lost == 0 and r.outage_ms == 0.0
    assert r.reordered == 4  # 10 arrives after 11; 501, 502 and 500 after 503


def test_duplicates_are_counted_once():
    r = analyse(make_stream(dup={5, 6, 700}))
    assert r.duplicates == 3 and r.received == 1000 and r.lost == 0


def test_multiple_gaps_largest_threshold_and_nearest():
    lost = set(range(100, 103)) | set(range(400, 440)) | set(range(800, 810))
    fault = T0 + 795 * MS
    r = analyse(make_stream(lost=lost), fault_ns=fault, threshold_ms=5.0)
    assert r.outage_ms == pytest.approx(40.0)
    assert [g.lost for g in r.gaps] == [40, 10]  # the 3-probe gap is under the threshold
    assert r.fault_gap.first_lost == 800
    assert r.fault_gap.start_rel_ms == pytest.approx(4.5)
    assert r.lost == 53 and r.total_loss_outage_ms == pytest.approx(53.0)


def test_nearest_gap_prefers_the_gap_spanning_the_fault():
    r = analyse(make_stream(lost=set(range(100, 110)) | set(range(112, 114))))
    assert nearest_gap(r.gaps, T0 + 105 * MS).first_lost == 100
    assert nearest_gap(r.gaps, T0 + 200 * MS).first_lost == 112
    assert nearest_gap([], T0) is None


def test_loss_at_start_and_end_is_open():
    r = analyse(make_stream(lost=set(range(0, 20)) | set(range(990, 1000))))
    first, last = r.gaps
    assert first.open_start and not first.open_end and first.lost == 20
    assert last.open_end and not last.open_start and last.lost == 10
    # open edges sit at the lost probes' own send times: a lower bound
    assert first.outage_ms == pytest.approx(19.5)
    assert last.outage_ms == pytest.approx(9.5)


def test_nothing_received():
    r = analyse(make_stream(n=100, lost=set(range(100))))
    assert r.received == 0 and r.lost == 100
    assert r.outage.open_start and r.outage.open_end
    assert r.outage_ms == pytest.approx(99.0)
    assert r.owd.count == 0 and r.owd.median_ms is None


def test_nothing_expected():
    r = analyse(Stream(MS))
    assert r.expected == 0 and r.outage_ms == 0.0 and r.gaps == []


def test_probes_outside_the_receive_window_are_not_lost():
    s = make_stream(lost=set(range(0, 30)) | set(range(960, 1000)))
    s.rx_start_ns = T0 + 30 * MS  # the receiver only listened from probe 30 on
    s.rx_end_ns = T0 + 959 * MS + SETTLE_NS  # and stopped right after 959 could arrive
    r = analyse(s)
    assert r.lost == 0 and r.expected == 930


def test_missing_sender_log_falls_back_to_the_interval():
    s = make_stream(lost=set(range(100, 150)))
    s.sent_seq, s.sent_t = [], []
    r = analyse(s)
    assert r.lost == 50 and r.expected == 1000
    assert r.outage_ms == pytest.approx(50.0) and r.outage_error_ms == pytest.approx(1.0)


def test_noise_floor_window_excludes_the_fault():
    s = make_stream(n=2000, lost={300} | set(range(1500, 1700)))
    floor = noise_floor(s, end_ns=T0 + 1400 * MS)
    assert floor.noise_floor_ms == pytest.approx(1.0) and floor.lost == 1
    assert floor.window_ms == pytest.approx(1400.0)
    assert noise_floor(s).noise_floor_ms == pytest.approx(200.0)


@settings(max_examples=300, deadline=None)
@given(
    interval_ms=st.sampled_from([0.5, 1.0, 2.0, 5.0]),
    start_ms=st.floats(50, 150),
    length_ms=st.floats(0.0, 400),
    jitter_ms=st.floats(0, 3),
    seed=st.integers(0, 2**16),
)
def test_black_hole_is_measured_within_the_error_bar(interval_ms, start_ms, length_ms, jitter_ms, seed):
    """Whatever the phase and sender jitter, the true black-hole lies within outage +- error."""
    rng = random.Random(seed)
    interval = int(interval_ms * MS)
    # Sends on schedule, each late by up to jitter_ms (never reordered on the sender).
    times, t = [], T0
    for i in range(int(800 / interval_ms)):
        t = max(t + 1, T0 + i * interval + int(rng.random() * jitter_ms * MS))
        times.append(t)
    hole = (T0 + int(start_ms * MS), T0 + int((start_ms + length_ms) * MS))
    lost = {i for i, t in enumerate(times) if hole[0] <= t < hole[1]}
    r = analyse(make_stream(n=len(times), interval_ms=interval_ms, send_times=times, lost=lost),
                fault_ns=hole[0])
    if not lost:  # shorter than the spacing around it: invisible
        assert length_ms <= interval_ms + jitter_ms + 1e-6
        return
    assert abs(r.outage_ms - length_ms) <= r.outage_error_ms + 1e-6
    assert r.outage_error_ms <= interval_ms + jitter_ms + 1e-6
    assert abs(r.loss_outage_ms - length_ms) <= interval_ms + jitter_ms * len(lost) + 1e-6
    assert abs(r.fault_gap.start_rel_ms) <= r.outage_error_ms + 1e-6


def test_percentile_and_delay_stats():
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([7], 99) == 7
    d = delay_stats([1 * MS, 2 * MS, 3 * MS, 100 * MS])
    assert (d.count, d.min_ms, d.median_ms, d.max_ms) == (4, 1.0, 2.5, 100.0)


def test_rtt_from_echoes_needs_no_common_clock():
    # A sent 0..2 at 0, 1, 2 ms. B (clock 1 s off) got them 0.1 ms later and echoed each in
    # its next probe after holding it 0.3 ms; A got those back 0.1 ms later.
    sent_seq, sent_t = [0, 1, 2], [T0, T0 + MS, T0 + 2 * MS]
    hold = int(0.3 * MS)
    back = [t + int(0.5 * MS) for t in sent_t]  # 0.1 out + 0.3 hold + 0.1 back
    rtt = rtt_samples(sent_seq, sent_t, back + [back[-1] + MS], [0, 1, 2, 2],
                      [hold, hold, hold, hold + MS])
    assert rtt == [int(0.2 * MS)] * 3  # the repeated echo of 2 is not used twice
    assert rtt_samples(sent_seq, sent_t, [T0], [NO_ECHO], [0]) == []


def test_summarize_one_way_loss_and_noise_floor_before_fault():
    ab = make_stream(n=3000, lost=set(range(2000, 2100)) | {500})
    ba = make_stream(n=3000)
    fault = T0 + 2000 * MS
    out = summarize(ab, ba, [int(0.2 * MS)] * 10, fault_ns=fault)
    assert out["outage_ms"] == pytest.approx(100.0)
    assert out["loss_outage_ms"] == pytest.approx(100.0)
    assert out["outage_start_ms"] == pytest.approx(-0.5)
    assert out["outage_end_ms"] == pytest.approx(99.5)
    assert out["lost"] == 101 and out["b_to_a"]["lost"] == 0
    assert out["a_to_b"]["outage_ms"] == pytest.approx(100.0) and out["b_to_a"]["outage_ms"] == 0
    assert out["noise_floor_ms"] == pytest.approx(1.0)  # the lone lost probe 500, before the fault
    assert out["noise_floor_window_ms"] == pytest.approx(1990.0)
    assert out["rtt"]["median_ms"] == pytest.approx(0.2)
    assert summarize(ab, ba, noise_floor_ms=0.25)["noise_floor_ms"] == 0.25


def _agent_logs(lost_ab: set[int], n: int = 500) -> tuple[probe_agent.AgentLog, probe_agent.AgentLog]:
    """Two agent logs as the agents would write them: A and B send n probes each at 1 ms."""
    logs = {}
    for me in ("a", "b"):
        log = probe_agent.AgentLog(MS, T0 - 5 * MS, T0 + n * MS + SETTLE_NS + 50 * MS)
        log.sent_seq.extend(range(n))
        log.sent_t.extend(T0 + i * MS + (300_000 if me == "b" else 0) for i in range(n))
        logs[me] = log
    for sender, receiver in (("a", "b"), ("b", "a")):
        for i in range(n):
            if sender == "a" and i in lost_ab:
                continue
            t = logs[sender].sent_t[i]
            rec = logs[receiver]
            rec.recv_seq.append(i)
            rec.recv_t_send.append(t)
            rec.recv_t_recv.append(t + 100_000)
            # the receiver echoes the newest seq it got from its peer (hold measured by it)
            rec.recv_echo_seq.append(NO_ECHO if i == 0 else i - 1)
            rec.recv_echo_hold.append(0 if i == 0 else 500_000 if sender == "b" else 100_000)
    return logs["a"], logs["b"]


def test_agent_log_round_trip(tmp_path):
    a, _ = _agent_logs(set())
    a.info = {"sched": "fifo:10"}
    probe_agent.write_log(a, tmp_path / "a.probe")
    back = probe_agent.read_log(tmp_path / "a.probe")
    assert back == a
    assert not (tmp_path / "a.probe.tmp").exists()
    with pytest.raises(ValueError):
        (tmp_path / "junk").write_bytes(b"nope")
        probe_agent.read_log(tmp_path / "junk")


def test_agent_log_is_compact_for_a_minute_at_1khz(tmp_path):
    log = probe_agent.AgentLog(MS, T0, T0 + 60 * 10**9)
    n = 60_000
    log.sent_seq.extend(range(n))
    log.sent_t.extend(range(T0, T0 + n))
    for col, code in zip(log.columns()[2:], "IqqIq"):
        col.extend(array(code, range(n)))
    probe_agent.write_log(log, tmp_path / "big.probe")
    assert (tmp_path / "big.probe").stat().st_size < 3_000_000
    assert len(probe_agent.read_log(tmp_path / "big.probe").recv_t_recv) == n


def test_probe_parse_on_agent_logs():
    a, b = _agent_logs(lost_ab=set(range(200, 230)))
    out = Probe.parse({"interval_ns": MS, "a": a, "b": b, "errors": {}}, fault_ns=T0 + 200 * MS)
    assert out["outage_ms"] == pytest.approx(30.0)
    assert out["a_to_b"]["lost"] == 30 and out["b_to_a"]["lost"] == 0
    assert out["a_to_b"]["owd"]["median_ms"] == pytest.approx(0.1)
    assert out["rtt"]["count"] > 0
    assert out["noise_floor_ms"] == 0.0


def test_probe_parse_with_a_missing_log():
    a, b = _agent_logs(lost_ab=set(range(200, 230)))
    out = Probe.parse({"interval_ns": MS, "a": None, "b": b, "errors": {"a": "gone"}})
    # a's sends are inferred from what b received; b->a cannot be judged without a's log
    assert out["a_to_b"]["lost"] == 30 and out["a_to_b"]["outage_ms"] == pytest.approx(30.0)
    assert out["b_to_a"]["received"] == 0
    assert out["errors"] == {"a": "gone"}


def test_check_rejects_bad_endpoints():
    from vclab.lab.procs import ProcessTracker
    from vclab.workloads.base import WorkloadError

    class FakeNode:
        name = "h1"

        def popen(self, args, **kw):  # pragma: no cover - never started
            raise AssertionError

    p = Probe((FakeNode(), "10.0.0.1"), (object(), "nope"), ProcessTracker(), interval_ms=0)
    with pytest.raises(WorkloadError) as e:
        p.check()
    msg = str(e.value)
    assert "interval_ms" in msg and "no popen" in msg and "'nope'" in msg
    Probe((FakeNode(), "10.0.0.1"), (FakeNode(), "10.0.0.2"), ProcessTracker()).check()


def test_accuracy_adds_every_error_bar():
    ok = accuracy(201.0, 1.0, 200.4, 0.2, slack_ms=3.0)
    assert ok["error_ms"] == pytest.approx(0.6) and ok["tolerance_ms"] == pytest.approx(4.2)
    assert ok["within_tolerance"]
    assert not accuracy(205.0, 1.0, 200.4, 0.2, slack_ms=3.0)["within_tolerance"]
    assert not accuracy(195.0, 1.0, 200.4, 0.2, slack_ms=3.0)["within_tolerance"]
    assert accuracy(50.0, 1.0, 51.0, 0.0)["within_tolerance"]  # edge: exactly the bar


def test_noise_floor_reports_delay_spikes_it_does_not_count():
    # OVS starved of CPU held probe 400 for 30 ms: late, not lost.
    r = noise_floor(make_stream(owd_of=lambda s: 30.1 if s == 400 else 0.1))
    assert r.noise_floor_ms == 0.0
    assert r.delay_spike_ms == pytest.approx(30.0)


def test_overlaps():
    assert overlaps((0, 10), (10, 20))
    assert not overlaps((0, 10), (11, 20))
    assert overlaps((0, 10), (15, 20), margin_ns=5)
    assert overlaps((5, 6), (0, 100)) and overlaps((0, 100), (5, 6))


def test_own_noise_floor_excuses_gaps_the_switch_caused():
    lost = set(range(300, 303)) | set(range(700, 800)) | set(range(1500, 1600))
    out = summarize(make_stream(n=2000, lost=lost), make_stream(n=2000),
                    fault_ns=T0 + 1500 * MS)
    assert out["noise_floor_ms"] == pytest.approx(100.0)  # raw: the 700..799 gap
    stall = (T0 + 690 * MS, T0 + 805 * MS)  # the witness saw the switch stop answering
    assert own_noise_floor(out, [stall]) == pytest.approx(3.0)
    assert own_noise_floor(out, []) == pytest.approx(100.0)
    # the fault's own gap never counts, stall or not
    assert own_noise_floor(out, [stall, (T0 + 290 * MS, T0 + 310 * MS)]) == 0.0


def test_summarize_reports_the_gap_nearest_the_fault_beside_the_largest():
    # an unrelated 300 ms break long before the fault, then the fault's 40 ms
    ab = make_stream(n=3000, lost=set(range(200, 500)) | set(range(2000, 2040)))
    out = summarize(ab, make_stream(n=3000), fault_ns=T0 + 2000 * MS)
    assert out["outage_ms"] == pytest.approx(300.0)
    assert out["fault_outage_ms"] == pytest.approx(40.0)
    assert out["fault_loss_outage_ms"] == pytest.approx(40.0)
    assert out["fault_outage_error_ms"] == pytest.approx(1.0)
    assert out["fault_outage_start_ms"] == pytest.approx(-0.5)
    assert out["fault_outage_end_ms"] == pytest.approx(39.5)
    none = summarize(ab, make_stream(n=3000))
    assert none["fault_outage_ms"] is None and none["fault_outage_start_ms"] is None
    clean = summarize(make_stream(n=3000), make_stream(n=3000), fault_ns=T0 + 2000 * MS)
    assert clean["fault_outage_ms"] == 0.0 and clean["fault_outage_start_ms"] is None


def test_two_agents_on_loopback(tmp_path):
    """The agent itself, unprivileged: two of them on 127.0.0.1 for half a second."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    from vclab.lab.procs import ProcessTracker

    ports = []
    for _ in range(2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    tracker = ProcessTracker(run_id="vcp-unit", state_dir=tmp_path / "state")
    procs = []
    try:
        for me, peer in ((0, 1), (1, 0)):
            proc = subprocess.Popen(
                [sys.executable, "-m", "vclab.workloads.probe.agent", "--bind", "127.0.0.1",
                 "--peer", "127.0.0.1", "--port", str(ports[me]), "--peer-port", str(ports[peer]),
                 "--session", "7", "--out", str(tmp_path / f"{me}.probe")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            tracker.track(proc.pid, f"agent{me}")
            procs.append(proc)
        for proc in procs:
            assert proc.stdout.readline().split()[0] == b"ready"
        time.sleep(0.5)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=5) == 0, proc.stderr.read()
    finally:
        tracker.end_all()
    a, b = (probe_agent.read_log(tmp_path / f"{i}.probe") for i in (0, 1))
    assert len(a.sent_seq) > 200 and a.info["size"] == probe_agent.DEFAULT_SIZE
    out = Probe.parse({"interval_ns": MS, "a": a, "b": b, "errors": {}})
    assert out["a_to_b"]["expected"] > 200 and out["b_to_a"]["expected"] > 200
    assert out["lost"] <= 2  # loopback: nothing lost unless the host is starved
    assert out["a_to_b"]["owd"]["median_ms"] < 5 and out["rtt"]["count"] > 100


@pytest.mark.parametrize("step_ms", [5.0, -3.0])
def test_a_step_of_the_wall_clock_inside_a_gap_is_not_outage(step_ms):
    """A CI runner's wall clock was stepped +1..5 ms per second (fault_ms 1005 for a 1000 ms
    hold, 1000 probes lost): the outage is a duration, taken on the sender's monotonic clock;
    the step is reported, and the edges stay where the wall clock put them."""
    n, hole = 1000, range(300, 500)  # 200 probes lost, 200 ms of outage
    mono = [i * MS for i in range(n)]
    step = int(step_ms * MS)
    wall = [T0 + m + (step if i >= 400 else 0) for i, m in enumerate(mono)]
    s = make_stream(n=n, send_times=wall, lost=set(hole))
    stepped = analyse(s, fault_ns=T0 + 299 * MS + MS // 2)
    assert stepped.outage_ms == pytest.approx(200 + step_ms)  # wall clock only: off by the step
    s.sent_mono = mono
    r = analyse(s, fault_ns=T0 + 299 * MS + MS // 2)
    assert (r.outage_ms, r.outage_error_ms, r.loss_outage_ms) == (200.0, 1.0, 200.0)
    assert r.clock_step_ms == pytest.approx(abs(step_ms))
    assert r.fault_gap.start_rel_ms == pytest.approx(0.0)
    assert r.fault_gap.end_ns == r.fault_gap.start_ns + 200 * MS
    assert analyse(make_stream()).clock_step_ms == 0.0  # no monotonic stamps: nothing claimed


def test_agent_log_round_trips_the_monotonic_stamps(tmp_path):
    log = probe_agent.AgentLog(MS, 1, 2)
    log.sent_seq.extend([0, 1]); log.sent_t.extend([T0, T0 + MS]); log.sent_mono.extend([5, 6])
    probe_agent.write_log(log, tmp_path / "a.probe")
    back = probe_agent.read_log(tmp_path / "a.probe")
    assert list(back.sent_mono) == [5, 6] and list(back.sent_t) == [T0, T0 + MS]
    assert "columns" not in back.info
