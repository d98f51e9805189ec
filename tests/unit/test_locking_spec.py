"""The `locking` workload and the host crash / storage-partition faults, without root: the spec
(defaults, the no-split-brain inequality at load time, every reference checked against the
cluster), the fault commands, which processes a crash kills, and the adapter's measurements
from saved-shape agent output."""

from __future__ import annotations

from pathlib import Path

import pytest

from vclab.errors import ConfigError
from vclab.experiments.cabling import PlanCabling
from vclab.experiments.faults import crash_victims, plan, storage_ports
from vclab.experiments.loader import load_experiment
from vclab.experiments.spec import Fault
from vclab.workloads.locking.spec import LockingSpec
from vclab.workloads.locking.adapter import LockingAdapter, locking_measurements
from vclab.workloads.registry import adapter_for
from vclab.workloads.vmotion.migration import switch_over
from vclab.lab.procs import Role, Tracked
from vclab.topology.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]
LOCKING = ["locking-host-crash.yaml", "locking-storage-partition.yaml",
           "locking-vmotion-handover.yaml"]


def write(tmp_path: Path, body: str, topology: str = "topologies/default.yaml") -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(f"experiment: t\ntopology: {ROOT / topology}\nmechanisms: [rstp]\n" + body)
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    return [str(p) for p in e.value.problems]


@pytest.mark.parametrize("name", LOCKING)
def test_shipped_locking_experiments_load(name):
    loaded = load_experiment(ROOT / "experiments" / name)
    assert [w.kind for w in loaded.experiment.workloads][0] == "locking"


def test_defaults_are_the_documented_timers():
    s = LockingSpec(hosts=["esx1", "esx2"], lun="datastore1", vms=["web1"])
    t = s.timing()
    assert (t.heartbeat_s, t.lease_s, t.break_after_s, t.io_timeout_s, t.drift) == \
        (0.2, 1.5, 3.0, 0.5, 0.001)
    assert t.problems() == []
    assert s.primitive == "auto" and s.restart_after == 0 and s.failover_host is None


def test_durations_in_the_users_units():
    s = LockingSpec(hosts=["esx1", "esx2"], lun="d", vms=["web1"], heartbeat="250ms",
                    lease="2s", break_after="4s", io_timeout="1s", restart_after="1s")
    assert (s.heartbeat, s.lease, s.break_after, s.io_timeout, s.restart_after) == \
        (250, 2000, 4000, 1000, 1000)


def test_split_brain_timers_refused_at_load_naming_the_key(tmp_path):
    p = write(tmp_path, "workloads:\n"
                        "  - locking: {hosts: [esx1, esx2], lun: datastore1, vms: [web1],\n"
                        "              lease: 2s, break_after: 2s}\n")
    (msg,) = problems(p)
    assert "workloads.0.locking.break_after" in msg
    assert "must exceed lease * (1 + clock_drift) / (1 - clock_drift) = 2004" in msg
    assert "split brain" in msg


def test_drift_counts_in_the_inequality(tmp_path):
    # 3 s would do with the default drift; 20 % drift needs break_after > 3 s
    p = write(tmp_path, "workloads:\n  - locking: {hosts: [esx1, esx2], lun: datastore1, "
                        "vms: [web1], lease: 2s, break_after: 3s, clock_drift: 0.2}\n")
    (msg,) = problems(p)
    assert "break_after 3000 ms must exceed" in msg and "= 3000 ms" in msg


def test_lease_shorter_than_heartbeat_plus_io_timeout_refused(tmp_path):
    p = write(tmp_path, "workloads:\n  - locking: {hosts: [esx1, esx2], lun: datastore1, "
                        "vms: [web1], heartbeat: 500ms, io_timeout: 1s, lease: 1500ms}\n")
    (msg,) = problems(p)
    assert "workloads.0.locking.lease: " in msg and "must exceed heartbeat + (io_timeout" in msg


