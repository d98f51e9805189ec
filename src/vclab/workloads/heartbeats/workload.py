"""HA heartbeats: one agent per hypervisor and one on the management server, over real UDP.

Each agent runs model.HaAgent in its host's namespace: it sends the heartbeats the model asks
for on the management network, pings what the model asks to ping (the iputils `ping`, one echo
per request, from a thread so heartbeats keep their cadence), and logs every heartbeat sent and
received and every declaration as JSON lines with wall-clock times. The experiments read the
declarations (time to detect a failed host, false failure/isolation declarations) and the
heartbeat gaps (how long the management network was down for HA).

    python -m vclab.workloads.heartbeats.workload --name esx1 --role primary --bind IP \\
        --host esx1=IP --host esx2=IP --manager vcenter=IP [--isolation-address IP] \\
        [--config JSON] --log FILE
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vclab.lab.procs import ProcessTracker
from vclab.workloads.agent import Agent
from vclab.workloads.base import Workload, WorkloadError
from vclab.workloads.heartbeats.model import (
    ALARMS,
    ISOLATION,
    MANAGER,
    PRIMARY,
    ROLES,
    Declaration,
    HaAgent,
    HaConfig,
    Heartbeat,
    PingResult,
    Step,
    Tick,
    detection_times,
    false_declarations,
)

FDM_PORT = 8182  # the port vSphere HA's FDM agents use
MAX_PINGS_IN_FLIGHT = 10  # per target; bounds the threads when echoes time out


def _ping(address: str, timeout_s: float) -> bool:
    wait = f"{max(timeout_s, 0.05):.3f}"  # iputils takes fractional seconds
    try:
        done = subprocess.run(["ping", "-n", "-q", "-c", "1", "-W", wait, address],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout_s + 2)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


class _Agent:
    """The socket and log around one HaAgent."""

    def __init__(self, name: str, role: str, bind: str, port: int, hosts: dict[str, str],
                 manager: tuple[str, str] | None, isolation_address: str | None,
                 config: HaConfig, log_path: str) -> None:
        self.addresses = dict(hosts)
        if manager:
            self.addresses[manager[0]] = manager[1]
        self.isolation_address = isolation_address or (manager[1] if manager else None)
        self.port, self.cfg = port, config
        self.log = open(log_path, "ab", buffering=0)
        # The model runs on the monotonic clock; the log gets wall-clock times so that they
        # line up with other workloads and fault records.
        self.offset = time.time() - time.monotonic()
        now = time.monotonic()
        self.model = HaAgent(name, role, hosts, config, now=now,
                             manager=manager[0] if manager else None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, port))
        self.sock.setblocking(False)
        self.seq = 0
        self.pinging: dict[str, int] = defaultdict(int)  # echoes in flight per target
        self.ping_results: list[tuple[str, bool]] = []
        self.lock = threading.Lock()
        self.running = True
        self._write(event="start", agent=name, role=role, hosts=hosts,
                    manager=manager[0] if manager else None,
                    isolation_address=self.isolation_address, config=config.model_dump())

    def _write(self, **record: Any) -> None:
        record.setdefault("t", time.time())
        self.log.write((json.dumps(record) + "\n").encode())

    def _apply(self, step: Step) -> None:
        for d in step.declarations:
            self._write(t=d.t + self.offset, event="declare", agent=d.agent, kind=d.kind,
                        subject=d.subject)
        for to, kind in step.send:
            addr = self.addresses.get(to)
            if not addr:
                continue
            self.seq += 1
            now = time.time()
            msg = {"from": self.model.name, "role": self.model.sending_role, "kind": kind,
                   "seq": self.seq, "t": now}
            try:
                self.sock.sendto(json.dumps(msg).encode(), (addr, self.port))
                self._write(t=now, event="hb_tx", to=to, kind=kind, seq=self.seq)
            except OSError as e:  # no route while a link is down: the heartbeat is lost
                self._write(t=now, event="hb_tx", to=to, kind=kind, seq=self.seq, error=str(e))
        for target in step.ping:
            addr = self.isolation_address if target == ISOLATION else self.addresses.get(target)
            if not addr or self.pinging[target] >= MAX_PINGS_IN_FLIGHT:
                continue
            # One echo per ping interval, each waiting up to the timeout: echoes overlap
            # when the timeout is longer than the interval, as with `ping -i`.
            self.pinging[target] += 1
            threading.Thread(target=self._ping, args=(target, addr), daemon=True).start()

    def _ping(self, target: str, addr: str) -> None:
        ok = _ping(addr, self.cfg.ping_timeout_s)
        with self.lock:
            self.ping_results.append((target, ok))

    def run(self) -> None:
        tick = min(self.cfg.heartbeat_interval_s / 10, 0.05)
        print("ready", flush=True)
        while self.running:
            try:
                select.select([self.sock], [], [], tick)
            except InterruptedError:
                pass
            while True:
                try:
                    data, (src, _) = self.sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    break
                try:
                    msg = json.loads(data)
                    hb = Heartbeat(str(msg["from"]), str(msg["role"]), str(msg["kind"]))
                except (ValueError, KeyError, TypeError):
                    continue
                self._write(event="hb_rx", **{"from": hb.sender}, kind=hb.kind, role=hb.role,
                            seq=msg.get("seq"), t_sent=msg.get("t"), src=src)
                self._apply(self.model.handle(time.monotonic(), hb))
            with self.lock:
                results, self.ping_results = self.ping_results, []
            for target, ok in results:
                self.pinging[target] -= 1
                self._write(event="ping", target=target, ok=ok)
                self._apply(self.model.handle(time.monotonic(), PingResult(target, ok)))
            self._apply(self.model.handle(time.monotonic(), Tick()))
        self._write(event="stop")


@dataclass
class HaMember:
    """One HA participant: a hypervisor (primary/secondary) or the management server."""

    name: str
    node: Any  # anything with popen(): a Mininet host, a NetnsNode
    ip: str  # its management-network address
    role: str


class Heartbeats(Workload):
    """HA agents on every member until stop(); `kill(name)` ends one agent by PID."""

    kind = "heartbeats"

    def __init__(self, members: list[HaMember], tracker: ProcessTracker, outdir: Path, *,
                 config: HaConfig | None = None, port: int = FDM_PORT,
                 isolation_address: str | None = None, start_timeout: float = 10.0) -> None:
        self.members = {m.name: m for m in members}
        self.member_list = members
        self.tracker, self.outdir, self.port = tracker, Path(outdir), port
        self.config = config or HaConfig()
        self.isolation_address = isolation_address
        self.start_timeout = start_timeout
        self.procs: dict[str, Agent] = {}
        self.killed: dict[str, float] = {}

    def log_path(self, name: str) -> Path:
        return self.outdir / f"ha-{name}.jsonl"

    def check(self) -> None:
        problems = []
        if len(self.members) != len(self.member_list):
            problems.append("member names must be unique")
        roles = [m.role for m in self.member_list]
        for m in self.member_list:
            if m.role not in ROLES:
                problems.append(f"{m.name}: role {m.role!r} is not one of {', '.join(ROLES)}")
            try:
                ipaddress.IPv4Address(m.ip)
            except ValueError:
                problems.append(f"{m.name}: {m.ip!r} is not an IPv4 address")
            if not callable(getattr(m.node, "popen", None)):
                problems.append(f"{m.name}: {m.node!r} cannot run commands (no popen)")
        if roles.count(PRIMARY) != 1:
            problems.append(f"exactly one primary is needed, not {roles.count(PRIMARY)}")
        if roles.count(MANAGER) > 1:
            problems.append("at most one manager (management server)")
        if not shutil.which("ping"):
            problems.append("`ping` is missing (apt-get install iputils-ping)")
        if problems:
            raise WorkloadError("heartbeats: " + "; ".join(problems))
        self.outdir.mkdir(parents=True, exist_ok=True)

    def _args(self, m: HaMember) -> list[str]:
        args = [sys.executable, "-m", "vclab.workloads.heartbeats.workload", "--name", m.name,
                "--role", m.role, "--bind", m.ip, "--port", str(self.port),
                "--config", self.config.model_dump_json(), "--log", str(self.log_path(m.name))]
        for h in self.member_list:
            if h.role == MANAGER:
                args += ["--manager", f"{h.name}={h.ip}"]
            else:
                args += ["--host", f"{h.name}={h.ip}"]
        if self.isolation_address:
            args += ["--isolation-address", self.isolation_address]
        return args

    def start(self) -> None:
        if self.procs:
            raise WorkloadError("heartbeats: already started")
        for m in self.member_list:
            self.log_path(m.name).unlink(missing_ok=True)
            self.procs[m.name] = Agent(m.node, self._args(m), self.tracker, f"ha-{m.name}").spawn()
        deadline = time.monotonic() + self.start_timeout
        for name, agent in self.procs.items():
            try:
                agent.expect("ready", deadline - time.monotonic())
            except WorkloadError:
                err = agent.stderr_tail() if not agent.running() else ""
                self.stop()
                raise WorkloadError(f"HA agent {name} did not start: {err.strip()[-500:]}") from None

    def kill(self, name: str) -> float:
        """End one agent now (by PID), as a crashed host's would; returns the wall time."""
        t = self.procs[name].kill() / 1e9
        self.killed[name] = t
        return t

    def stop(self) -> None:
        for agent in self.procs.values():
            agent.stop(drain_s=0)  # the agents log as they go: nothing to drain
        self.procs = {}

    def collect(self) -> dict[str, Any]:
        logs = {}
        for name in self.members:
            path = self.log_path(name)
            logs[name] = ([json.loads(x) for x in path.read_text().splitlines() if x.strip()]
                          if path.exists() else [])
        return {"config": self.config.model_dump(), "killed": dict(self.killed), "logs": logs}

    @staticmethod
    def parse(raw: dict[str, Any], failures: dict[str, float] | None = None,
              start: float | None = None, end: float | None = None) -> dict[str, Any]:
        """Declarations, detection times of `failures` (host -> wall time it really failed:
        defaults to the agents killed), false alarms within [start, end], and the longest
        heartbeat gap on every sender->receiver pair."""
        failures = dict(raw.get("killed", {}) if failures is None else failures)
        decls = sorted((Declaration(e["t"], e["agent"], e["kind"], e["subject"])
                        for log in raw["logs"].values() for e in log if e["event"] == "declare"),
                       key=lambda d: d.t)
        rx: dict[tuple[str, str], list[float]] = defaultdict(list)
        for name, log in raw["logs"].items():
            for e in log:
                if e["event"] == "hb_rx":
                    rx[(e["from"], name)].append(e["t"])
        gaps = {f"{a}->{b}": max((y - x for x, y in zip(ts, ts[1:])), default=None)
                for (a, b), ts in sorted(rx.items())}
        lo = float("-inf") if start is None else start
        hi = float("inf") if end is None else end
        false = false_declarations(decls, failures, lo, hi)
        return {
            "declarations": [d.__dict__ for d in decls],
            "detect_failed_s": detection_times(decls, failures, "failed"),
            "detect_any_s": {h: min((d.t - t for d in decls if d.subject == h and d.t >= t
                                     and d.kind in ALARMS), default=None)
                             for h, t in failures.items()},
            "false_declarations": [d.__dict__ for d in false],
            "false_declaration_count": len(false),
            "heartbeat_gap_s": gaps,
        }


def _pair(text: str) -> tuple[str, str]:
    name, _, ip = text.partition("=")
    if not name or not ip:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=IP")
    return name, ip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vclab.workloads.heartbeats.workload")
    ap.add_argument("--name", required=True)
    ap.add_argument("--role", required=True, choices=ROLES)
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=FDM_PORT)
    ap.add_argument("--host", type=_pair, action="append", default=[],
                    help="NAME=IP of every hypervisor, this one included")
    ap.add_argument("--manager", type=_pair, help="NAME=IP of the management server")
    ap.add_argument("--isolation-address", help="default: the management server's address")
    ap.add_argument("--config", help="HaConfig as JSON")
    ap.add_argument("--log", required=True)
    args = ap.parse_args(argv)
    cfg = HaConfig.model_validate_json(args.config) if args.config else HaConfig()
    agent = _Agent(args.name, args.role, args.bind, args.port, dict(args.host), args.manager,
                   args.isolation_address, cfg, args.log)

    def _stop(*_: object) -> None:
        agent.running = False

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run()


if __name__ == "__main__":
    main()
