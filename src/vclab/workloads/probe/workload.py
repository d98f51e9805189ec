"""The ms-resolution UDP probe between two endpoints: vclab's measuring stick.

One agent (agent.py) runs in each endpoint's namespace; each sends to the other every interval
and logs what it sent and received. `parse` turns the two logs into outage (timestamp and
loss methods, each +-interval), loss, reordering, duplicates, one-way delay and RTT.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from vclab.lab.procs import ProcessTracker
from vclab.workloads.probe import agent as probe_agent
from vclab.workloads.probe import metrics as probe_metrics
from vclab.workloads.agent import Agent
from vclab.workloads.base import Workload, WorkloadError


class Node(Protocol):
    """Anything that runs a command in its network namespace: a Mininet host, a NetnsNode."""

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen: ...


@dataclass
class Endpoint:
    node: Node
    ip: str

    @property
    def name(self) -> str:
        return str(getattr(self.node, "name", self.ip))


class Probe(Workload):
    """Bidirectional UDP probes between `a` and `b` until stop()."""

    kind = "probe"

    def __init__(self, a: Endpoint | tuple[Node, str], b: Endpoint | tuple[Node, str],
                 tracker: ProcessTracker, *, interval_ms: float = 1.0, port: int = 7370,
                 size: int = 0, rt_priority: int = 10, workdir: Path | None = None,
                 start_timeout: float = 10.0) -> None:
        self.a = a if isinstance(a, Endpoint) else Endpoint(*a)
        self.b = b if isinstance(b, Endpoint) else Endpoint(*b)
        self.tracker = tracker
        self.interval_ms = interval_ms
        self.port = port
        self.size = size
        self.rt_priority = rt_priority
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        self.workdir = workdir
        self.procs: dict[str, Agent] = {}
        self.ready_ns: dict[str, int] = {}

    def check(self) -> None:
        problems = []
        if not self.interval_ms > 0:
            problems.append(f"interval_ms must be > 0, not {self.interval_ms}")
        if not 0 < self.port < 65536:
            problems.append(f"port {self.port} is not a UDP port")
        for side, ep in (("a", self.a), ("b", self.b)):
            if not callable(getattr(ep.node, "popen", None)):
                problems.append(f"endpoint {side}: {ep.node!r} cannot run commands (no popen)")
            try:
                ipaddress.IPv4Address(ep.ip)
            except ValueError:
                problems.append(f"endpoint {side}: {ep.ip!r} is not an IPv4 address")
        if importlib.util.find_spec("vclab.workloads.probe.agent") is None:
            problems.append(f"{sys.executable} cannot import vclab.workloads.probe.agent")
        if problems:
            raise WorkloadError("probe: " + "; ".join(problems))

    def _args(self, me: Endpoint, peer: Endpoint, out: Path, session: int) -> list[str]:
        args = [sys.executable, "-m", "vclab.workloads.probe.agent", "--bind", me.ip,
                "--peer", peer.ip, "--port", str(self.port), "--interval-ms", str(self.interval_ms),
                "--session", str(session), "--rt-priority", str(self.rt_priority),
                "--out", str(out)]
        return args + (["--size", str(self.size)] if self.size else [])

    def start(self) -> None:
        if self.procs:
            raise WorkloadError("probe: already started")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="vclab-probe-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        session = random.getrandbits(32)
        for side, me, peer in (("a", self.a, self.b), ("b", self.b, self.a)):
            (self.workdir / f"{side}.probe").unlink(missing_ok=True)
            self.procs[side] = Agent(
                me.node, self._args(me, peer, self.workdir / f"{side}.probe", session),
                self.tracker, f"probe-{side}:{me.name}",
                stderr=self.workdir / f"{side}.err").spawn()
        deadline = time.monotonic() + self.start_timeout
        for side, agent in self.procs.items():
            # Blocks until the agent is receiving, so a fault applied after start() is seen.
            try:
                self.ready_ns[side] = agent.expect("ready", deadline - time.monotonic()).t_ns
            except WorkloadError:
                err = agent.stderr_tail().strip()
                self.stop()
                raise WorkloadError(f"probe agent {side} did not start: {err or 'no output'}") from None

    def stop(self) -> None:
        # Signal both first so they stop sending at the same moment; then wait for each to
        # write its log (it lingers to catch its peer's last probes).
        for agent in self.procs.values():
            agent.ask_to_stop()
        for agent in self.procs.values():
            agent.stop(drain_s=probe_agent.LINGER_S + 5, how="")

    def collect(self) -> dict[str, Any]:
        """{'a': AgentLog | None, 'b': ..., 'errors': {...}}: the two agents' logs."""
        raw: dict[str, Any] = {"interval_ns": int(self.interval_ms * 1e6), "errors": {}}
        for side in ("a", "b"):
            path = self.workdir / f"{side}.probe" if self.workdir else None
            try:
                raw[side] = probe_agent.read_log(path) if path else None
            except (OSError, ValueError) as e:
                raw[side] = None
                err = self.workdir / f"{side}.err" if self.workdir else None
                detail = err.read_text(errors="replace").strip() if err and err.exists() else ""
                raw["errors"][side] = f"{e}{': ' + detail if detail else ''}"
        return raw

    def cleanup(self) -> None:
        """Remove the temporary directory the logs were written to (if this probe made it)."""
        if self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def streams(raw: dict[str, Any]) -> tuple[probe_metrics.Stream, probe_metrics.Stream, list[int]]:
        """The a->b and b->a streams and RTT samples (ns) from two agent logs."""
        a: probe_agent.AgentLog | None = raw.get("a")
        b: probe_agent.AgentLog | None = raw.get("b")
        interval = raw["interval_ns"]

        def stream(sender: probe_agent.AgentLog | None,
                   receiver: probe_agent.AgentLog | None) -> probe_metrics.Stream:
            s = probe_metrics.Stream(interval)
            if sender:
                s.sent_seq, s.sent_t, s.sent_mono = sender.sent_seq, sender.sent_t, sender.sent_mono
            if receiver:
                s.recv_seq, s.recv_t_send, s.recv_t_recv = (
                    receiver.recv_seq, receiver.recv_t_send, receiver.recv_t_recv)
                s.rx_start_ns, s.rx_end_ns = receiver.rx_start_ns, receiver.rx_end_ns
            return s

        rtt: list[int] = []
        for me in (a, b):
            if me:
                rtt += probe_metrics.rtt_samples(me.sent_seq, me.sent_t, me.recv_t_recv,
                                                 me.recv_echo_seq, me.recv_echo_hold)
        return stream(a, b), stream(b, a), rtt

    @staticmethod
    def parse(raw: dict[str, Any], fault_ns: int | None = None, threshold_ms: float = 0.0,
              noise_floor_ms: float | None = None) -> dict[str, Any]:
        """Metrics from collect()'s output; `fault_ns`: the fault's applied CLOCK_REALTIME ns."""
        ab, ba, rtt = Probe.streams(raw)
        result = probe_metrics.summarize(ab, ba, rtt, fault_ns, threshold_ms, noise_floor_ms)
        result["errors"] = dict(raw.get("errors", {}))
        logs = [raw[side] for side in ("a", "b") if raw.get(side)]
        result["sched"] = {side: raw[side].info.get("sched") for side in ("a", "b") if raw.get(side)}
        # losses the probe caused itself (its receive buffers overflowed, sends failed)
        result["probe_drops"] = sum(log.info.get("udp_drops", 0) for log in logs)
        result["send_errors"] = sum(log.info.get("send_errors", 0) for log in logs)
        return result


