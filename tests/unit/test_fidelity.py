"""Time-scaled emulation, capacity decisions and the storage-stall prediction (pure)."""

import time
from pathlib import Path

import pytest

from vclab.experiments.scale import (
    KEPT_UP, LinkFidelity, capacity_problem, cable_rates, choose_scale, fastest_rate, parse_scale,
    peak_rate_bps, scale_cluster, scale_experiment, scale_text, to_nominal, worst_loaded)
from vclab.experiments.spec import Experiment
from vclab.topology.loader import load_cluster
from vclab.workloads.iscsi.stall_model import (
    linux_rto_ms, predict_stall, retransmission_times_ms, tcp_recovery_ms)
from vclab.workloads.vmotion.model import VmotionSpec, simulate

ROOT = Path(__file__).resolve().parents[2]


def test_choose_scale_leaves_headroom():
    assert choose_scale(1e9, 8e9) == 1  # 1 Gbit/s within an eighth of 8
    assert choose_scale(1e9, 7.4e9) == 2
    assert choose_scale(10e9, 7.4e9) == 20  # 0.5 Gbit/s <= 0.925; 1/10 (1 Gbit/s) is not
    assert choose_scale(10e9, 3.4e9) == 25
    assert choose_scale(10e9, 1.5e9, headroom=0.5) == 20
    assert choose_scale(0, 1e9) == 1
    with pytest.raises(ValueError):
        choose_scale(1e9, 0)


def test_parse_scale():
    assert parse_scale("auto") is None
    assert parse_scale("10") == parse_scale("1/10") == 10
    for bad in ("0", "x", "1/0", "2.5"):
        with pytest.raises(ValueError, match="--scale"):
            parse_scale(bad)
    assert scale_text(1) == "1" and scale_text(20) == "1/20"


def test_scaled_cluster_keeps_the_models_times():
    cluster = load_cluster(ROOT / "topologies/default-10g.yaml")
    assert fastest_rate(cluster) == 10e9
    small = scale_cluster(cluster, 20)
    assert set(cable_rates(small)) == {0.5e9}
    vm, vm20 = cluster.vms["web1"], small.vms["web1"]
    assert vm20.memory == round(vm.memory / 20) and vm20.disk == round(vm.disk / 20)
    assert vm20.dirty_rate == pytest.approx(vm.dirty_rate / 20)

    def model(c):
        v = c.vms["web1"]
        return simulate(VmotionSpec(memory_bytes=v.memory, dirty_rate_bps=v.dirty_rate,
                                    link_rate_bps=fastest_rate(c), disk_bytes=v.disk))

    full, scaled = model(cluster), model(small)
    assert scaled.total_s == pytest.approx(full.total_s, rel=1e-3)
    assert scaled.downtime_s == pytest.approx(full.downtime_s, rel=1e-2)
    assert scale_cluster(cluster, 1) is cluster


def test_scaled_experiment_divides_iperf_rates_only():
    e = Experiment.model_validate({
        "experiment": "x", "topology": "t.yaml", "mechanisms": ["rstp"],
        "workloads": [{"iperf3": {"from": "esx1", "to": "esx2", "network": "vmotion", "rate": "200Mbit"}},
                      {"iperf3": {"from": "esx1", "to": "esx2", "network": "vmotion"}},
                      {"probe": {"from": "esx1", "to": "esx2", "network": "vmotion"}}]})
    s = scale_experiment(e, 10)
    assert s.workloads[0].iperf3.rate == pytest.approx(20e6)
    assert s.workloads[1].iperf3.rate == "max"
    assert s.workloads[2] == e.workloads[2]
    assert to_nominal("iperf3", "throughput_bps", 20e6, 10) == 200e6
    assert to_nominal("iperf3", "outage_ms", 12.0, 10) == 12.0
    assert to_nominal("iscsi", "throughput_bps", 20e6, 10) == 20e6  # bound by round trips


def test_peak_rate_from_counters():
    # 0.1 s samples: idle, then 1 s at 100 MB/s, then idle
    samples, b = [], 0
    for i in range(40):
        t = i * 0.1
        if 1.0 <= t < 2.0:
            b += 10_000_000
        samples.append((t, b))
    assert peak_rate_bps(samples, 0.5) == pytest.approx(800e6, rel=0.01)
    assert peak_rate_bps(samples[:3], 0.5) == 0.0


def test_link_judgement():
    idle = LinkFidelity("esx1.vmnic1", "e1", 1e9, 0.05e9)
    slow = LinkFidelity("esx1.vmnic0", "e0", 1e9, 0.7e9)
    full = LinkFidelity("esx2.vmnic0", "e2", 1e9, 0.95e9)
    assert idle.kept_up and not idle.loaded
    assert not slow.kept_up and full.kept_up and full.ratio >= KEPT_UP
    assert worst_loaded([idle, slow, full]) is slow
    assert worst_loaded([idle]) is None