def test_unknown_key_and_duplicates_named(tmp_path):
    p = write(tmp_path, "workloads:\n  - locking: {hosts: [esx1, esx1], lun: datastore1, "
                        "vms: [web1], breakafter: 3s}\n")
    msgs = problems(p)
    assert any("workloads.0.locking.breakafter" in m for m in msgs), msgs
    assert any("workloads.0.locking.hosts" in m and "named more than once: esx1" in m
               for m in msgs), msgs


def test_references_checked_against_the_cluster(tmp_path):
    p = write(tmp_path, "workloads:\n"
                        "  - locking: {hosts: [esx1, esx9], lun: nolun, vms: [web2, web7],\n"
                        "              failover_host: esx3}\n")
    msgs = problems(p)
    text = "\n".join(msgs)
    assert "workloads.0.locking.hosts.1: unknown hypervisor 'esx9'" in text
    assert "workloads.0.locking.lun: unknown LUN 'nolun'" in text
    assert "workloads.0.locking.failover_host: 'esx3' is not among hosts" in text
    # web2 runs on esx2, which does not mount the datastore here
    assert "workloads.0.locking.vms.0: web2 runs on esx2, which is not among hosts" in text
    assert "workloads.0.locking.vms.1: unknown VM 'web7'" in text


def test_a_run_longer_than_the_disk_log_is_refused(tmp_path):
    p = write(tmp_path, "duration: 30s\nworkloads:\n  - locking: {hosts: [esx1, esx2], "
                        "lun: datastore1, vms: [web1]}\n")
    (msg,) = problems(p)
    assert "workloads.0.locking.write_every: each owner's disk log holds 1024 writes: at one per 20 ms it " \
           "wraps after 20.48 s, before the run ends (31 s with the warm-up)" in msg
    p = write(tmp_path, "duration: 30s\nworkloads:\n  - locking: {hosts: [esx1, esx2], "
                        "lun: datastore1, vms: [web1], write_every: 50ms}\n")
    assert load_experiment(p).experiment.workloads[0].locking.timing().write_interval_s == 0.05


def test_failover_host_must_differ_from_the_vms_host(tmp_path):
    p = write(tmp_path, "workloads:\n  - locking: {hosts: [esx1, esx2], lun: datastore1, "
                        "vms: [web1], failover_host: esx1}\n")
    (msg,) = problems(p)
    assert "failover_host: web1 already runs on esx1" in msg


def test_clashing_workloads_refused(tmp_path):
    p = write(tmp_path, "workloads:\n"
                        "  - locking: {hosts: [esx1, esx2], lun: datastore1, vms: [web1]}\n"
                        "  - iscsi: {hosts: [esx1], lun: datastore1}\n"
                        "  - vmotion: {vm: web1, to: esx3}\n")
    text = "\n".join(problems(p))
    assert "workloads.0.locking.array: workloads.1 (iscsi) also serves array1" in text
    assert "workloads.2 migrates web1 to esx3, which does not mount the datastore" in text


def test_lun_too_small_for_the_vms(tmp_path):
    cluster = (ROOT / "topologies/default.yaml").read_text().replace(
        "luns: {datastore1: 256MiB}", "luns: {datastore1: 4MiB}")
    (tmp_path / "small.yaml").write_text(cluster)
    p = tmp_path / "exp.yaml"
    p.write_text(f"experiment: t\ntopology: {tmp_path / 'small.yaml'}\nmechanisms: [rstp]\n"
                 "workloads:\n  - locking: {hosts: [esx1, esx2], lun: datastore1, vms: [web1]}\n")
    (msg,) = problems(p)
    assert "LUN datastore1 (4194304 bytes) is too small for 1 VMs" in msg


def test_host_faults_accept_crash_and_storage_partition(tmp_path):
    p = write(tmp_path, "faults:\n  - {at: 1s, host: esx1, action: crash}\n"
                        "  - {at: 2s, host: esx2, action: storage-partition}\n"
                        "  - {at: 3s, host: esx2, action: storage-rejoin}\n"
                        "  - {at: 4s, host: vcenter, action: storage-partition}\n")
    (msg,) = problems(p)
    assert "faults.3.host: vcenter is on no storage network" in msg
    p = write(tmp_path, "faults:\n  - {at: 5s, link: esx1.vmnic0, action: crash}\n")
    (msg,) = problems(p)
    assert "faults.0: a link fault's action is one of down" in msg


