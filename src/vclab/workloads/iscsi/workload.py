"""iSCSI storage traffic from a hypervisor to the storage array, and what a fault does to it.

The initiator (agent.py, on libiscsi) runs in the hypervisor's namespace against the tgtd
target of `iscsi_target`. With several portals it keeps a session on each path and fails over
from the active one on an I/O error or an I/O older than `io_timeout_ms` (active/standby, as a
most-recently-used MPIO policy does). `parse` turns its per-I/O records into IOPS, throughput,
latency, the longest stall (the largest gap between two completions, and the I/O that waited
longest) and the path switches; given the fault's time it keeps the stall the fault caused (the
gap that spans its applied time) apart from later ones, and given the noise floor (the longest
gap of a fault-free stretch of the same run) it books neither when no longer than that.

`login()` and `features()` run the agent's one-shot checks: does a login with these
credentials succeed; does the target offer COMPARE AND WRITE and persistent reservations.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vclab.lab.procs import ProcessTracker
from vclab.workloads.agent import Agent
from vclab.workloads.base import Workload, WorkloadError
from vclab.workloads.iscsi.libiscsi import DOWN, UP
from vclab.workloads.iscsi.records import (
    FAILED,
    OK,
    PATTERNS,
    READ,
    REASONS,
    SWITCH,
    UNFINISHED,
    WRITE,
    Row,
    parse_mix,
    read_log,
)
from vclab.workloads.iscsi.target import Chap, IscsiTarget, endpoint_problems
from vclab.workloads.probe.metrics import percentile

SERIES_BUCKET_MS = 100.0
# A stall is booked when this many times longer than the noise floor (fault_metrics).
STALL_FLOOR_FACTOR = 2.0


def _agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "vclab.workloads.iscsi.agent", *args]


def _target_args(portals: list[str], iqn: str, lun: int, chap: Chap | None,
                 initiator: str | None) -> tuple[list[str], dict[str, str]]:
    args = [a for p in portals for a in ("--portal", p)] + ["--target", iqn, "--lun", str(lun)]
    if initiator:
        args += ["--initiator", initiator]
    env = dict(os.environ)
    env.pop("VCLAB_CHAP_SECRET", None)
    if chap:
        args += ["--chap-user", chap.user]
        env["VCLAB_CHAP_SECRET"] = chap.secret  # not on the command line, where ps shows it
    return args, env


class Iscsi(Workload):
    """I/O from `host` to LUN number `lun` of target `iqn` through `portals` until stop()."""

    kind = "iscsi"

    def __init__(self, host: Any, portals: list[str], iqn: str, lun: int,
                 tracker: ProcessTracker, *, pattern: str = "random-4k", mix: str = "70/30",
                 depth: int = 1, io_timeout_ms: float = 1000.0, relogin_s: float = 1.0,
                 login_timeout_s: float = 3.0, session_timeout_s: float = 15.0,
                 chap: Chap | None = None,
                 initiator: str | None = None, seed: int = 0, name: str = "iscsi",
                 workdir: Path | None = None, start_timeout: float = 20.0) -> None:
        self.host, self.portals, self.iqn, self.lun = host, list(portals), iqn, lun
        self.tracker, self.pattern, self.mix, self.depth = tracker, pattern, mix, depth
        self.io_timeout_ms, self.relogin_s, self.login_timeout_s = (
            io_timeout_ms, relogin_s, login_timeout_s)
        self.session_timeout_s = session_timeout_s
        self.chap, self.seed, self.name, self.start_timeout = chap, seed, name, start_timeout
        host_name = str(getattr(host, "name", "host"))
        self.initiator = initiator or f"iqn.2025-01.lab.vclab:{host_name}"
        self._own_workdir = workdir is None
        self.workdir = workdir
        self.proc: Agent | None = None
        self.ready_ns: int | None = None
        self.stderr = ""
        self.drain_s = max(1.0, 2 * io_timeout_ms / 1000)

    @classmethod
    def to(cls, target: IscsiTarget, host: Any, lun: str, tracker: ProcessTracker,
           portals: list[str] | None = None, **kwargs: Any) -> "Iscsi":
        """I/O to one of `target`'s LUNs by name, through its portals (or `portals`)."""
        kwargs.setdefault("chap", target.chap)
        return cls(host, portals or target.portals, target.iqn, target.lun_numbers[lun], tracker,
                   **kwargs)

    @property
    def out(self) -> Path:
        assert self.workdir is not None
        return self.workdir / f"{self.name}.csv"

    def check(self) -> None:
        problems = []
        if self.pattern not in PATTERNS:
            problems.append(f"pattern {self.pattern!r} is not one of {', '.join(PATTERNS)}")
        try:
            parse_mix(self.mix)
        except ValueError as e:
            problems.append(str(e))
        if self.depth < 1:
            problems.append(f"queue depth must be >= 1, not {self.depth}")
        if self.io_timeout_ms <= 0:
            problems.append(f"io_timeout_ms must be > 0, not {self.io_timeout_ms}")
        problems += endpoint_problems(self.portals, self.host, "no portal")
        try:
            ctypes.CDLL("libiscsi.so.7")
        except OSError as e:
            problems.append(f"libiscsi is not installed (apt-get install libiscsi7): {e}")
        if importlib.util.find_spec("vclab.workloads.iscsi.agent") is None:
            problems.append(f"{sys.executable} cannot import vclab.workloads.iscsi.agent")
        if problems:
            raise WorkloadError(f"{self.name}: " + "; ".join(problems))

    def start(self) -> None:
        if self.proc:
            raise WorkloadError(f"{self.name}: already started")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="vclab-iscsi-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.out.unlink(missing_ok=True)
        target, env = _target_args(self.portals, self.iqn, self.lun, self.chap, self.initiator)
        args = _agent("run", *target, "--pattern", self.pattern, "--mix", self.mix,
                      "--depth", str(self.depth), "--io-timeout-ms", str(self.io_timeout_ms),
                      "--relogin-s", str(self.relogin_s), "--login-timeout-s",
                      str(self.login_timeout_s), "--session-timeout-s",
                      str(self.session_timeout_s), "--drain-s", str(self.drain_s),
                      "--seed", str(self.seed), "--out", str(self.out))
        self.proc = Agent(self.host, args, self.tracker,
                          f"{self.name}:{getattr(self.host, 'name', '?')}",
                          stderr=self.workdir / f"{self.name}.err", env=env).spawn()
        try:
            self.ready_ns = self.proc.expect("ready", self.start_timeout).t_ns
        except WorkloadError:
            err = self.proc.stderr_tail().strip()[-800:]
            self.stop()
            raise WorkloadError(f"{self.name}: initiator did not start: {err or 'no output'}") from None

    def running(self) -> bool:
        return self.proc is not None and self.proc.running()

    def stop(self) -> None:
        if self.proc is None:
            return
        # SIGTERM: the agent drains its I/O and writes its records.
        self.proc.stop(drain_s=self.drain_s + 5)
        self.stderr = self.proc.stderr
        self.proc = None

    def collect(self) -> dict[str, Any]:
        """{'header', 'rows', 'trailer', 'stderr'} from the agent's log."""
        if self.workdir is None or not self.out.exists():
            return {"header": {}, "rows": [], "trailer": {}, "stderr": self.stderr}
        header, rows, trailer = read_log(self.out)
        return {"header": header, "rows": rows, "trailer": trailer, "stderr": self.stderr}

    def cleanup(self) -> None:
        if self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def parse(raw: dict[str, Any], fault_ns: int | None = None) -> dict[str, Any]:
        return parse(raw, fault_ns)


