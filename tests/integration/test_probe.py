"""The probe against real Open vSwitch: its noise floor, and black holes of known length.

Two namespaces vcp-a and vcp-b on the netdev bridge vcp-br. Two black holes: the kernel one
(vcp-ap's MTU shrunk by ioctl: edges exact) checks the probe itself; the OpenFlow one (a drop
rule above NORMAL over a direct OpenFlow connection) checks it on a switch-side failure. Open vSwitch is
shared with other users: a trial during which OVS's own main loop stalled (seen by OpenFlow
echoes, see SwitchWatch) measures their reconfiguration, not the probe, and is repeated.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rigs.netns import BlackHole, MtuBlackHole, SwitchWatch, rig
from vclab.lab.procs import ProcessTracker
from vclab.workloads.probe.workload import Probe, quiet_trial

pytestmark = pytest.mark.root

PREFIX = "vcp"


@pytest.fixture
def probe_rig(tmp_path: Path):
    """The two-namespace rig and a process tracker; everything is removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not shutil.which("ovs-vsctl"):
        pytest.skip("Open vSwitch is not installed")
    tracker = ProcessTracker(run_id=f"{PREFIX}-{os.getpid()}", state_dir=tmp_path / "state")
    try:
        with rig(PREFIX) as r:
            yield r, tracker
    finally:
        tracker.end_all()


def endpoints(r):
    a, b = r.nodes
    return (a, a.ip), (b, b.ip)


def skip_if_disturbed(res: dict) -> None:
    if res["disturbed"]:
        pytest.skip(f"disturbed in all {res['attempts']} attempts (other users' load on the "
                    f"shared OVS: probes lost without a fault, or switch stalls [ms from the "
                    f"fault, length ms] near its edges; or the host stalled the probe's "
                    f"senders at an edge [direction: error bar ms]): {res['voided']}")


def test_noise_floor_without_fault(probe_rig):
    r, tracker = probe_rig
    res = quiet_trial(*endpoints(r), tracker, before_s=4.0, after_s=0.0,
                      make_witness=lambda: SwitchWatch(r.bridge))
    print({k: res[k] for k in ("noise_floor_ms", "own_noise_floor_ms", "naive_noise_floor_ms",
                               "noise_delay_spike_ms", "lost", "probe_drops", "rtt", "sched",
                               "attempts", "disturbed")})
    ab, ba = res["a_to_b"], res["b_to_a"]
    # the probe itself never drops: no receive-buffer overflow, no failed send
    assert res["probe_drops"] == 0 and res["send_errors"] == 0
    skip_if_disturbed(res)  # the shared switch lost probes in every attempt
    # ~4 s at 1 ms each way, every probe accounted for
    assert ab["expected"] > 3500 and ba["expected"] > 3500
    assert ab["received"] + ab["lost"] == ab["expected"]
    # On an intact path the floor is 0.0 (measured in every such run, idle and with both
    # cores kept busy) while naive receive gaps showed 1.5-57 ms: scheduling jitter of
    # sender and receiver does not count. 2 ms would allow a single lost probe (1 interval).
    assert res["noise_floor_ms"] <= 2.0
    # one-way delay through OVS userspace: ~0.1 ms median idle, a few ms with the host
    # overloaded; each RTT is one a->b plus one b->a delay (same clock, echoes)
    assert 0 < ab["owd"]["median_ms"] < 10.0 and 0 < ba["owd"]["median_ms"] < 10.0
    assert res["rtt"]["count"] > 1000  # fewer than probes: bursts echo only their newest
    assert res["rtt"]["min_ms"] >= ab["owd"]["min_ms"] + ba["owd"]["min_ms"] - 0.01
    assert ab["duplicates"] == 0


def faults(r) -> dict:
    a = r.nodes[0]
    return {
        "openflow": lambda: BlackHole(r.bridge).connect(),
        "kernel": lambda: MtuBlackHole(r.ports[a.name]).connect(),
    }