class Fault(Protocol):
    """A fault that applies itself and records when it took effect (e.g. netns.BlackHole)."""

    length_ms: float | None
    length_error_ms: float | None
    effect_slack_ms: float  # lag in taking effect that its own timestamps cannot see
    switch_timed: bool  # the switch decides when it takes effect (its stalls delay it)

    def apply(self) -> int: ...
    def undo(self) -> int: ...
    def close(self) -> None: ...


class Witness(Protocol):
    """Watches the switch itself (e.g. netns.SwitchWatch) for stalls the probe did not cause."""

    def start(self) -> Any: ...
    def stop(self) -> None: ...
    def stalls(self, min_ms: float = ...) -> list[tuple[int, int]]: ...


# A switch main loop stalled this long disturbs a trial (idle echoes: p99 2 ms, max 9 ms)
# when it comes this close to one of the fault's edges: a switch that busy also applies the
# fault late (datapath lags of 5-10 ms were measured beside stalls 30-100 ms away).
STALL_MS = 10.0
EDGE_MARGIN_NS = 100_000_000
BROKEN_BEFORE_MS = 20.0
# A fault gap's error bar is half the send spacing bracketing each edge: one interval when the
# senders keep their schedule. Wider than this many intervals, a sender (SCHED_FIFO already)
# missed its slots at an edge: the host itself was stalled (a CI runner's VM descheduled for
# 8-140 ms was measured), so the trial measured the host, not the probe or the fault.
HOST_STALL_INTERVALS = 2.0