def _ms(ns: float) -> float:
    return ns / 1e6


def _latency(values_ms: list[float]) -> dict[str, float | None]:
    if not values_ms:
        return {"median": None, "p99": None, "max": None, "mean": None}
    return {"median": percentile(values_ms, 50), "p99": percentile(values_ms, 99),
            "max": max(values_ms), "mean": sum(values_ms) / len(values_ms)}


def _completions(done: list[Row]) -> list[int]:
    """When each finished I/O completed, in order: the ends of every gap (stall)."""
    return sorted(r.t1 for r in done)


def _gaps(times: list[int]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in zip(times, times[1:])]


def _longest(gaps: list[tuple[int, int]]) -> dict[str, Any] | None:
    if not gaps:
        return None
    a, b = max(gaps, key=lambda g: g[1] - g[0])
    return {"ms": _ms(b - a), "start_ns": a, "end_ns": b}


def parse(raw: dict[str, Any], fault_ns: int | None = None, floor_ms: float | None = None,
          uncertainty_ns: int = 0) -> dict[str, Any]:
    """Pure: the agent's records -> metrics. With `fault_ns` (CLOCK_REALTIME): the stall at the
    fault, the later ones and the failover (`fault_metrics`)."""
    header: dict = raw.get("header", {})
    trailer: dict = raw.get("trailer", {})
    rows: list[Row] = [r if isinstance(r, Row) else Row(*r) for r in raw.get("rows", [])]
    portals: list[str] = header.get("portals", [])
    io_bytes = int(header.get("io_bytes", 0))
    ios = [r for r in rows if r.kind in (READ, WRITE)]
    done = [r for r in ios if r.ok == OK]
    failed = [r for r in ios if r.ok == FAILED]
    unfinished = [r for r in ios if r.ok == UNFINISHED]
    t_start = trailer.get("t_start_ns") or (min(r.t0 for r in ios) if ios else 0)
    t_end = trailer.get("t_end_ns") or (max(r.t1 for r in ios) if ios else 0)
    duration_s = max(0.0, (t_end - t_start) / 1e9)

    def rate(n: int) -> float:
        return n / duration_s if duration_s > 0 else 0.0

    def portal(i: int) -> str:
        return portals[i] if 0 <= i < len(portals) else str(i)

    reads = [r for r in done if r.kind == READ]
    writes = [r for r in done if r.kind == WRITE]
    latencies = [_ms(r.t1 - r.t0) for r in done]

    # A stall: the largest gap between two completions. The run's start counts as one end; its
    # end only when I/O was still waiting then (otherwise that gap is just the shutdown).
    times = ([t_start] if t_start else []) + _completions(done)
    if unfinished and t_end:
        times.append(t_end)
    gaps = _gaps(times)
    waited = done + unfinished
    longest_io = max(waited, key=lambda r: r.t1 - r.t0) if waited else None

    switches = [{"t_ns": r.t1, "detected_ns": r.t0, "from": portal(r.aux), "to": portal(r.path),
                 "switch_ms": _ms(r.t1 - r.t0)} for r in rows if r.kind == SWITCH]
    downs = [{"t_ns": r.t0, "path": portal(r.path), "reason": REASONS.get(r.aux, str(r.aux))}
             for r in rows if r.kind == DOWN]
    ups = [{"t_ns": r.t1, "path": portal(r.path), "login_ms": _ms(r.t1 - r.t0)}
           for r in rows if r.kind == UP]
    per_path: dict[str, int] = {}
    for r in done:
        per_path[portal(r.path)] = per_path.get(portal(r.path), 0) + 1

    result: dict[str, Any] = {
        "ios": len(done), "reads": len(reads), "writes": len(writes),
        "failed": len(failed), "unfinished": len(unfinished),
        "retried": sum(1 for r in done if r.aux > 1),
        "duration_s": duration_s, "io_bytes": io_bytes,
        "iops": rate(len(done)), "read_iops": rate(len(reads)), "write_iops": rate(len(writes)),
        "throughput_bps": rate(len(done)) * io_bytes * 8,
        "read_bps": rate(len(reads)) * io_bytes * 8,
        "write_bps": rate(len(writes)) * io_bytes * 8,
        "latency_ms": _latency(latencies),
        "read_latency_ms": _latency([_ms(r.t1 - r.t0) for r in reads]),
        "write_latency_ms": _latency([_ms(r.t1 - r.t0) for r in writes]),
        "longest_stall": _longest(gaps),
        "longest_stall_ms": _longest(gaps)["ms"] if gaps else None,
        "longest_io": None if longest_io is None else {
            "op": longest_io.kind, "ms": _ms(longest_io.t1 - longest_io.t0),
            "submitted_ns": longest_io.t0, "completed_ns": longest_io.t1,
            "path": portal(longest_io.path), "attempts": longest_io.aux,
            "finished": longest_io.ok != UNFINISHED},
        "path_switches": switches, "paths_down": downs, "paths_up": ups,
        "ios_per_path": per_path,
        "errors": dict(trailer.get("errors", {})),
        "series": series(done, t_start, t_end),
    }
    if fault_ns is not None:
        result.update(fault_metrics(done, gaps, switches, downs, fault_ns, floor_ms,
                                    uncertainty_ns))
    return result