@pytest.fixture(scope="module")
def cabling():
    loaded = load_experiment(ROOT / "experiments" / "locking-host-crash.yaml")
    return PlanCabling(build_plan(loaded.cluster, "vc"))


def test_crash_cuts_every_cable_of_the_host_and_mends_them(cabling):
    apply, undo = plan(Fault(at=0, host="esx1", action="crash"), cabling)
    ends = [e for link in cabling.management_links("esx1") for e in cabling.link_ends(link)]
    assert len(ends) == 4  # two NICs, both ends of each cable
    assert apply == [["ip", "link", "set", "dev", e, "down"] for e in ends]
    assert undo == [["ip", "link", "set", "dev", e, "up"] for e in ends]


def test_storage_partition_stops_only_the_storage_ports(cabling):
    ports = storage_ports(cabling.plan, "esx1")
    host = cabling.plan.host("esx1")
    assert [p for _, p in ports] == [host.interface("storage-a").port,
                                     host.interface("storage-b").port]
    apply, undo = plan(Fault(at=0, host="esx1", action="storage-partition"), cabling)
    bridge = host.interface("storage-a").bridge
    assert apply[:2] == [["ovs-ofctl", "mod-port", bridge, ports[0][1], "no-receive"],
                         ["ovs-ofctl", "mod-port", bridge, ports[0][1], "no-forward"]]
    assert len(apply) == 4 and {c[3] for c in apply} == {p for _, p in ports}
    management = host.interface("management").port
    assert management not in {c[3] for c in apply}
    assert [c[4] for c in undo] == ["receive", "forward"] * 2
    rejoin, nothing = plan(Fault(at=0, host="esx1", action="storage-rejoin"), cabling)
    assert rejoin == undo and nothing == []


def test_a_crash_kills_the_hosts_processes_and_its_vms_not_the_shells():
    tracked = [Tracked(10, 1, "esx1: bash --norc", Role.SHELL, "esx1"),
               Tracked(11, 1, "esx1: python -m agent", Role.NODE, "esx1"),
               Tracked(11, 1, "lock-esx1"), Tracked(12, 1, "esx10: python -m agent", Role.NODE, "esx10"),
               Tracked(13, 1, "web1: python probe", Role.NODE, "web1"),
               Tracked(14, 1, "tgtd:array1", Role.TARGET),
               Tracked(15, 1, "esx2: python -m agent", Role.NODE, "esx2")]
    victims = crash_victims(tracked, ["esx1", "web1"], spare={10})
    assert [t.pid for t in victims] == [11, 13]


def raw_crash(fault_ns: int = 10_000_000_000) -> dict:
    ms = 1_000_000
    epoch = lambda g, host, first, last: {"generation": g, "hosts": [host], "writes": 50,  # noqa: E731
                                          "first_ns": first, "last_ns": last, "wrapped": False,
                                          "missing": 0}
    return {
        "vms": {"web1": 0}, "hosts": {"esx1": 1, "esx2": 2},
        "events": {
            1: [{"t": 1, "event": "start", "host": 1, "atomic_primitive": "compare-and-write"},
                {"t": 2, "event": "acquired", "vm": "web1", "generation": 1, "how": "free"}],
            2: [{"t": 1, "event": "start", "host": 2, "atomic_primitive": "compare-and-write"},
                {"t": fault_ns + 5 * ms, "event": "busy", "vm": "web1", "owner": 1},
                {"t": fault_ns + 3100 * ms, "event": "acquired", "vm": "web1", "generation": 2,
                 "how": "broken", "previous_owner": 1}],
        },
        "lun": {0: {"epochs": [epoch(1, 1, 0, fault_ns - 15 * ms),
                               epoch(2, 2, fault_ns + 3110 * ms, fault_ns + 6000 * ms)],
                    "overlaps": [], "dual_writers": 0, "gaps": [], "complete": True}},
        "restarts": [{"vm": "web1", "fault": "host esx1 crash@3s", "fault_ns": fault_ns,
                      "owner": "esx1", "owner_id": 1, "taker": "esx2", "taker_id": 2,
                      "mark": 1, "requested_ns": fault_ns + 1 * ms}],
        "handovers": [], "migrations": [],
    }