def test_capacity_problem_in_words():
    assert capacity_problem(10e9, 8e9, 10) == ""
    assert "1.00 Gbit/s" in capacity_problem(10e9, 4e9, 10)


def test_rto_and_retransmissions():
    assert linux_rto_ms(0.5, 0.1) == pytest.approx(200.5)
    assert linux_rto_ms(50, 300) == pytest.approx(350)
    assert retransmission_times_ms(200, 10) == [200]
    assert retransmission_times_ms(200, 500) == [200, 600]
    assert retransmission_times_ms(200, 1500) == [200, 600, 1400, 3000]


def test_stall_prediction():
    # a black hole shorter than the RTO still costs an RTO
    for outage in (10, 50, 200):
        p = predict_stall(outage, 201, rtt_ms=1, io_timeout_ms=1000, other_path=True)
        assert p.cause == "tcp-retransmission" and p.stall_ms == pytest.approx(202)
    # a longer one: the doubling passes the initiator's I/O timeout, which fails over first
    p = predict_stall(700, 201, rtt_ms=1, io_timeout_ms=1000, other_path=True)
    assert p.tcp_ms == pytest.approx(1408) and p.cause == "initiator-failover"
    assert p.stall_ms == pytest.approx(1001)
    # without another path TCP is all there is
    assert predict_stall(700, 201, io_timeout_ms=1000).stall_ms == pytest.approx(1407)
    assert tcp_recovery_ms(0, 200) == 200


def test_stall_cause():
    from vclab.workloads.iscsi.stall_model import stall_cause

    assert stall_cause(9.0, 1004.0, 998.0).startswith("initiator failover")  # a switch failure
    assert stall_cause(12.0, 212.0, None).startswith("TCP retransmission")  # a 10 ms black hole
    assert stall_cause(197.0, 235.0, None) == "the network outage"
    assert stall_cause(2.0, 20.0, None) == "the network outage"
    assert stall_cause(None, None, None) == ""
    assert stall_cause(12.0, 0.0, None) == "no stall beyond the I/O's noise floor"


def test_report_flags_rows_of_limited_repetitions():
    from vclab.results.compare import build_rows, per_repetition
    from vclab.results.fidelity import fidelity_html, flagged_rows, limited_repetitions, storage_pairs
    from vclab.results.model import MetricRow, RunInfo

    def row(rid, mech, name, value, cls="storage-a", fault="tor-a fail@6s", kind="probe"):
        return MetricRow(rid, mech, rid, "ok", "w", kind, cls, name, value, "", fault)

    rows = [row(1, "rstp", "outage_ms", 12.0), row(2, "sdn", "outage_ms", 30.0),
            row(1, "rstp", "longest_stall_ms", 210.0, cls="storage", kind="iscsi"),
            row(2, "sdn", "longest_stall_ms", 1003.0, cls="storage", kind="iscsi"),
            row(1, "rstp", "link_achieved_ratio", 0.97, cls="", fault="", kind="fidelity"),
            row(2, "sdn", "link_achieved_ratio", 0.61, cls="", fault="", kind="fidelity")]
    values = per_repetition(rows)
    limited = limited_repetitions(values)
    assert limited == {"sdn": [0.61]}
    comp_rows = build_rows(rows, ["rstp", "sdn"])
    flagged = flagged_rows(comp_rows, limited)
    assert {r.metric for r, _ in flagged} == {"outage_ms", "longest_stall_ms"}
    assert all(m == ["sdn"] for _, m in flagged)
    pairs = storage_pairs(values, {"storage-a": "storage"})
    assert {(p["mechanism"], p["outage_ms"], p["stall_ms"]) for p in pairs} == {
        ("rstp", 12.0, 210.0), ("sdn", 30.0, 1003.0)}

    class C:
        pass

    c = C()
    c.values, c.rows = values, comp_rows
    run = RunInfo(1, "x", "", "", 0, None, "finished", "", {}, [], {},
                  {"scale": 10, "scale_chosen": "auto", "fastest_cable_bps": 10e9, "capacity_bps": 3.4e9,
                   "capacity_load": 1.5})
    html = fidelity_html(run, c, {"storage-a": "storage"})
    assert "scale 1/10" in html and "1 Gbit/s emulated" in html and "Emulator-limited" in html
    assert "network outage" in html and "1003 ms" in html and "TCP retransmission" in html


