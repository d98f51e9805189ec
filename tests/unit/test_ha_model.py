"""The HA state machine reproduces the published vSphere HA timelines (see ha_model's docstring)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vclab.workloads.heartbeats.model import (
    CANDIDATE,
    FDM,
    ISOLATION,
    PRIMARY,
    SECONDARY,
    VPXA,
    Declaration,
    Fault,
    HaAgent,
    HaConfig,
    Heartbeat,
    PingResult,
    Tick,
    detection_times,
    false_declarations,
    simulate_cluster,
)

HOSTS = ["esx1", "esx2", "esx3"]


def when(decls: list[Declaration], kind: str, subject: str,
         agent: str | None = None) -> list[float]:
    return [round(d.t, 6) for d in decls
            if d.kind == kind and d.subject == subject and (agent is None or d.agent == agent)]


def alarms(decls: list[Declaration]) -> list[Declaration]:
    return false_declarations(decls, {})


def test_quiet_cluster_declares_nothing_wrong() -> None:
    decls = simulate_cluster(HOSTS, "esx3", until=200)
    assert alarms(decls) == []
    assert sorted(when(decls, "joined", "esx3")) == [0.0, 0.0]  # both secondaries, at once


def test_crashed_secondary_is_declared_failed_at_t15() -> None:
    # Heartbeats go out on whole seconds: the last one from esx2 is at 19 s (T0).
    decls = simulate_cluster(HOSTS, "esx3", faults=[Fault(20.0, "esx2", "crash")], until=120)
    assert when(decls, "heartbeat_lost", "esx2") == [22.0]
    assert when(decls, "unreachable", "esx2") == [29.0]
    assert when(decls, "failed", "esx2", agent="esx3") == [34.0]
    assert when(decls, "fdm_unreachable", "esx2") == []
    # vCenter heard its last vpxa heartbeat at 10 s and waits 60 s.
    assert when(decls, "not_responding", "esx2", agent="vcenter") == [70.0]
    # The survivors see nothing wrong with themselves.
    assert [d for d in alarms(decls) if d.subject != "esx2"] == []
    assert detection_times(decls, {"esx2": 20.0}, by="esx3") == {"esx2": pytest.approx(14.0)}


def test_dead_agent_on_a_pinging_host_is_fdm_unreachable_not_failed() -> None:
    decls = simulate_cluster(HOSTS, "esx3", faults=[Fault(20.0, "esx2", "agent")], until=60)
    assert when(decls, "fdm_unreachable", "esx2") == [34.0]
    assert when(decls, "failed", "esx2") == []


def test_isolated_secondary_follows_the_published_timeline() -> None:
    # T0 = 19 s, the last primary heartbeat esx2 heard.
    decls = simulate_cluster(HOSTS, "esx3", faults=[Fault(20.0, "esx2", "isolate")], until=120)
    assert when(decls, "election", "esx2") == [29.0]  # T10
    assert when(decls, "elected", "esx2") == [44.0]  # T25
    assert when(decls, "isolated", "esx2") == [49.0]  # T30
    assert when(decls, "isolation_response", "esx2") == [79.0]  # T60: +isolationPolicyDelaySec
    # Seen from the primary it stopped heartbeating and answers no ping: failed at T15.
    assert when(decls, "failed", "esx2", agent="esx3") == [34.0]
    # While isolated it does not declare the others failed.
    assert [d for d in decls if d.agent == "esx2" and d.kind == "failed"] == []


def test_isolated_primary_declares_itself_isolated_and_the_rest_elect() -> None:
    decls = simulate_cluster(HOSTS, "esx3", faults=[Fault(20.0, "esx3", "isolate")], until=120)
    # esx3 hears no secondary from 19 s: pings the isolation address at T3, isolated 5 s later.
    assert when(decls, "isolated", "esx3") == [27.0]
    assert when(decls, "isolation_response", "esx3") == [57.0]
    # The secondaries elect: both stand, they hear each other, the higher id (esx2) wins.
    assert when(decls, "election", "esx1") == when(decls, "election", "esx2") == [29.0]
    assert when(decls, "elected", "esx2") == [44.0]
    assert when(decls, "joined", "esx2", agent="esx1") == [44.0]
    assert when(decls, "isolated", "esx2") == []  # it heard esx1: not isolated
    # The new primary then finds esx3 gone: unreachable at +10, failed at +15.
    assert when(decls, "failed", "esx3", agent="esx2") == [59.0]


def test_isolation_ends_when_the_network_heals() -> None:
    decls = simulate_cluster(HOSTS, "esx3", until=120,
                             faults=[Fault(20.0, "esx2", "isolate"), Fault(90.0, "esx2", "heal")])
    assert when(decls, "isolation_ended", "esx2") == [90.0]
    assert when(decls, "alive", "esx2", agent="esx3") == [90.0]
    # Two primaries meet: the lower id steps down, so one primary is left.
    assert when(decls, "stepped_down", "esx3", agent="esx2") == [90.0]


def test_single_host_cluster_never_declares_itself_isolated() -> None:
    decls = simulate_cluster(["esx1"], "esx1", until=100)
    assert alarms(decls) == []


def test_scaled_config_scales_the_timeline() -> None:
    fast = HaConfig().scaled(0.1)
    decls = simulate_cluster(HOSTS, "esx3", config=fast, dt=0.01, until=12,
                             faults=[Fault(2.0, "esx2", "crash")])
    # last heartbeat at 1.9 s, failed 1.5 s later
    assert when(decls, "failed", "esx2") == [pytest.approx(3.4)]
    assert fast.heartbeat_interval_s == pytest.approx(0.1)
    assert fast.ping_timeout_s == HaConfig().ping_timeout_s  # a reply takes what it takes


def test_agent_steps_by_hand() -> None:
    cfg = HaConfig()
    a = HaAgent("esx1", PRIMARY, ["esx1", "esx2"], cfg, manager="vc")
    step = a.handle(0.0, Tick())
    assert ("esx2", FDM) in step.send and ("vc", VPXA) in step.send
    assert a.handle(0.5, Tick()).send == []  # next heartbeat at 1 s
    a.handle(1.0, Heartbeat("esx2", SECONDARY))
    pings = []
    decls = []
    for i in range(1, 200):
        s = a.handle(1.0 + i * 0.1, Tick())
        pings += [(round(1.0 + i * 0.1, 6), p) for p in s.ping]
        decls += s.declarations
    # Nobody answers: from T3 it pings the isolation address, isolated 5 s later; an isolated
    # primary does not go on to declare the secondary failed.
    assert [t for t, p in pings if p == ISOLATION][:2] == [4.0, 5.0]
    assert [t for t, p in pings if p == "esx2"] == []
    assert [(round(d.t, 6), d.kind) for d in decls] == [(4.0, "heartbeat_lost"), (9.0, "isolated")]
    # Had the isolation address answered, it would have pinged esx2 from T10 and, with no
    # answer, declared it failed at T15.
    b = HaAgent("esx1", PRIMARY, ["esx1", "esx2"], cfg)
    b.handle(1.0, Heartbeat("esx2", SECONDARY))
    got = []
    host_pings = []
    for i in range(1, 200):
        t = round(1.0 + i * 0.1, 6)
        s = b.handle(t, Tick())
        got += [(t, d.kind) for d in s.declarations]
        host_pings += [t for p in s.ping if p == "esx2"]
        for p in s.ping:
            got += [(t, d.kind) for d in b.handle(t, PingResult(p, p == ISOLATION)).declarations]
    assert host_pings == [11.0, 12.0, 13.0, 14.0, 15.0]
    assert got == [(4.0, "heartbeat_lost"), (11.0, "unreachable"), (16.0, "failed")]


def test_election_candidate_role_and_joining() -> None:
    s = HaAgent("esx1", SECONDARY, ["esx1", "esx2", "esx3"])
    s.handle(0.0, Heartbeat("esx3", PRIMARY))
    assert s.primary == "esx3" and s.sending_role == SECONDARY
    assert [d.kind for d in s.handle(10.0, Tick()).declarations] == ["election"]
    assert s.sending_role == CANDIDATE
    assert {to for to, _ in s.handle(11.0, Tick()).send} == {"esx2", "esx3"}
    s.handle(12.0, Heartbeat("esx2", CANDIDATE))
    s.handle(25.0, Tick())  # esx2 > esx1 wins; esx1 waits for it
    assert s.role == SECONDARY and s.primary is None
    assert [d.kind for d in s.handle(25.5, Heartbeat("esx2", PRIMARY)).declarations] == ["joined"]


def test_metrics() -> None:
    decls = [
        Declaration(5.0, "esx3", "failed", "esx1"),  # before esx1 really failed: false
        Declaration(30.0, "esx3", "failed", "esx2"),
        Declaration(40.0, "esx3", "failed", "esx2"),
        Declaration(41.0, "vc", "not_responding", "esx3"),  # never failed: false
        Declaration(42.0, "esx3", "unreachable", "esx1"),  # not an alarm
    ]
    truth = {"esx1": 10.0, "esx2": 16.0}
    assert detection_times(decls, truth) == {"esx1": None, "esx2": pytest.approx(14.0)}
    assert [d.t for d in false_declarations(decls, truth)] == [5.0, 41.0]
    assert [d.t for d in false_declarations(decls, truth, start=10, end=50)] == [41.0]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="role"):
        HaAgent("esx1", "master", HOSTS)
    with pytest.raises(ValidationError):
        HaConfig(failed_s=0)
    with pytest.raises(ValidationError):
        HaConfig(failed_after=3)
