"""From an experiment's workload entries to running workloads, and from their parsed output to
what the results store keeps (series, metrics per fault, events, raw tool output).

One adapter per kind; each knows its workload's constructor and which numbers matter."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vclab.experiments.spec import Workload as WorkloadEntry
from vclab.lab.procs import ProcessTracker
from vclab.results.model import Event, FaultRecord, Metric, Raw, Series, rounds_as_events
from vclab.workloads import probe_metrics
from vclab.workloads.base import Workload

# A fault's window starts this many probe intervals before it was applied and ends where the
# next fault's begins, so each outage is charged to the fault that caused it.
MARGIN_INTERVALS = probe_metrics.FAULT_MARGIN_INTERVALS
# A quiet stretch shorter than this many probe intervals says too little to be a noise floor.
QUIET_MIN_INTERVALS = 100


@dataclass
class Outcome:
    series: list[Series] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    raw: list[Raw] = field(default_factory=list)


def _ms_since(t0_ns: int, t_ns: float) -> float:
    return (t_ns - t0_ns) / 1e6


def address(lab, host: str, network: str) -> str:
    return lab.plan.host(host).interface(network).ip


class Adapter:
    kind = ""
    start_at_ms: float | None = None  # None: with the others, before the first fault

    def __init__(self, entry: WorkloadEntry, index: int):
        self.entry, self.spec, self.index = entry, entry.spec, index
        self.workload: Workload | None = None

    @property
    def name(self) -> str:
        return self.kind

    @property
    def traffic_class(self) -> str:
        return getattr(self.spec, "network", "")

    @property
    def common(self) -> dict:
        """What every series and metric of this workload carries."""
        return dict(workload=self.name, kind=self.kind, traffic_class=self.traffic_class)

    def make(self, lab, tracker: ProcessTracker, workdir: Path) -> Workload:
        raise NotImplementedError

    def prepare(self, workload: Workload) -> None:
        """Runs after every check and before the warm-up: measurements that need the fabric."""

    def connect(self, workload: Workload, others: list[tuple[Adapter, Workload]]) -> None:
        """Runs once every workload is made: hook into another workload (locking into vmotion)."""

    def on_fault(self, workload: Workload, fault: FaultRecord) -> None:
        """Runs right after a fault took effect, for the workloads that react to one."""

    def outcome(self, raw: Any, t0_ns: int, end_ns: int, faults: list[FaultRecord]) -> Outcome:
        raise NotImplementedError


class _BetweenTwo(Adapter):
    """A workload from one host to another on one network (probe, iperf3)."""

    @property
    def name(self) -> str:
        return f"{self.kind} {self.spec.src}>{self.spec.dst} {self.spec.network}"


class ProbeAdapter(_BetweenTwo):
    kind = "probe"

    def make(self, lab, tracker, workdir):
        from vclab.workloads.probe import Endpoint, Probe

        s = self.spec
        return Probe(Endpoint(lab.node(s.src), address(lab, s.src, s.network)),
                     Endpoint(lab.node(s.dst), address(lab, s.dst, s.network)),
                     tracker, interval_ms=s.every, port=7370 + self.index,
                     workdir=workdir / f"probe{self.index}")

    def connect(self, workload, others):
        # When the other workloads' scheduled events happen (a vMotion starting): the noise
        # floor must not be measured across them.
        self.events_at_ms = [a.start_at_ms for a, _ in others if a.start_at_ms is not None]

    def outcome(self, raw, t0_ns, end_ns, faults):
        from vclab.workloads.probe import Probe

        out = Outcome()
        ab, ba, rtt = Probe.streams(raw)
        interval = ab.interval_ns
        margin = MARGIN_INTERVALS * interval
        applied = sorted(faults, key=lambda f: f.applied_ns)
        # The floor: only where no fault and no workload event is scheduled, after the warm-up
        # (ARP and MAC learning are done). Anything after an event may still be settling.
        busy = [f.applied_ns for f in applied] + [t0_ns + int(ms * 1e6)
                                                  for ms in getattr(self, "events_at_ms", [])]
        quiet = probe_metrics.quiet_windows(t0_ns, end_ns, busy, margin, settle_ns=end_ns - t0_ns)
        quiet = [(lo, hi) for lo, hi in quiet if hi - lo >= QUIET_MIN_INTERVALS * interval]
        floors = [probe_metrics.quiet_noise_floor(s, quiet) for s in (ab, ba)]
        floor = max((f for f in floors if f is not None), default=None)
        common = self.common
        if floor is not None:
            out.metrics.append(Metric(name="noise_floor_ms", value=floor, **common))
        for i, f in enumerate(applied):
            start = f.applied_ns - margin
            end = applied[i + 1].applied_ns - margin if i + 1 < len(applied) else end_ns
            uncertainty = int(float(f.detail.get("uncertainty_ms") or 0.0) * 1e6)
            results = [probe_metrics.fault_outage(s, f.applied_ns, start, end, uncertainty,
                                                  floor_ms=floor or 0.0) for s in (ab, ba)]
            at = max(results, key=lambda r: r.outage_ms)
            late = max(results, key=lambda r: r.late_disruption_ms)
            for name, value in (("outage_ms", at.outage_ms), ("loss_outage_ms", at.loss_outage_ms),
                                ("late_disruption_ms", late.late_disruption_ms),
                                ("lost", float(sum(r.lost for r in results)))):
                out.metrics.append(Metric(name=name, value=value, fault=f.name, **common))
        for s in (ab, ba):
            result = probe_metrics.analyse(s, start_ns=t0_ns, end_ns=end_ns)
            out.series.append(Series(name="gap_ms", points=[(_ms_since(t0_ns, g.end_ns), g.outage_ms)
                                                            for g in result.gaps], **common))
        if rtt:
            step = max(1, len(rtt) // 2000)  # keep the store small: the timeline needs shape only
            sent = sorted(raw["a"].sent_t)[: len(rtt)] if raw.get("a") else []
            if sent:
                out.series.append(Series(name="rtt_ms", points=[(_ms_since(t0_ns, t), r / 1e6)
                                                                for t, r in list(zip(sent, rtt))[::step]], **common))
        return out


class Iperf3Adapter(_BetweenTwo):
    kind = "iperf3"

    def make(self, lab, tracker, workdir, duration_s: float = 10.0):
        from vclab.workloads.iperf import Iperf3

        s = self.spec
        rate = None if s.rate == "max" else float(s.rate)
        return Iperf3(lab.node(s.dst), lab.node(s.src), address(lab, s.dst, s.network), tracker,
                      workdir / f"iperf{self.index}", protocol=s.protocol, duration_s=duration_s,
                      interval_s=0.1, rate_bps=rate, port=5201 + self.index, name=self.name)

    def outcome(self, raw, t0_ns, end_ns, faults):
        from vclab.workloads.iperf import Iperf3

        out = Outcome()
        common = self.common
        out.raw.append(Raw(self.name, json.dumps(raw.get("client", {})), "iperf3.json"))
        m = Iperf3.parse(raw)
        points = [(_ms_since(t0_ns, iv["t"] * 1e9 + (iv["end_s"] - iv["start_s"]) * 1e9), iv["bits_per_second"])
                  for iv in m["intervals"]]
        out.series.append(Series(name="throughput_bps", points=points, **common))
        out.metrics.append(Metric(name="throughput_bps", value=m["throughput_bps"], **common))
        for f in faults:
            t = _ms_since(t0_ns, f.applied_ns)
            during = [v for ts, v in points if t <= ts <= t + 1000]
            if during:
                out.metrics.append(Metric(name="throughput_during_fault_bps", value=min(during),
                                          fault=f.name, **common))
        return out


class HeartbeatsAdapter(Adapter):
    kind = "heartbeats"

    def config(self):
        """The HA timers: the product's published defaults, with the experiment's overrides."""
        from vclab.workloads.ha_model import HaConfig

        updates = {}
        if self.spec.failure_after is not None:
            updates["failed_s"] = self.spec.failure_after / 1e3
        if self.spec.isolation_after is not None:
            updates["isolation_policy_delay_s"] = self.spec.isolation_after / 1e3
        return HaConfig().model_copy(update=updates)

    def settings(self) -> dict:
        """What the report compares stalls with: when a host is declared failed or isolated."""
        c = self.config()
        return {"ha_failure_ms": c.failed_s * 1e3,
                "ha_isolation_ms": (c.election_after_s + c.election_s + c.isolation_ping_s) * 1e3}

    @property
    def traffic_class(self) -> str:
        return "management"

    def make(self, lab, tracker, workdir):
        from vclab.workloads.heartbeats import Heartbeats, HaMember

        cluster = lab.cluster
        mgmt = cluster.networks_of_kind("management")[0]
        members = []
        for i, name in enumerate(h for h, s in cluster.hypervisors.items() if mgmt in s.networks):
            members.append(HaMember(name, lab.node(name), address(lab, name, mgmt),
                                    "primary" if i == 0 else "secondary"))
        self.managers = []
        for name, s in cluster.management.items():
            if mgmt in s.networks:
                members.append(HaMember(name, lab.node(name), address(lab, name, mgmt), "manager"))
                self.managers.append(name)
                break
        iso = self.spec.isolation_address
        return Heartbeats(members, tracker, workdir / "ha", config=self.config(),
                          isolation_address=address(lab, iso, mgmt) if iso else None)

    def outcome(self, raw, t0_ns, end_ns, faults):
        from vclab.workloads.heartbeats import Heartbeats

        out = Outcome()
        common = self.common
        m = Heartbeats.parse(raw, failures={}, start=t0_ns / 1e9, end=end_ns / 1e9)
        out.metrics.append(Metric(name="false_failures", value=m["false_declaration_count"], **common))
        # Host-to-host heartbeats only: the management server's own beat is every 10 s.
        managers = getattr(self, "managers", [])
        gaps = [g for pair, g in m["heartbeat_gap_s"].items()
                if g is not None and not set(pair.split("->")) & set(managers)]
        if gaps:
            out.metrics.append(Metric(name="heartbeat_gap_ms", value=max(gaps) * 1e3, unit="ms", **common))
        for d in m["declarations"]:
            out.events.append(Event(self.name, _ms_since(t0_ns, d["t"] * 1e9),
                                    {"failed": "declared_failed", "isolated": "isolated"}.get(d["kind"], d["kind"]),
                                    {"agent": d["agent"], "subject": d["subject"]}))
        out.raw.append(Raw(self.name, json.dumps(raw["logs"]), "ha-logs.json"))
        return out


class _Migration(Workload):
    """A live migration (vMotion replay + the VM's real switch-over) run in a thread, so it
    can start at its scheduled time while faults go on being applied."""

    kind = "vmotion"

    def __init__(self, migration):
        self.migration = migration
        self.result: dict | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def check(self):
        self.migration.check()

    def start(self):
        def run():
            try:
                self.result = self.migration.run()
            except BaseException as e:  # reported by collect(): the repetition records why
                self.error = e

        self.thread = threading.Thread(target=run, name="vmotion", daemon=True)
        self.thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.thread is None or not self.thread.is_alive()

    def stop(self):
        # The migration ends by itself; its processes are the lab's to end at teardown.
        self.wait(0)

    def collect(self):
        if self.thread is not None and self.thread.is_alive():
            raise RuntimeError("the migration was still running when the repetition ended")
        if self.error is not None:
            raise self.error
        return self.result

    @staticmethod
    def parse(raw):
        return raw


class VmotionAdapter(Adapter):
    kind = "vmotion"

    @property
    def name(self) -> str:
        return f"vmotion {self.spec.vm}>{self.spec.to}"

    @property
    def start_at_ms(self) -> float:  # type: ignore[override]
        return self.spec.at

    @property
    def traffic_class(self) -> str:
        return "vmotion"

    def make(self, lab, tracker, workdir):
        from vclab.workloads.migration import LiveMigration

        vm = lab.cluster.vms[self.spec.vm]
        # The VM's outage is probed from a member of its first network that stays put.
        probe_from = None
        if vm.networks:
            others = [h for h, _ in lab.plan.networks[vm.networks[0]].members if h != self.spec.vm]
            probe_from = others[0] if others else None
        self.capture_dir = workdir / f"vmotion{self.index}" / f"vmotion{self.index}-capture"
        return _Migration(LiveMigration(lab, self.spec.vm, self.spec.to, workdir / f"vmotion{self.index}",
                                        storage=self.spec.mode, probe_from=probe_from, capture=True,
                                        measure_s=1.0, name=f"vmotion{self.index}"))

    def outcome(self, raw, t0_ns, end_ns, faults):
        out = Outcome()
        common = self.common
        v = raw["vmotion"]
        values = {"total_ms": v.get("total_s"), "downtime_ms": v.get("downtime_s"),
                  "model_total_ms": v.get("model_total_s"), "model_downtime_ms": v.get("model_downtime_s")}
        for name, seconds in values.items():
            if seconds is not None:
                out.metrics.append(Metric(name=name, value=seconds * 1e3, **common))
        out.metrics.append(Metric(name="switchover_ms", value=raw["switchover_ms"], **common))
        if raw.get("outage_ms") is not None:
            # what the VM itself lived through, measured by a probe to it
            out.metrics.append(Metric(name="vm_outage_ms", value=raw["outage_ms"], **common))
        if v.get("rounds"):
            out.events.extend(rounds_as_events(self.name, [{**r, "index": r["round"]} for r in v["rounds"]],
                                               _ms_since(t0_ns, v["t_start"] * 1e9)))
        attached = raw["switchover_ns"].get("attached_ns")
        if attached:
            out.events.append(Event(self.name, _ms_since(t0_ns, attached), "switch_over",
                                    {"to": raw["to"], "steps_ms": raw["steps_ms"]}))
        if raw.get("capture"):
            # the pcaps stay in the repetition's work directory; the store keeps where, and what
            # they hold (RARP / gratuitous ARP counts after the switch-over)
            out.raw.append(Raw(self.name, json.dumps({"pcap_dir": str(self.capture_dir),
                                                      "counts": raw["capture"].get("counts")}),
                               "capture.json"))
        return out


ADAPTERS = {"probe": ProbeAdapter, "iperf3": Iperf3Adapter, "heartbeats": HeartbeatsAdapter,
            "vmotion": VmotionAdapter}


def adapter_for(entry: WorkloadEntry, index: int) -> Adapter | None:
    cls = ADAPTERS.get(entry.kind)
    return cls(entry, index) if cls else None


class _IscsiGroup(Workload):
    """One tgtd on the array and one initiator per hypervisor, started and stopped together."""

    kind = "iscsi"

    def __init__(self, target, initiators):
        self.target, self.initiators = target, initiators

    def check(self):
        for i in self.initiators:
            i.check()

    def start(self):
        self.target.start()
        try:
            for i in self.initiators:
                i.start()
        except BaseException:
            self.stop()
            raise

    def stop(self):
        for i in self.initiators:
            i.stop()
        self.target.stop()

    def collect(self):
        return {str(getattr(i.host, "name", k)): i.collect() for k, i in enumerate(self.initiators)}

    @staticmethod
    def parse(raw):
        from vclab.workloads.iscsi import parse

        return {host: parse(r) for host, r in raw.items()}


class IscsiAdapter(Adapter):
    kind = "iscsi"

    @property
    def traffic_class(self) -> str:
        return "storage"

    def _array(self, cluster) -> str:
        return self.spec.array or sorted(cluster.storage)[0]

    @property
    def name(self) -> str:
        return f"iscsi {','.join(self.spec.hosts)} {self.spec.lun}"

    def make(self, lab, tracker, workdir):
        from vclab.workloads.iscsi import Iscsi
        from vclab.workloads.iscsi_target import Chap, IscsiTarget

        cluster = lab.cluster
        array = self._array(cluster)
        spec = cluster.storage[array]
        nets = list(spec.portals)  # file order: the first portal is the preferred path
        chap = Chap(spec.chap.user, spec.chap.secret) if spec.chap else None
        target = IscsiTarget(lab.node(array), [address(lab, array, n) for n in nets], dict(spec.luns),
                             chap, tracker=tracker, workdir=workdir / f"iscsi{self.index}")
        initiators = []
        for k, host in enumerate(self.spec.hosts):
            # A host reaches the portals on the storage networks it is on; multipath uses them all.
            mine = [n for n in nets if n in cluster.hypervisors[host].networks]
            if not self.spec.multipath:
                mine = mine[:1]
            initiators.append(Iscsi.to(target, lab.node(host), self.spec.lun, tracker,
                                       portals=[address(lab, array, n) for n in mine],
                                       pattern=self.spec.pattern, mix=self.spec.mix, seed=k,
                                       login_timeout_s=10.0, start_timeout=40.0,
                                       name=f"iscsi {host}", workdir=workdir / f"iscsi{self.index}-{host}"))
        return _IscsiGroup(target, initiators)

    def outcome(self, raw, t0_ns, end_ns, faults):
        from vclab.workloads.iscsi import parse

        out = Outcome()
        applied = sorted(faults, key=lambda f: f.applied_ns)
        for host, r in raw.items():
            common = dict(workload=f"iscsi {host}", kind=self.kind, traffic_class=self.traffic_class)
            whole = parse(r)
            for name in ("iops", "throughput_bps"):
                if whole.get(name) is not None:
                    out.metrics.append(Metric(name=name, value=whole[name], **common))
            for name in ("longest_stall_ms",):
                if whole.get(name) is not None:
                    out.metrics.append(Metric(name=name, value=whole[name], **common))
            s = whole.get("series") or {}
            out.series.append(Series(name="latency_ms", points=[
                (_ms_since(t0_ns, r.get("trailer", {}).get("t_start_ns") or t0_ns) + t, v)
                for t, v in zip(s.get("t_ms", []), s.get("latency_max_ms", [])) if v], **common))
            for i, f in enumerate(applied):
                # Each fault is judged on the I/O that completed before the next one.
                nxt = applied[i + 1].applied_ns if i + 1 < len(applied) else end_ns
                window = {**r, "rows": [row for row in r.get("rows", []) if row[2] < nxt]}
                m = parse(window, f.applied_ns)
                if m.get("fault_stall_ms") is not None:
                    out.metrics.append(Metric(name="longest_stall_ms", value=m["fault_stall_ms"],
                                              fault=f.name, **common))
                if m.get("failover_ms") is not None:
                    out.metrics.append(Metric(name="failover_ms", value=m["failover_ms"], fault=f.name, **common))
        return out


ADAPTERS["iscsi"] = IscsiAdapter


# ---- locking: VM file locks on a shared datastore ----

class _HandoverLab:
    """The lab as one migration sees it: its switch-over also hands the VM's lock over. After
    the stop-and-copy the source releases the lock and the destination takes it, before the
    VM's ports join the destination (vMotion closes the VM's files on the source and opens
    them on the destination while the VM is stunned)."""

    def __init__(self, lab, group: "_LockGroup", vm: str) -> None:
        self._lab, self._group, self._vm = lab, group, vm

    def __getattr__(self, name: str):
        return getattr(self._lab, name)

    def move_vm(self, vm: str, to: str, between=None):
        if vm != self._vm or between is None:
            return self._lab.move_vm(vm, to, between)

        def switch_over() -> None:
            between()
            self._group.handover(vm, to)

        return self._lab.move_vm(vm, to, between=switch_over)


class _LockGroup(Workload):
    """tgtd on the array and one lock agent per host. start() has each VM's host take its
    lock; a host fault makes HA ask the VM's failover host to take it (on_fault), a vMotion
    hands it over (handover). stop() reads the LUN before the target goes (it removes it)."""

    kind = "locking"

    def __init__(self, target, manager, owners: dict[str, str], failover: dict[str, str],
                 restart_after_s: float) -> None:
        self.target, self.manager = target, manager
        self.owner = dict(owners)  # VM -> the host running it now
        self.failover, self.restart_after_s = failover, restart_after_s
        self.ids = {name: i + 1 for i, name in enumerate(manager.host_names)}
        self.restarts: list[dict] = []
        self.handovers: list[dict] = []
        self.migrations: list[Any] = []
        self.timers: list[threading.Timer] = []
        self.raw: dict | None = None
        self.started = False

    def agent(self, host: str):
        return self.manager.agents[self.ids[host] - 1]

    def check(self):
        self.manager.check()

    def start(self):
        self.target.start()
        self.started = True
        try:
            self.manager.start()
            for vm, host in self.owner.items():
                a = self.agent(host)
                mark = a.mark()
                a.send(f"acquire {vm}")
                a.wait_for("acquired", timeout=START_TIMEOUT_S, since=mark, vm=vm)
        except BaseException:
            self.stop()
            raise

    def restart(self, fault: FaultRecord) -> None:
        """HA restarts the VMs of a failed host on their failover hosts: each asks for the
        VM's lock and keeps asking (it breaks the lock once the owner's heartbeat is stale)."""
        for vm, host in list(self.owner.items()):
            if host != fault.target:
                continue
            taker = self.failover[vm]
            entry = {"vm": vm, "fault": fault.name, "fault_ns": fault.applied_ns,
                     "owner": host, "owner_id": self.ids[host], "taker": taker,
                     "taker_id": self.ids[taker]}
            self.owner[vm] = taker
            self.restarts.append(entry)

            def ask(a=self.agent(taker), vm=vm, entry=entry) -> None:
                if a.running():
                    entry["mark"] = a.mark()
                    entry["requested_ns"] = a.send(f"acquire {vm}")

            if self.restart_after_s > 0:
                t = threading.Timer(self.restart_after_s, ask)
                t.daemon = True
                self.timers.append(t)
                t.start()
            else:
                ask()

    def handover(self, vm: str, to: str, timeout: float = 10.0) -> None:
        source, dest = self.agent(self.owner[vm]), self.agent(to)
        mark_s, mark_d = source.mark(), dest.mark()
        sent = source.send(f"release {vm}")
        released = source.wait_for("released", timeout=timeout, since=mark_s, vm=vm)
        asked = dest.send(f"acquire {vm}")
        got = dest.wait_for("acquired", timeout=timeout, since=mark_d, vm=vm)
        self.handovers.append({"vm": vm, "from": self.owner[vm], "to": to,
                               "release_sent_ns": sent, "released_ns": released["t"],
                               "acquire_sent_ns": asked, "acquired_ns": got["t"],
                               "generation": got["generation"]})
        self.owner[vm] = to

    def stop(self):
        for t in self.timers:
            t.cancel()
        if not self.started:
            return
        self.manager.stop()
        if self.raw is None:
            try:
                self.raw = self.manager.collect()
            except (OSError, StopIteration) as e:
                self.raw = {"error": f"LUN not readable: {e}"}
        self.target.stop()
        self.started = False

    def collect(self):
        if self.raw is None:
            raise RuntimeError("the lock agents never ran")
        migrations = []
        for m in self.migrations:
            r = getattr(m, "result", None) or {}
            migrations.append({"vm": r.get("vm"), "switchover_ms": r.get("switchover_ms"),
                               "outage_ms": r.get("outage_ms")})
        return {**self.raw, "hosts": self.ids, "restarts": self.restarts,
                "handovers": self.handovers, "migrations": migrations}

    @staticmethod
    def parse(raw):
        from vclab.workloads.locking.workload import parse

        return parse(raw)


def locking_measurements(raw: dict[str, Any]) -> dict[str, Any]:
    """Pure: the locking workload's raw output -> per takeover and per handover, the times
    that matter, relative to the fault (or the release). Takeovers read the LUN for the
    owner's last write and the taker's first (issue times of writes that landed)."""
    from vclab.workloads.locking.workload import parse

    parsed = parse(raw)
    events = {int(h): evs for h, evs in raw.get("events", {}).items()}
    vm_index = raw.get("vms", {})
    lun = {int(k): v for k, v in raw.get("lun", {}).items()}
    takeovers = []
    for r in raw.get("restarts", []):
        fault_ns = r["fault_ns"]
        evs = events.get(r["taker_id"], [])
        got = next((e for e in evs[r.get("mark", 0):] if e["event"] == "acquired"
                    and e.get("vm") == r["vm"] and e["t"] >= fault_ns), None)
        out = {"vm": r["vm"], "fault": r["fault"], "owner": r["owner"], "taker": r["taker"],
               "requested_ms": (r["requested_ns"] - fault_ns) / 1e6 if "requested_ns" in r else None,
               "how": got.get("how") if got else None}
        epochs = lun.get(vm_index.get(r["vm"], -1), {}).get("epochs", [])
        if got is not None:
            out["taker_broke_ms"] = (got["t"] - fault_ns) / 1e6
            out["break_rmw_ms"] = got.get("rmw_ms")  # the atomic update itself, on a busy fabric
            new = next((e for e in epochs if e["generation"] == got["generation"]), None)
            old = [e for e in epochs if e["generation"] < got["generation"]
                   and r["owner_id"] in e["hosts"]]
            if new is not None:
                out["vm_restarted_ms"] = (new["first_ns"] - fault_ns) / 1e6
                out["vm_restarted_ns"] = new["first_ns"]
            if old:
                out["owner_stopped_ms"] = (old[-1]["last_ns"] - fault_ns) / 1e6
        lost = next((e for e in events.get(r["owner_id"], []) if e["event"] == "lease_lost"
                     and e["t"] >= fault_ns - 2e9), None)  # a gate that closed up to 2 s late
        if lost is not None:
            out["owner_lease_lost_ms"] = (lost["t"] - fault_ns) / 1e6
        verdict = next((e for e in events.get(r["owner_id"], []) if e["event"] in
                        ("lock_lost", "lock_kept") and e.get("vm") == r["vm"]
                        and e["t"] >= fault_ns), None)
        if verdict is not None:
            out["owner_learned"] = verdict["event"]
            out["owner_learned_ns"] = verdict["t"]
        takeovers.append(out)
    handovers = []
    downtime = {m["vm"]: m for m in raw.get("migrations", []) if m.get("vm")}
    for h in raw.get("handovers", []):
        out = {"vm": h["vm"], "from": h["from"], "to": h["to"],
               "lock_handover_ms": (h["acquired_ns"] - h["release_sent_ns"]) / 1e6,
               "release_ms": (h["released_ns"] - h["release_sent_ns"]) / 1e6,
               "acquire_ms": (h["acquired_ns"] - h["acquire_sent_ns"]) / 1e6,
               "at_ns": h["release_sent_ns"]}
        down = (downtime.get(h["vm"]) or {}).get("switchover_ms")
        if down:
            out["downtime_ms"] = down
            out["handover_share"] = out["lock_handover_ms"] / down
        handovers.append(out)
    complete = all(c.get("complete", True) for c in lun.values())
    return {"atomic_primitive": parsed["atomic_primitive"], "dual_writers": parsed["dual_writers"],
            "lun_complete": complete, "takeovers": takeovers, "handovers": handovers,
            "overlaps": {vm: c.get("overlaps", []) for vm, c in lun.items() if c.get("overlaps")}}


# A shared, busy Open vSwitch can stall every port for seconds: keep logging in that long.
START_TIMEOUT_S = 40.0


class LockingAdapter(Adapter):
    kind = "locking"

    @property
    def traffic_class(self) -> str:
        return "storage"

    @property
    def name(self) -> str:
        return f"locking {self.spec.lun}"

    def assignments(self, cluster) -> tuple[dict[str, str], dict[str, str]]:
        """(VM -> host running it, VM -> its failover host: the one named, else the first
        other host that mounts the datastore)."""
        owners = {vm: cluster.vms[vm].host for vm in self.spec.vms}
        failover = {vm: self.spec.failover_host or next(h for h in self.spec.hosts if h != host)
                    for vm, host in owners.items()}
        return owners, failover

    def make(self, lab, tracker, workdir):
        from vclab.workloads.locking.workload import LockManager
        from vclab.workloads.iscsi_target import IscsiTarget

        cluster = lab.cluster
        array = self.spec.array or sorted(cluster.storage)[0]
        spec = cluster.storage[array]
        nets = list(spec.portals)
        # Its own LUN file: the lock area needs only the lock records and the VMs' disk logs.
        target = IscsiTarget(lab.node(array), [address(lab, array, n) for n in nets],
                             {self.spec.lun: int(spec.luns[self.spec.lun])}, tracker=tracker,
                             workdir=workdir / f"locking{self.index}")
        portals = [[address(lab, array, n) for n in nets if n in cluster.hypervisors[h].networks]
                   for h in self.spec.hosts]
        manager = LockManager(target, [lab.node(h) for h in self.spec.hosts], tracker,
                              lun=self.spec.lun, vms={vm: i for i, vm in enumerate(self.spec.vms)},
                              timing=self.spec.timing(), workdir=workdir / f"locking{self.index}",
                              primitive=self.spec.primitive, portals=portals,
                              host_names=list(self.spec.hosts), start_timeout=START_TIMEOUT_S)
        owners, failover = self.assignments(cluster)
        return _LockGroup(target, manager, owners, failover, self.spec.restart_after / 1e3)

    def connect(self, workload, others):
        for a, w in others:
            if a.kind == "vmotion" and a.spec.vm in self.spec.vms and hasattr(w, "migration"):
                w.migration.lab = _HandoverLab(w.migration.lab, workload, a.spec.vm)
                workload.migrations.append(w)

    def on_fault(self, workload, fault):
        if fault.kind == "host" and fault.action in ("crash", "storage-partition"):
            workload.restart(fault)

    def outcome(self, raw, t0_ns, end_ns, faults):
        out = Outcome()
        common = self.common
        if "error" in raw:
            raise RuntimeError(raw["error"])
        m = locking_measurements(raw)
        out.metrics.append(Metric(name="dual_writers", value=float(m["dual_writers"]), **common))
        out.metrics.append(Metric(name="lun_evidence_complete", value=float(m["lun_complete"]),
                                  **common))
        for ev in (e for evs in raw.get("events", {}).values() for e in evs):
            if ev["event"] == "start":
                out.events.append(Event(self.name, _ms_since(t0_ns, ev["t"]), "lock_manager_started",
                                        {"host": ev["host"], "atomic_primitive": ev["atomic_primitive"]}))
            elif ev["event"] in ("acquired", "released", "lease_lost", "lock_lost", "lock_kept",
                                 "path_down", "path_up", "preempted"):
                detail = {k: v for k, v in ev.items() if k in ("vm", "how", "generation", "portal",
                                                               "previous_owner", "error")}
                out.events.append(Event(self.name, _ms_since(t0_ns, ev["t"]), ev["event"], detail))
        for t in m["takeovers"]:
            for name in ("taker_broke_ms", "break_rmw_ms", "vm_restarted_ms", "owner_stopped_ms",
                         "owner_lease_lost_ms"):
                if t.get(name) is not None:
                    out.metrics.append(Metric(name=name, value=t[name], fault=t["fault"], **common))
            if t.get("vm_restarted_ms") is not None:
                # the VM writes again elsewhere: the takeover as the VM lives it
                out.metrics.append(Metric(name="takeover_ms", value=t["vm_restarted_ms"],
                                          fault=t["fault"], **common))
                out.events.append(Event(self.name, _ms_since(t0_ns, t["vm_restarted_ns"]),
                                        "vm_restarted", {"vm": t["vm"], "on": t["taker"]}))
        for h in m["handovers"]:
            for name in ("lock_handover_ms", "handover_share"):
                if h.get(name) is not None:
                    out.metrics.append(Metric(name=name, value=h[name], unit="" if name ==
                                              "handover_share" else "ms", **common))
            out.events.append(Event(self.name, _ms_since(t0_ns, h["at_ns"]), "lock_handover",
                                    {k: h[k] for k in ("vm", "from", "to", "release_ms", "acquire_ms")}))
        summary = {k: m[k] for k in ("atomic_primitive", "dual_writers", "lun_complete",
                                     "takeovers", "handovers", "overlaps")}
        out.raw.append(Raw(self.name, json.dumps(summary, default=str), "locking.json"))
        out.raw.append(Raw(self.name, json.dumps(raw, default=str), "lock-agents.json"))
        return out


ADAPTERS["locking"] = LockingAdapter