def fault_metrics(done: list[Row], gaps: list[tuple[int, int]], switches: list[dict],
                  downs: list[dict], fault_ns: int, floor_ms: float | None = None,
                  uncertainty_ns: int = 0) -> dict[str, Any]:
    """The stall the fault caused, what stalled later, and how the failover went.

    A completion gap is always open somewhere (I/O completes every few ms at a queue depth of
    one), so the fault's stall is the longest gap open when it took effect: one that spans its
    applied time (the fault took effect within `uncertainty_ns` before it) or starts within
    the noise floor after it (an I/O already past the failure point still completes, within
    the longest pause the I/O makes unharmed). A gap that starts later (a failback, a spanning
    tree re-converging) is `late_stall_ms`.

    `floor_ms` is the noise floor: the longest gap of a fault-free stretch of the same run.
    Either stall counts only when longer than STALL_FLOOR_FACTOR times it (0 means "within the
    noise floor"): the floor is the longest of thousands of gaps, and that longest gap differs
    by up to this factor from one fault-free stretch to the next (5.5-10 ms in the 24 fault-free
    stretches of a default main job), so a longer gap is one the I/O does not make unharmed.
    Without it (one fault, as a bench or a test applies it) the gaps are as measured, and the
    longest gap before the fault stands in for the floor (`stall_noise_floor_ms`) as the
    grace after the fault."""
    before = [g for g in gaps if g[1] < fault_ns]
    floor = floor_ms if floor_ms is not None else (_longest(before)["ms"] if before else None)
    grace_ns = int(floor * 1e6) if floor is not None else 0
    spanning = [g for g in gaps if g[0] <= fault_ns + grace_ns and g[1] >= fault_ns - uncertainty_ns]
    at = _longest(spanning)
    later = [g for g in gaps if g[0] > fault_ns + grace_ns]
    if floor_ms is not None:
        bar = STALL_FLOOR_FACTOR * floor_ms
        at = at if at and at["ms"] > bar else None
        later = [g for g in later if _ms(g[1] - g[0]) > bar]
    late = _longest(later)
    switch = next((s for s in switches if s["detected_ns"] >= fault_ns), None)
    down = next((d for d in downs if d["t_ns"] >= fault_ns), None)
    path_at_fault = None
    for r in sorted(done, key=lambda r: r.t1):
        if r.t1 <= fault_ns:
            path_at_fault = r.path
    resumed = next((r for r in sorted(done, key=lambda r: r.t1)
                    if r.t1 > fault_ns and path_at_fault is not None and r.path != path_at_fault),
                   None)
    return {
        "fault_ns": fault_ns,
        "fault_stall": at,
        "fault_stall_ms": at["ms"] if at else (0.0 if spanning else None),
        "late_stall": late,
        "late_stall_ms": late["ms"] if late else 0.0,
        "stall_noise_floor_ms": floor,
        "detect_ms": _ms(down["t_ns"] - fault_ns) if down else None,
        "failover_ms": _ms(switch["t_ns"] - fault_ns) if switch else None,
        "resumed_on_other_path_ms": _ms(resumed.t1 - fault_ns) if resumed else None,
    }