def show(res: dict) -> None:
    keys = ("fault_ms", "fault_error_ms", "fault_outage_ms", "fault_outage_error_ms",
            "fault_loss_outage_ms", "error_ms", "tolerance_ms", "fault_outage_start_ms",
            "noise_floor_ms", "own_noise_floor_ms", "disturbed", "attempts", "voided",
            "wall_clock_step_ms")
    print({k: res.get(k) for k in keys})
    print({d: (res[d]["error_ms"], res[d]["owd"]["max_ms"]) for d in ("a_to_b", "b_to_a")})


@pytest.mark.parametrize("hold_ms", [20, 200, 1000])
def test_kernel_black_hole_of_known_length(probe_rig, hold_ms):
    """The reference check: a fault whose edges the kernel applies at the syscall. Stalls of
    the shared switch do not void it (a->b does not depend on OVS's timing), only a path
    that was already broken when the fault came."""
    r, tracker = probe_rig
    res = quiet_trial(*endpoints(r), tracker, faults(r)["kernel"], hold_ms, before_s=1.0,
                      after_s=0.5, make_witness=lambda: SwitchWatch(r.bridge))
    show(res)
    ab, ba = res["a_to_b"], res["b_to_a"]
    # a->b is dropped in a's own sendto: measured = real within its error bar, even when the
    # host stalled the senders at an edge (the bar then widens: 8-140 ms on a CI runner)
    assert ab["within_tolerance"], ab["error_ms"]
    skip_if_disturbed(res)
    assert res["fault_ms"] >= hold_ms - 1
    # with the senders on schedule the bar is +-1 interval plus the ioctls' own duration
    # (measured: |error| <= 1.5 ms with the host at load 4 on 2 cores)
    assert abs(ab["error_ms"]) <= 3.0
    assert ab["fault_gap"]["loss_outage_ms"] == pytest.approx(res["fault_ms"],
                                                              abs=ab["tolerance_ms"])
    # b->a is dropped when OVS sends it out: each edge moves by that packet's queueing delay
    spread = ba["owd"]["max_ms"] - ba["owd"]["min_ms"]
    assert abs(ba["error_ms"]) <= ba["tolerance_ms"] + spread
    assert abs(ab["fault_gap"]["start_rel_ms"]) <= ab["tolerance_ms"]
    assert res["probe_drops"] == 0 and res["send_errors"] == 0
    assert not res["broken_before"]


@pytest.mark.parametrize("hold_ms", [20, 200, 1000])
def test_openflow_black_hole_of_known_length(probe_rig, hold_ms):
    """A switch-side silent drop: OVS applies it a little after confirming it."""
    r, tracker = probe_rig
    res = quiet_trial(*endpoints(r), tracker, faults(r)["openflow"], hold_ms, before_s=1.0,
                      after_s=0.5, make_witness=lambda: SwitchWatch(r.bridge))
    show(res)
    skip_if_disturbed(res)
    assert res["fault_ms"] >= hold_ms - 1
    # measured outage = real black-hole length within the error bars (+-1 interval probe,
    # the rule's request round trip, 5 ms for OVS's datapath to follow its flow table)
    assert res["within_tolerance"], res["error_ms"]
    assert abs(res["error_ms"]) <= 8.0
    assert res["fault_loss_outage_ms"] == pytest.approx(res["fault_ms"], abs=res["tolerance_ms"])
    # both directions were cut, and the outage sits where the rule was
    for d in ("a_to_b", "b_to_a"):
        assert res[d]["fault_gap"]["outage_ms"] > hold_ms - 5
    # On an overloaded host OVS applies a confirmed rule up to ~10 ms late (its revalidator
    # threads wait for CPU); both edges lag alike, so the length above still holds.
    assert -res["tolerance_ms"] <= res["fault_outage_start_ms"] <= 25.0
    assert res["probe_drops"] == 0 and res["send_errors"] == 0
    assert not res["broken_before"]


def test_probe_stops_its_agents_and_removes_its_logs(probe_rig):
    r, tracker = probe_rig
    probe = Probe(*endpoints(r), tracker)
    probe.start()
    pids = [p.pid for p in probe.procs.values()]
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    probe.stop()
    raw = probe.collect()
    probe.cleanup()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert tracker.tracked == []
    assert raw["a"].info["sched"] in ("fifo:10", "other") and raw["errors"] == {}
    assert not probe.workdir.exists()
