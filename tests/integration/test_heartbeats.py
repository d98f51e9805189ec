"""HA agents on a real OVS rig: a crashed host, a dead agent and an isolated host, measured."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from rigs.netns import rig, run
from vclab.lab.procs import ProcessTracker
from vclab.workloads.heartbeats.model import HaConfig
from vclab.workloads.heartbeats.workload import Heartbeats, HaMember

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ovs-vsctl"),
                       reason="needs root and Open vSwitch"),
]

# The published timeline ten times faster: heartbeats every 100 ms, failed after 1.5 s.
FAST = HaConfig().scaled(0.1)
# Agents tick every 10 ms and are Python on two busy cores: allow a few ticks of lateness.
LATE_S = 0.3


@pytest.fixture
def tracker(tmp_path):
    t = ProcessTracker(run_id=f"test-ha-{os.getpid()}", state_dir=tmp_path / "state")
    yield t
    t.end_all()


def first(res: dict, kind: str, subject: str, agent: str | None = None) -> float | None:
    times = [d["t"] for d in res["declarations"]
             if d["kind"] == kind and d["subject"] == subject
             and (agent is None or d["agent"] == agent)]
    return min(times) if times else None


def test_primary_declares_crashed_host_failed_and_dead_agent_unreachable(tmp_path, tracker) -> None:
    with rig("vch", 4, subnet="10.250.42.0/24") as r:
        a, b, c, d = r.nodes
        wl = Heartbeats([HaMember("esx1", a, a.ip, "primary"),
                         HaMember("esx2", b, b.ip, "secondary"),
                         HaMember("esx3", c, c.ip, "secondary"),
                         HaMember("vcenter", d, d.ip, "manager")],
                        tracker, tmp_path, config=FAST)
        try:
            wl.check()
            wl.start()
            t_start = time.time()
            time.sleep(2.0)  # a quiet window: nothing may be declared wrong here
            # esx2 crashes: its agent dies and the host answers nothing (carrier lost).
            t_crash = wl.kill("esx2")
            run(["ip", "link", "set", r.ports[b.name], "down"])
            # esx3's agent dies but the host stays up and answers pings.
            t_agent = wl.kill("esx3")
            time.sleep(FAST.not_responding_s + 1.0)
        finally:
            wl.stop()
        res = Heartbeats.parse(wl.collect(), failures={"esx2": t_crash, "esx3": t_agent})

    failed = first(res, "failed", "esx2", agent="esx1") - t_crash
    fdm_unreachable = first(res, "fdm_unreachable", "esx3", agent="esx1") - t_agent
    not_responding = first(res, "not_responding", "esx2", agent="vcenter") - t_crash
    gap = res["heartbeat_gap_s"]
    print(f"\nHA (timers x0.1): esx2 crashed -> failed after {failed:.3f} s (configured "
          f"{FAST.failed_s:g} s after the last heartbeat); esx3 agent killed -> fdm_unreachable "
          f"after {fdm_unreachable:.3f} s; vCenter: esx2 not responding after "
          f"{not_responding:.3f} s ({FAST.not_responding_s:g} s); max heartbeat gap "
          f"esx1->esx2 while up {gap['esx1->esx2']:.3f} s; false declarations "
          f"{res['false_declaration_count']}")
    # The last heartbeat came at most one interval before the crash.
    assert FAST.failed_s - FAST.heartbeat_interval_s - LATE_S <= failed <= FAST.failed_s + LATE_S
    assert res["detect_failed_s"]["esx2"] == pytest.approx(failed)
    assert (FAST.failed_s - FAST.heartbeat_interval_s - LATE_S <= fdm_unreachable
            <= FAST.failed_s + LATE_S)
    assert first(res, "failed", "esx3") is None  # it answered pings: not declared failed
    assert (FAST.not_responding_s - FAST.manager_heartbeat_interval_s - LATE_S
            <= not_responding <= FAST.not_responding_s + LATE_S)
    # The primary lost both secondaries but reached the isolation address: not isolated.
    assert first(res, "isolated", "esx1") is None
    assert res["false_declaration_count"] == 0, res["false_declarations"]
    assert Heartbeats.parse(wl.collect(), failures={}, start=t_start, end=t_crash)[
        "false_declaration_count"] == 0


def test_isolated_secondary_elects_itself_and_declares_isolation(tmp_path, tracker) -> None:
    with rig("vch", 3, subnet="10.250.43.0/24") as r:
        a, b, c = r.nodes
        wl = Heartbeats([HaMember("esx1", a, a.ip, "primary"),
                         HaMember("esx2", b, b.ip, "secondary"),
                         HaMember("vcenter", c, c.ip, "manager")],
                        tracker, tmp_path, config=FAST)
        try:
            wl.check()
            wl.start()
            time.sleep(1.0)
            t_cut = time.time()
            run(["ip", "link", "set", r.ports[b.name], "down"])  # esx2's management uplink
            time.sleep(FAST.election_after_s + FAST.election_s + FAST.isolation_ping_s
                       + FAST.isolation_policy_delay_s + 0.7)
        finally:
            wl.stop()
        res = Heartbeats.parse(wl.collect(), failures={"esx2": t_cut})

    got = {kind: first(res, kind, "esx2", agent="esx2") for kind in
           ("election", "elected", "isolated", "isolation_response")}
    want = {"election": FAST.election_after_s,
            "elected": FAST.election_after_s + FAST.election_s,
            "isolated": FAST.election_after_s + FAST.election_s + FAST.isolation_ping_s}
    want["isolation_response"] = want["isolated"] + FAST.isolation_policy_delay_s
    print("\nHA isolated secondary, seconds after the cut (model T0 = last heartbeat):",
          {k: round(v - t_cut, 3) for k, v in got.items()},
          f"primary declared it failed after {first(res, 'failed', 'esx2', 'esx1') - t_cut:.3f} s")
    for kind, after in want.items():
        assert got[kind] is not None, kind
        assert after - FAST.heartbeat_interval_s - LATE_S <= got[kind] - t_cut <= after + LATE_S
    failed = first(res, "failed", "esx2", agent="esx1") - t_cut
    assert FAST.failed_s - FAST.heartbeat_interval_s - LATE_S <= failed <= FAST.failed_s + LATE_S
    assert res["false_declaration_count"] == 0, res["false_declarations"]
