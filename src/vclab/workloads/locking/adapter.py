"""The locking entry of an experiment: VM file locks on a shared datastore, taken over after a
host fault and handed over by a vMotion; the times that matter and whether two ever wrote."""

from __future__ import annotations

import json
import threading
from typing import Any

from vclab.results.model import Event, FaultRecord, Raw
from vclab.workloads.adapter import Adapter, MetricInfo, Outcome, address, ms_since
from vclab.workloads.base import Workload
from vclab.workloads.iscsi.target import IscsiTarget
from vclab.workloads.locking.spec import LockingSpec
from vclab.workloads.locking.workload import LockManager, parse

# A shared, busy Open vSwitch can stall every port for seconds: keep logging in that long.
START_TIMEOUT_S = 40.0


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
        return parse(raw)


def locking_measurements(raw: dict[str, Any]) -> dict[str, Any]:
    """Pure: the locking workload's raw output -> per takeover and per handover, the times
    that matter, relative to the fault (or the release). Takeovers read the LUN for the
    owner's last write and the taker's first (issue times of writes that landed)."""
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


class LockingAdapter(Adapter):
    spec_type = LockingSpec
    # Shown as context, without a winner, as before they were declared.
    metrics = tuple(MetricInfo(name, section="context") for name in (
        "dual_writers", "lun_evidence_complete", "taker_broke_ms", "break_rmw_ms",
        "vm_restarted_ms", "owner_stopped_ms", "owner_lease_lost_ms", "takeover_ms",
        "lock_handover_ms", "handover_share"))

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

    def make(self, lab, tracker, workdir, duration_s):
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
        # A vMotion of a locked VM hands its lock over inside its switch-over: after the
        # stop-and-copy the source releases the lock and the destination takes it, before the
        # VM's ports join the destination (vMotion closes the VM's files on the source and
        # opens them on the destination while the VM is stunned).
        for a, w in others:
            migration = getattr(w, "migration", None)
            if migration is not None and migration.vm in self.spec.vms:
                migration.on_switchover.append(workload.handover)
                workload.migrations.append(w)

    def on_fault(self, workload, fault):
        if fault.kind == "host" and fault.action in ("crash", "storage-partition"):
            workload.restart(fault)

    def outcome(self, raw, t0_ns, end_ns, faults):
        out = Outcome()
        if "error" in raw:
            raise RuntimeError(raw["error"])
        m = locking_measurements(raw)
        out.metrics.append(self.metric("dual_writers", float(m["dual_writers"])))
        out.metrics.append(self.metric("lun_evidence_complete", float(m["lun_complete"])))
        for ev in (e for evs in raw.get("events", {}).values() for e in evs):
            if ev["event"] == "start":
                out.events.append(Event(self.name, ms_since(t0_ns, ev["t"]), "lock_manager_started",
                                        {"host": ev["host"], "atomic_primitive": ev["atomic_primitive"]}))
            elif ev["event"] in ("acquired", "released", "lease_lost", "lock_lost", "lock_kept",
                                 "path_down", "path_up", "preempted"):
                detail = {k: v for k, v in ev.items() if k in ("vm", "how", "generation", "portal",
                                                               "previous_owner", "error")}
                out.events.append(Event(self.name, ms_since(t0_ns, ev["t"]), ev["event"], detail))
        for t in m["takeovers"]:
            for name in ("taker_broke_ms", "break_rmw_ms", "vm_restarted_ms", "owner_stopped_ms",
                         "owner_lease_lost_ms"):
                if t.get(name) is not None:
                    out.metrics.append(self.metric(name, t[name], fault=t["fault"]))
            if t.get("vm_restarted_ms") is not None:
                # the VM writes again elsewhere: the takeover as the VM lives it
                out.metrics.append(self.metric("takeover_ms", t["vm_restarted_ms"], fault=t["fault"]))
                out.events.append(Event(self.name, ms_since(t0_ns, t["vm_restarted_ns"]),
                                        "vm_restarted", {"vm": t["vm"], "on": t["taker"]}))
        for h in m["handovers"]:
            for name in ("lock_handover_ms", "handover_share"):
                if h.get(name) is not None:
                    out.metrics.append(self.metric(name, h[name]))
            out.events.append(Event(self.name, ms_since(t0_ns, h["at_ns"]), "lock_handover",
                                    {k: h[k] for k in ("vm", "from", "to", "release_ms", "acquire_ms")}))
        summary = {k: m[k] for k in ("atomic_primitive", "dual_writers", "lun_complete",
                                     "takeovers", "handovers", "overlaps")}
        out.raw.append(Raw(self.name, json.dumps(summary, default=str), "locking.json"))
        out.raw.append(Raw(self.name, json.dumps(raw, default=str), "lock-agents.json"))
        return out