def test_link_counters_read_real_interface_counters():
    """The loopback's own transmit counter (no lab): traffic sent through it shows as a peak."""
    import socket
    import time
    from types import SimpleNamespace as NS

    from vclab.lab.capacity import LinkCounters

    end = NS(ifname="lo", in_root=True, node="br0")
    plan = NS(veths=[NS(name="loop", a=end, b=NS(ifname="x", in_root=False, node="h"), shape=NS(rate=1e9))])
    counters = LinkCounters(plan, interval_s=0.05)
    assert [(link, e) for link, e, _ in counters.ends] == [("loop", "lo")]
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    counters.start()
    payload = bytes(60000)
    deadline = time.monotonic() + 0.8
    sent = 0
    while time.monotonic() < deadline:
        tx.sendto(payload, rx.getsockname())
        sent += len(payload)
    counters.stop()
    (link,) = counters.links()
    assert link.link == "loop" and link.nominal_bps == 1e9 and link.bridge == "br0"
    assert link.peak_bps > 0.3 * sent * 8 / 0.8  # what went through lo shows (others add to it)


def test_link_counters_time_each_reading_by_its_own_read():
    """A sweep that stalls (a busy machine: no CPU or no GIL for 0.15 s) before it reads an
    end must not label that end's bytes with the sweep's start time: a cable carrying exactly
    its rate would show ~1.5 of it over a 0.3 s window. A read that itself stalls is left out."""
    import time
    from types import SimpleNamespace as NS

    from vclab.lab.capacity import LinkCounters

    rate = 500e6
    ends = [NS(name=f"l{i}", a=NS(ifname=f"e{i}", in_root=True, node="br0"),
               b=NS(ifname=f"x{i}", in_root=False, node="h"), shape=NS(rate=rate)) for i in range(2)]
    reads = {"e0": 0, "e1": 0}

    def frames(t):  # full-size frames, no TSO: bytes on the wire as counted
        sent = int(t * rate / 8)
        return sent, sent // 1518

    class Stalling(LinkCounters):
        @staticmethod
        def _tx_counters(end):
            reads[end] += 1
            if end == "e1" and reads[end] == 20:
                time.sleep(0.15)  # stalled before this end's read, inside the sweep
            elif end == "e0" and reads[end] == 30:
                t = time.monotonic()  # stalled inside the read: its time is unknown
                time.sleep(0.05)
                return frames(t)
            return frames(time.monotonic())

    counters = Stalling(NS(veths=ends), interval_s=0.02)
    counters.start()
    time.sleep(1.5)
    counters.stop()
    for link in counters.links():
        assert 0.9 < link.ratio < 1.05, (link.end, link.ratio)
    assert counters.uncertain >= 1


def test_wire_bytes_count_each_tso_segments_headers():
    from vclab.experiments.scale import wire_bytes

    assert wire_bytes(100 * 1518, 100) == 100 * 1518  # full-size frames: as counted
    assert wire_bytes(100 * 98, 100) == 100 * 98  # probes: as counted
    assert wire_bytes(0, 0) == 0
    tso = 70 + 45 * 1448  # one 64 KiB TSO packet: 45 segments behind one set of headers
    assert wire_bytes(10 * tso, 10) == pytest.approx(10 * 45 * 1518)
    # Small packets among them make it short, never more than a cable carries.
    mixed = wire_bytes(10 * tso + 100 * 98, 110)
    assert 10 * tso + 100 * 98 < mixed <= 10 * 45 * 1518 + 100 * 98
    assert mixed > 0.98 * (10 * 45 * 1518 + 100 * 98)
    # What HTB counted on a full uplink against tx_bytes there (measured 0.954).
    assert 10 * tso / wire_bytes(10 * tso, 10) == pytest.approx(0.954, abs=0.002)


def test_judged_links_are_the_full_rate_sources_uplinks():
    from vclab.experiments.loader import load_experiment
    from vclab.experiments.scale import full_rate_flows, source_uplinks

    loaded = load_experiment(ROOT / "experiments/vmotion-contention-10g.yaml")
    assert set(full_rate_flows(loaded.experiment.workloads, loaded.cluster)) == {"esx1"}  # iperf3 max + web1's host
    default = load_experiment(ROOT / "experiments/default.yaml")
    assert set(full_rate_flows(default.experiment.workloads, default.cluster)) == {"esx1"}  # 200 Mbit iperf3 is not
    links = [LinkFidelity("esx1.vmnic0", "p1", 1e9, 0.97e9, "vcv2"),
             LinkFidelity("esx1.vmnic1", "p2", 1e9, 0.0, "vcv2"),
             LinkFidelity("array1.storage-a", "s4", 1e9, 0.54e9, "vcs0")]  # held back upstream by QoS
    assert source_uplinks(links, {"esx1": "vcv2"}) == [links[0]]