def test_takeover_measured_from_the_fault_and_the_lun():
    m = locking_measurements(raw_crash())
    (t,) = m["takeovers"]
    assert m["atomic_primitive"] == "compare-and-write" and m["dual_writers"] == 0
    assert t["how"] == "broken" and t["requested_ms"] == pytest.approx(1)
    assert t["taker_broke_ms"] == pytest.approx(3100)
    assert t["vm_restarted_ms"] == pytest.approx(3110)
    assert t["owner_stopped_ms"] == pytest.approx(-15)


def test_handover_share_of_the_switch_over():
    raw = raw_crash()
    raw["restarts"] = []
    raw["handovers"] = [{"vm": "web1", "from": "esx1", "to": "esx2", "release_sent_ns": 100 * 10**6,
                         "released_ns": 112 * 10**6, "acquire_sent_ns": 113 * 10**6,
                         "acquired_ns": 130 * 10**6, "generation": 2}]
    raw["migrations"] = [{"vm": "web1", "switchover_ms": 120.0, "outage_ms": 125.0}]
    (h,) = locking_measurements(raw)["handovers"]
    assert h["lock_handover_ms"] == pytest.approx(30) and h["release_ms"] == pytest.approx(12)
    assert h["acquire_ms"] == pytest.approx(17) and h["handover_share"] == pytest.approx(0.25)


def test_adapter_stores_metrics_per_fault_and_the_primitive():
    loaded = load_experiment(ROOT / "experiments" / "locking-host-crash.yaml")
    adapter = adapter_for(loaded.experiment.workloads[0], 0)
    assert isinstance(adapter, LockingAdapter)
    owners, failover = adapter.assignments(loaded.cluster)
    assert owners == {"web1": "esx1", "web2": "esx2"}
    assert failover == {"web1": "esx2", "web2": "esx1"}
    out = adapter.outcome(raw_crash(), 0, 20 * 10**9, [])
    by = {(m.name, m.fault): m.value for m in out.metrics}
    fault = "host esx1 crash@3s"
    assert by[("takeover_ms", fault)] == pytest.approx(3110)
    assert by[("taker_broke_ms", fault)] == pytest.approx(3100)
    assert by[("owner_stopped_ms", fault)] == pytest.approx(-15)
    assert by[("dual_writers", "")] == 0
    assert {m.traffic_class for m in out.metrics} == {"storage"}
    starts = [e for e in out.events if e.kind == "lock_manager_started"]
    assert {e.detail["atomic_primitive"] for e in starts} == {"compare-and-write"}
    assert any(e.kind == "vm_restarted" for e in out.events)
    assert '"atomic_primitive": "compare-and-write"' in out.raw[0].data


def test_a_migration_of_a_locked_vm_hands_the_lock_over_inside_its_switch_over():
    calls = []

    class Lab:
        plan = "the plan"

        def move_vm(self, vm, to, between=None):
            calls.append(("detach", vm))
            if between:
                between()
            calls.append(("attach", to))
            return {}

    class Group:
        def handover(self, vm, to):
            calls.append(("handover", vm, to))

    # The locking adapter hooks Group.handover into the migrations of locked VMs only.
    switch_over(Lab(), "web1", "esx2", lambda: calls.append(("copy",)), [Group().handover])
    assert calls == [("detach", "web1"), ("copy",), ("handover", "web1", "esx2"),
                     ("attach", "esx2")]
    calls.clear()
    switch_over(Lab(), "web2", "esx3", lambda: calls.append(("copy",)))
    assert ("handover", "web2", "esx3") not in calls
