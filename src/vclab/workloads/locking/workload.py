"""Lock managers on hypervisors, driven like the cluster would: acquire on power-on, release on
power-off and vMotion handover, and what a crash or a lost storage path does to the locks.

`LockAgentProcess` runs one agent (agent.py) in a host's namespace and talks to it over its
stdin/stdout. `LockManager` is the Workload (several agents, one per hypervisor). The three
experiments, for the runner and the root tests: `crash_takeover`, `storage_partition`,
`handover`; `run_scenario` runs one of them end to end and checks the LUN afterwards.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from vclab.workloads.locking import checker
from vclab.workloads.locking.model import Timing
from vclab.lab.procs import ProcessTracker
from vclab.workloads.agent import Agent
from vclab.workloads.base import Workload, WorkloadError
from vclab.workloads.iscsi.target import IscsiTarget


class LockAgentProcess:
    """One host's lock manager agent (host id `host_id`) on `node`."""

    def __init__(self, node: Any, host_id: int, portals: list[str], iqn: str, lun: int,
                 tracker: ProcessTracker, *, timing: Timing, vms: dict[str, int], workdir: Path,
                 primitive: str = "auto", start_timeout: float = 20.0) -> None:
        self.node, self.host_id, self.portals, self.iqn, self.lun = (
            node, host_id, list(portals), iqn, lun)
        self.tracker, self.timing, self.vms = tracker, timing, dict(vms)
        self.workdir, self.primitive, self.start_timeout = Path(workdir), primitive, start_timeout
        self.name = f"lock-{getattr(node, 'name', host_id)}"
        self.agent: Agent | None = None
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self.killed_ns: int | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.jsonl"

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "vclab.workloads.locking.agent", "--host-id", str(self.host_id),
                "--target", self.iqn, "--lun", str(self.lun), "--timing",
                self.timing.model_dump_json(), "--primitive", self.primitive,
                "--start-timeout-s", f"{max(1.0, self.start_timeout - 5):g}",
                "--log", str(self.log)]
        for p in self.portals:
            args += ["--portal", p]
        for name, index in self.vms.items():
            args += ["--vm", f"{name}={index}"]
        return args

    def start(self) -> dict:
        self.launch()
        return self.ready()

    def launch(self) -> None:
        """Start the agent and return at once (ready() waits for it to log in)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.agent = Agent(self.node, self.command(), self.tracker, self.name, stdin=True,
                           stderr=self.workdir / f"{self.name}.err").spawn()
        self._reader = threading.Thread(target=self._read, daemon=True, name=self.name)
        self._reader.start()

    def ready(self) -> dict:
        """Its `ready` event; stops it and raises if it could not start."""
        try:
            return self.wait_for(("ready", "error"), timeout=self.start_timeout, check=False)
        finally:
            failed = [e for e in self.events if e["event"] == "error"]
            if failed or not any(e["event"] == "ready" for e in self.events):
                self.stop()
                detail = failed[0]["message"] if failed else self.stderr()
                raise WorkloadError(f"{self.name}: lock agent did not start: {detail}")

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.agent.proc if self.agent is not None else None

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def stderr(self) -> str:
        path = self.workdir / f"{self.name}.err"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""

    def send(self, line: str) -> int:
        """Send a command; CLOCK_REALTIME ns just before it was written."""
        assert self.agent is not None
        return self.agent.send(line)

    def wait_for(self, kinds: str | tuple[str, ...], timeout: float, since: int = 0,
                 check: bool = True, **match: Any) -> dict:
        """The first event of one of `kinds` (matching `match`) at index >= since."""
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events[since:]:
                    if ev["event"] in kinds and all(ev.get(k) == v for k, v in match.items()):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None
                                 and not (self._reader and self._reader.is_alive())):
                    break
                self._cond.wait(min(left, 0.1))
        if check:
            raise WorkloadError(f"{self.name}: no {kinds} {match or ''} within {timeout:g} s; "
                                f"last events {self.events[-5:]}; {self.stderr()[-500:]}")
        return {}

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def kill(self) -> int:
        """SIGKILL: a host crash as its lock manager sees it. CLOCK_REALTIME ns of the kill."""
        assert self.agent is not None
        self.killed_ns = self.agent.kill()
        return self.killed_ns

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.agent is None or self.agent.proc is None:
            return
        # "stop" on its stdin: it releases its locks and logs out before it exits.
        self.agent.stop(drain_s=timeout, how="stop", grace=1.0)
        if self._reader:
            self._reader.join(timeout=2)


class LockManager(Workload):
    """One lock agent per hypervisor (host ids 1..n in `hosts` order), on one LUN of
    `target`. collect() adds what the checker reads on the LUN while the target still runs."""

    kind = "locking"

    def __init__(self, target: IscsiTarget, hosts: list[Any], tracker: ProcessTracker, *,
                 lun: str = "datastore1", vms: dict[str, int] | None = None,
                 timing: Timing | None = None, workdir: Path, primitive: str = "auto",
                 portals: list[list[str]] | None = None,
                 host_names: list[str] | None = None, start_timeout: float = 20.0) -> None:
        """`portals[i]`: the portals host i reaches (default: all of the target's), in the
        order it tries them; `host_names`: the user's names of the hosts (for messages)."""
        self.target, self.hosts, self.tracker, self.lun = target, list(hosts), tracker, lun
        self.vms = vms or {"vm1": 0}
        self.timing = timing or Timing()
        self.workdir, self.primitive = Path(workdir), primitive
        self.host_names = host_names or [str(getattr(h, "name", i + 1))
                                         for i, h in enumerate(self.hosts)]
        portals = portals or [target.portals] * len(self.hosts)
        self.agents = [LockAgentProcess(h, i + 1, portals[i] or target.portals, target.iqn,
                                        target.lun_numbers[lun], tracker, timing=self.timing,
                                        vms=self.vms, workdir=self.workdir, primitive=primitive,
                                        start_timeout=start_timeout)
                       for i, h in enumerate(self.hosts)]

    def check(self) -> None:
        problems = list(self.timing.problems())
        if self.lun not in self.target.lun_numbers:
            problems.append(f"target has no LUN {self.lun!r}")
        try:
            ctypes.CDLL("libiscsi.so.7")
        except OSError as e:
            problems.append(f"libiscsi is not installed (apt-get install libiscsi7): {e}")
        for h in self.hosts:
            if not callable(getattr(h, "popen", None)):
                problems.append(f"{h!r} cannot run processes (no popen)")
        if problems:
            raise WorkloadError("locking: " + "; ".join(problems))

    def start(self) -> None:
        # All log in at once: on a busy machine one login can take seconds.
        try:
            for a in self.agents:
                a.launch()
            for a in self.agents:
                a.ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for a in self.agents:
            a.stop()

    def lun_path(self) -> Path:
        return next(lun.path for lun in self.target.luns if lun.name == self.lun)

    def collect(self) -> dict[str, Any]:
        """Agents' events and the LUN as the checker reads it (call before the target stops)."""
        lun = checker.scan_image(self.lun_path(), sorted(self.vms.values()))
        return {"events": {a.host_id: list(a.events) for a in self.agents},
                "vms": self.vms, "timing": self.timing.model_dump(),
                "lun": {vm: checker.check(bs) for vm, bs in lun["blocks"].items()},
                "heartbeats": {h: hb.__dict__ for h, hb in lun["heartbeats"].items()},
                "locks": {vm: rec.__dict__ for vm, rec in lun["locks"].items()}}

    @staticmethod
    def parse(raw: dict[str, Any]) -> dict[str, Any]:
        return parse(raw)


def parse(raw: dict[str, Any]) -> dict[str, Any]:
    """Pure: events + LUN check -> the atomic primitive used, lock timelines, dual writers."""
    events: dict[Any, list[dict]] = raw.get("events", {})
    prims = {e["atomic_primitive"] for evs in events.values() for e in evs
             if e["event"] == "start"}
    acquired = [{"host": int(h), **{k: e.get(k) for k in ("t", "vm", "generation", "how",
                                                           "waited_ms", "rmw_ms")}}
                for h, evs in events.items() for e in evs if e["event"] == "acquired"]
    released = [{"host": int(h), **{k: e.get(k) for k in ("t", "vm", "generation", "rmw_ms")}}
                for h, evs in events.items() for e in evs if e["event"] == "released"]
    lease_lost = [{"host": int(h), "t": e["t"]} for h, evs in events.items() for e in evs
                  if e["event"] == "lease_lost"]
    lun = raw.get("lun", {})
    return {
        "atomic_primitive": prims.pop() if len(prims) == 1 else sorted(prims),
        "acquisitions": sorted(acquired, key=lambda a: a["t"]),
        "releases": sorted(released, key=lambda a: a["t"]),
        "lease_losses": sorted(lease_lost, key=lambda a: a["t"]),
        "dual_writers": sum(c["dual_writers"] for c in lun.values()),
        "epochs": {vm: c["epochs"] for vm, c in lun.items()},
        "gaps_ms": {vm: [g["gap_ms"] for g in c["gaps"]] for vm, c in lun.items()},
    }


# ---- the experiments ----

def crash_takeover(owner: LockAgentProcess, taker: LockAgentProcess, vm: str,
                   cut: Callable[[], Any], run_s: float = 1.0, after_s: float = 1.0) -> dict:
    """`owner` runs the VM; `taker` wants it (HA would restart it there). Crash the owner
    (SIGKILL its agent, then `cut` its storage link): when does the taker break the lock?"""
    t = owner.timing
    owner.send(f"acquire {vm}")
    owner.wait_for("acquired", timeout=10, vm=vm)
    time.sleep(run_s)
    mark = taker.mark()
    taker.send(f"acquire {vm}")
    busy = taker.wait_for("busy", timeout=5, since=mark, vm=vm)
    crash_ns = owner.kill()
    cut()
    got = taker.wait_for("acquired", timeout=t.break_after_s + 10, since=mark, vm=vm)
    time.sleep(after_s)
    return {"fault_ns": crash_ns, "crash_ns": crash_ns, "acquired": got,
            "watch_started_ns": busy["t"], "takeover_ms": (got["t"] - crash_ns) / 1e6}


def storage_partition(owner: LockAgentProcess, taker: LockAgentProcess, vm: str,
                      cut: Callable[[], Any], restore: Callable[[], Any], run_s: float = 1.0,
                      restore_after_s: float | None = None) -> dict:
    """Cut only the owner's storage path (it keeps running and listening). Does it stop
    writing before the taker breaks the lock? After `restore`, does it learn it lost it?"""
    t = owner.timing
    owner.send(f"acquire {vm}")
    owner.wait_for("acquired", timeout=10, vm=vm)
    time.sleep(run_s)
    mark_o, mark_t = owner.mark(), taker.mark()
    taker.send(f"acquire {vm}")
    taker.wait_for("busy", timeout=5, since=mark_t, vm=vm)
    cut_ns = time.time_ns()
    cut()
    lost = owner.wait_for("lease_lost", timeout=t.lease_s + 10, since=mark_o)
    got = taker.wait_for("acquired", timeout=t.break_after_s + 10, since=mark_t, vm=vm)
    time.sleep(restore_after_s if restore_after_s is not None else 0.5)
    restore_ns = time.time_ns()
    restore()
    verdict = owner.wait_for(("lock_lost", "lock_kept"), timeout=15, since=mark_o, vm=vm)
    return {"fault_ns": cut_ns, "cut_ns": cut_ns, "restore_ns": restore_ns, "lease_lost": lost,
            "acquired": got,
            "owner_after_restore": verdict["event"],
            "stop_before_takeover_ms": (got["t"] - lost["t"]) / 1e6,
            "lease_lost_after_cut_ms": (lost["t"] - cut_ns) / 1e6,
            "takeover_ms": (got["t"] - cut_ns) / 1e6}


def handover(source: LockAgentProcess, dest: LockAgentProcess, vm: str,
             run_s: float = 1.0) -> dict:
    """The lock part of a vMotion switchover: the source releases, then the destination
    acquires. Its length is a share of the migration's downtime."""
    source.send(f"acquire {vm}")
    source.wait_for("acquired", timeout=10, vm=vm)
    time.sleep(run_s)
    mark_s, mark_d = source.mark(), dest.mark()
    t0 = source.send(f"release {vm}")
    rel = source.wait_for("released", timeout=10, since=mark_s, vm=vm)
    t1 = dest.send(f"acquire {vm}")
    got = dest.wait_for("acquired", timeout=10, since=mark_d, vm=vm)
    time.sleep(0.3)
    return {"fault_ns": t0, "release_sent_ns": t0, "released": rel, "acquired": got,
            "handover_ms": (got["t"] - t0) / 1e6, "release_ms": (rel["t"] - t0) / 1e6,
            "acquire_ms": (got["t"] - t1) / 1e6}


def run_scenario(scenario: str, target: IscsiTarget, owner: Any, taker: Any,
                 tracker: ProcessTracker, *, workdir: Path, timing: Timing | None = None,
                 cut: Callable[[], Any] = lambda: None, restore: Callable[[], Any] = lambda: None,
                 lun: str = "datastore1", vm: str = "vm1", vm_index: int = 0,
                 primitive: str = "auto") -> dict[str, Any]:
    """One experiment end to end, for the runner: `scenario` is crash | partition | handover;
    `cut`/`restore` break and mend the owner's storage path. Returns the scenario's
    measurements, the parsed events and the LUN check (dual_writers must be 0), and
    `disturbed`: the path events any agent saw before the fault (a shared, busy switch can
    stall a path on its own; such a run measures that stall, not the scenario)."""
    if scenario not in SCENARIOS:
        raise WorkloadError(f"scenario {scenario!r} is not one of {', '.join(SCENARIOS)}")
    mgr = LockManager(target, [owner, taker], tracker, lun=lun, vms={vm: vm_index},
                      timing=timing, workdir=workdir, primitive=primitive)
    mgr.check()
    mgr.start()
    try:
        a, b = mgr.agents
        if scenario == "crash":
            res = crash_takeover(a, b, vm, cut)
        elif scenario == "partition":
            res = storage_partition(a, b, vm, cut, restore)
        else:
            res = handover(a, b, vm)
    finally:
        mgr.stop()
        restore()
    raw = mgr.collect()
    disturbed = [(a.host_id, e["event"]) for a in mgr.agents for e in a.events
                 if e["event"] in ("path_down", "lease_lost") and e["t"] < res["fault_ns"]]
    return {"scenario": scenario, **res, **parse(raw), "disturbed": disturbed, "raw": raw}


SCENARIOS = ("crash", "partition", "handover")