@contextmanager
def _realtime(priority: int = 10) -> Iterator[None]:
    """This thread at SCHED_FIFO while it applies a fault: on a busy host a normal thread is
    descheduled between its timestamps and the change, which widens the fault's error bar."""
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError):
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, before[0], before[1])


def fault_trial(a: Endpoint | tuple[Node, str], b: Endpoint | tuple[Node, str],
                tracker: ProcessTracker, fault: Fault | None = None, hold_ms: float = 0.0, *,
                before_s: float = 1.0, after_s: float = 0.5, interval_ms: float = 1.0,
                port: int = 7370, witness: Witness | None = None,
                stall_ms: float = STALL_MS) -> dict[str, Any]:
    """Probe a<->b, apply `fault` for `hold_ms` after `before_s` of fault-free probing, and
    measure it; with no fault this is a baseline run. The probe's accuracy check (tests and
    bench share it): the result is Probe.parse's plus `fault_ms` (how long the fault really
    lasted, by its own record), `fault_error_ms`, `error_ms` (measured minus real),
    `tolerance_ms` and `within_tolerance`.

    The outage judged is the gap nearest the fault (`fault_outage_ms`), in the worse
    direction and in each (`a_to_b.error_ms`, ...). `broken_before`: that gap began well
    before the fault was applied, so something else broke the path first.

    With a witness of the switch, also `switch_stalls` ([start ms relative to the fault or
    the probe's start, length ms]), `own_noise_floor_ms` (gaps no stall explains) and
    `disturbed`: broken_before, or the switch stalled near an edge of a fault whose timing it
    decides, or (no fault) the path lost probes the probe did not drop itself. A disturbed
    trial measured the switch's hiccup, not the probe. With a fault, `host_stalls` lists the
    directions whose senders missed their slots at an edge ({direction: error bar ms}); such
    a trial is disturbed too, witness or not: its result stays within its (wide) error bar,
    but says nothing about the probe's resolution."""
    probe = Probe(a, b, tracker, interval_ms=interval_ms, port=port)
    probe.check()
    edges: list[tuple[int, int]] = []
    try:
        if witness is not None:
            witness.start()
        probe.start()
        time.sleep(before_s)
        fault_ns = None
        if fault is not None:
            with _realtime():
                asked = time.time_ns()
                fault_ns = fault.apply()
                edges.append((asked, fault_ns))
                # Sleep to an absolute deadline: the real length is measured, this aims it.
                deadline = time.monotonic() + hold_ms / 1e3
                while (left := deadline - time.monotonic()) > 0:
                    time.sleep(left)
                asked = time.time_ns()
                edges.append((asked, fault.undo()))
        time.sleep(after_s)
        probe.stop()
        result = Probe.parse(probe.collect(), fault_ns=fault_ns)
    finally:
        probe.stop()
        probe.cleanup()
        if witness is not None:
            witness.stop()
    if fault is not None:
        result["fault_ms"] = fault.length_ms
        result["fault_error_ms"] = fault.length_error_ms
        judge = partial(probe_metrics.accuracy, fault_ms=fault.length_ms,
                        fault_error_ms=fault.length_error_ms, slack_ms=fault.effect_slack_ms)
        result.update(judge(result["fault_outage_ms"], result["fault_outage_error_ms"]))
        # per direction too: a fault may cut one direction more sharply than the other
        for d in (result["a_to_b"], result["b_to_a"]):
            gap = d["fault_gap"]
            # No gap: either the fault did not act, or the sender was stalled through it and
            # had no probe to lose (seen once at load: 0 ms for a 20 ms black hole); its
            # silence across the fault is then the error bar, and a host stall below.
            d.update(judge(gap["outage_ms"], gap["error_ms"]) if gap else
                     judge(0.0, max(d["outage_error_ms"], d["fault_send_gap_ms"])))
        # A fault cannot act before it is applied: a gap that began well before it is a
        # break of the path (the shared switch's) that the fault's gap merged into.
        result["broken_before"] = any(
            d["fault_gap"] and d["fault_gap"]["start_rel_ms"] < -BROKEN_BEFORE_MS
            for d in (result["a_to_b"], result["b_to_a"]))
        result["host_stalls"] = {
            name: bar for name in ("a_to_b", "b_to_a")
            if (bar := (result[name]["fault_gap"] or {}).get(
                "error_ms", result[name]["fault_send_gap_ms"])) > HOST_STALL_INTERVALS * interval_ms}
        result["disturbed"] = result["broken_before"] or bool(result["host_stalls"])
    if witness is not None:
        stalls = witness.stalls(stall_ms)
        origin = fault_ns if fault_ns is not None else min(probe.ready_ns.values())
        result["switch_stalls"] = [((s - origin) / 1e6, (e - s) / 1e6) for s, e in stalls]
        result["own_noise_floor_ms"] = probe_metrics.own_noise_floor(result, stalls)
        if fault is None:
            # Nothing was broken on purpose: any probe the path lost (and the probe did not
            # drop itself) means the path was disturbed, and the floor would be the path's.
            result["disturbed"] = (
                result["lost"] > result["probe_drops"] + result["send_errors"]
                or result["own_noise_floor_ms"] < result["noise_floor_ms"])
        else:
            result["disturbed"] = result["disturbed"] or (fault.switch_timed and any(
                probe_metrics.overlaps(edge, s, EDGE_MARGIN_NS) for edge in edges for s in stalls))
    return result


def quiet_trial(a: Endpoint | tuple[Node, str], b: Endpoint | tuple[Node, str],
                tracker: ProcessTracker, make_fault: Callable[[], Fault] | None = None,
                hold_ms: float = 0.0, *, make_witness: Callable[[], Witness],
                attempts: int = 3, **kwargs: Any) -> dict[str, Any]:
    """fault_trial, repeated while it was disturbed (the witness saw the switch stall: other
    users of a shared OVS reconfiguring it; or the host stalled the probe's senders at a
    fault's edge), at most `attempts` times. The result says how many it took (`attempts`)
    and what voided the others (`voided`: their switch stalls and host stalls); it is still
    `disturbed` if no attempt was quiet."""
    voided = []
    for attempt in range(1, attempts + 1):
        fault = make_fault() if make_fault else None
        try:
            result = fault_trial(a, b, tracker, fault, hold_ms, witness=make_witness(), **kwargs)
        finally:
            if fault is not None:
                fault.close()
        if not result["disturbed"]:
            break
        voided.append({"switch_stalls": result.get("switch_stalls", []),
                       "host_stalls": result.get("host_stalls", {})})
    result["attempts"] = attempt
    result["voided"] = voided
    return result