def quiet_stall(raw: dict[str, Any], windows: list[tuple[int, int]]) -> float | None:
    """The noise floor: the longest gap between two completions that lies within a quiet
    window (no fault, no workload event); None when no gap does."""
    rows = [r if isinstance(r, Row) else Row(*r) for r in raw.get("rows", [])]
    done = _completions([r for r in rows if r.kind in (READ, WRITE) and r.ok == OK])
    inside = [(a, b) for a, b in _gaps(done) if any(lo <= a and b <= hi for lo, hi in windows)]
    return _longest(inside)["ms"] if inside else None


def series(done: list[Row], t_start: int, t_end: int,
           bucket_ms: float = SERIES_BUCKET_MS) -> dict[str, list[float]]:
    """Completions per bucket as IOPS, and each bucket's worst latency (0 when none)."""
    if not t_start or t_end <= t_start:
        return {"t_ms": [], "iops": [], "latency_max_ms": []}
    bucket_ns = int(bucket_ms * 1e6)
    n = int((t_end - t_start) // bucket_ns) + 1
    count = [0] * n
    worst = [0.0] * n
    for r in done:
        i = min(n - 1, max(0, (r.t1 - t_start) // bucket_ns))
        count[i] += 1
        worst[i] = max(worst[i], _ms(r.t1 - r.t0))
    return {"t_ms": [i * bucket_ms for i in range(n)],
            "iops": [c * 1000.0 / bucket_ms for c in count], "latency_max_ms": worst}


def _one_shot(host: Any, args: list[str], env: dict[str, str], tracker: ProcessTracker,
              label: str, timeout: float) -> tuple[int, dict[str, Any], str]:
    agent = Agent(host, args, tracker, label, env=env)
    rc, out = agent.run_once(timeout)
    try:
        result = json.loads(out) if out.strip() else {}
    except ValueError:
        result = {}
    return rc, result, agent.stderr


def login(host: Any, portal: str, iqn: str, lun: int, tracker: ProcessTracker, *,
          chap: Chap | None = None, initiator: str | None = None,
          timeout_s: float = 3.0) -> dict[str, Any]:
    """One login from `host`: {'ok': bool, 'error': str, 'ms': float}."""
    target, env = _target_args([portal], iqn, lun, chap, initiator)
    rc, res, err = _one_shot(host, _agent("login", *target, "--login-timeout-s", str(timeout_s)),
                             env, tracker, "iscsi-login", timeout_s + 20)
    if "ok" not in res:
        raise WorkloadError(f"iSCSI login check failed to run (exit {rc}): {err.strip()[-800:]}")
    return res


def features(host: Any, portal: str, iqn: str, lun: int, tracker: ProcessTracker, *,
             chap: Chap | None = None, initiator: str | None = None,
             timeout_s: float = 3.0) -> dict[str, Any]:
    """COMPARE AND WRITE and persistent reservations on a LUN (it writes to the last block)."""
    target, env = _target_args([portal], iqn, lun, chap, initiator)
    rc, res, err = _one_shot(host, _agent("features", *target, "--login-timeout-s",
                                          str(timeout_s)), env, tracker, "iscsi-features", 60)
    if rc != 0 or "error" in res or not res:
        raise WorkloadError(f"iSCSI feature check failed (exit {rc}): "
                            f"{res.get('error') or err.strip()[-800:]}")
    return res