def test_a_flow_held_back_by_a_full_cable_on_its_way_is_the_design_not_the_emulator():
    """rstp+balance-slb, repetition 2 of the 219ed8b main job: esx1's team sent the vMotion out
    of vmnic1 (vmnic0 was cut) to tor-b, esx3's team took web1's MAC on vmnic0 at tor-a, so the
    copy crossed the inter-switch cable, which the background load also uses: that cable ran
    at 0.999 of its rate, the source's uplink at 0.81."""
    from vclab.experiments.loader import load_experiment
    from vclab.experiments.scale import full_rate_flows, held_back_by

    default = load_experiment(ROOT / "experiments/default.yaml")
    assert full_rate_flows(default.experiment.workloads, default.cluster) == {"esx1": {"esx3"}}
    links = [LinkFidelity("tor-a/tor-b#1", "vcs1p1", 1e9, 0.999e9, "vcs1"),
             LinkFidelity("tor-a/tor-b#1", "vcs0p1", 1e9, 0.20e9, "vcs0"),
             LinkFidelity("tor-a/tor-b#2", "vcs1p2", 1e9, 0.346e9, "vcs1"),
             LinkFidelity("esx1.vmnic1", "vcv2p2", 1e9, 0.81e9, "vcv2"),
             LinkFidelity("esx1.vmnic1", "vcs1p5", 1e9, 0.05e9, "vcs1"),
             LinkFidelity("esx2.vmnic0", "vcs0p6", 1e9, 0.999e9, "vcs0"),
             LinkFidelity("esx3.vmnic0", "vcs0p7", 1e9, 0.798e9, "vcs0")]
    switches = {"vcs0", "vcs1"}
    assert held_back_by(links[3], links, switches, {"esx3"}) == links[0]
    # A full cable that is not on its way (toward another host) does not excuse it ...
    assert held_back_by(links[3], links[2:], switches, {"esx3"}) is None
    # ... nor does a virtual switch's own sending, and an uplink at its rate needs no excuse.
    assert held_back_by(links[3], [links[3], links[4]], switches, {"esx1"}) is None
    assert held_back_by(links[0], links, switches, {"esx3"}) is None


def test_stolen_cpu_share_from_proc_stat():
    from vclab.lab.capacity import StolenCpu, cpu_ticks, worst_stolen_share

    # /proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice
    assert cpu_ticks("cpu  100 0 50 800 0 0 10 40 7 0\ncpu0 ...") == (40, 1000)
    samples = [(0.0, 0, 0), (0.5, 10, 100), (1.0, 50, 200), (1.5, 50, 300), (2.0, 50, 400)]
    assert worst_stolen_share(samples, 1.0) == 0.25  # 50 of the 200 ticks from 0 to 1 s
    assert worst_stolen_share(samples[:2], 1.0) == 0.1  # shorter than a window: the whole span
    s = StolenCpu(interval_s=0.05)  # this machine's own counters: a share, whatever it is
    s.start()
    time.sleep(0.3)
    s.stop()
    assert len(s.samples) >= 3 and 0.0 <= s.worst() <= 1.0


def test_report_says_what_the_hypervisor_took():
    from vclab.results.compare import build_rows, per_repetition
    from vclab.results.fidelity import flagged_rows, stolen_repetitions, stolen_text
    from vclab.results.model import MetricRow

    def row(rid, mech, name, value, cls="vm-web", fault="tor-a fail@6s", kind="probe"):
        return MetricRow(rid, mech, rid, "ok", "w", kind, cls, name, value, "", fault)

    rows = [row(1, "rstp", "outage_ms", 12.0), row(2, "sdn", "outage_ms", 30.0),
            row(1, "rstp", "host_steal_share", 0.01, cls="", fault="", kind="fidelity"),
            row(2, "sdn", "host_steal_share", 0.31, cls="", fault="", kind="fidelity")]
    values = per_repetition(rows)
    assert stolen_repetitions(values) == {"sdn": [0.31]}
    flagged = flagged_rows(build_rows(rows, ["rstp", "sdn"]), stolen_repetitions(values))
    assert [(r.metric, m) for r, m in flagged] == [("outage_ms", ["sdn"])]
    text = stolen_text(values, {"sdn 1": [0.45, 0.2], "rstp 1": []})
    assert "at most 31%" in text and "rstp 1%" in text and "limit 10%" in text
    assert "2 attempts spoiled by it were run again (sdn 1: 45%, 20%)" in text
    assert stolen_text({}, {}) is None


def test_stolen_cpu_counts_from_the_measured_span_on():
    from vclab.lab.capacity import StolenCpu

    s = StolenCpu()
    # 40 % stolen in the first second (the build, the warm-up), 1 % after the faults began
    s.samples = [(0.0, 0, 0), (1.0, 80, 200), (2.0, 82, 400), (3.0, 84, 600)]
    assert s.worst() == 0.4
    assert s.worst(since=1.5) == 0.01  # the window opens at the sample just before `since`
