"""iperf3 between two hosts: a one-shot server and a client, both in the foreground, each an
Agent (workloads/agent.py): spawned, tracked by PID and ended through the one harness.

The server runs `iperf3 -s -1 --json` (one test, then it exits); never `-D`: a daemonized
iperf3 outlives its namespace and can only be found by name. The client's JSON is what `parse`
reads: throughput, TCP retransmits, UDP jitter and loss, and the `--interval` samples as a
throughput time series on the wall clock (so it lines up with fault times).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from vclab.lab.procs import ProcessTracker
from vclab.workloads.agent import Agent
from vclab.workloads.base import Workload, WorkloadError

IPERF3_PORT = 5201
PROTOCOLS = ("tcp", "udp")


def server_args(bind: str, port: int) -> list[str]:
    return ["iperf3", "-s", "-1", "--json", "-B", bind, "-p", str(port)]


def client_args(server: str, port: int, protocol: str, duration_s: float, interval_s: float,
                rate_bps: float | None = None, length: int | None = None,
                parallel: int = 1, reverse: bool = False) -> list[str]:
    args = ["iperf3", "-c", server, "-p", str(port), "--json", "-t", f"{duration_s:g}",
            "-i", f"{interval_s:g}"]
    if protocol == "udp":
        args.append("-u")
    if rate_bps is not None:  # UDP defaults to 1 Mbit/s, TCP to unlimited
        args += ["-b", str(int(rate_bps))]
    if length:
        args += ["-l", str(length)]
    if parallel > 1:
        args += ["-P", str(parallel)]
    if reverse:
        args.append("-R")
    return args


class Iperf3(Workload):
    """One iperf3 test from `client` to `server_ip` on `server` (or back, with reverse)."""

    kind = "iperf3"

    def __init__(self, server: Any, client: Any, server_ip: str, tracker: ProcessTracker,
                 outdir: Path, *, protocol: str = "tcp", duration_s: float = 10.0,
                 interval_s: float = 1.0, rate_bps: float | None = None,
                 length: int | None = None, parallel: int = 1, reverse: bool = False,
                 port: int = IPERF3_PORT, name: str = "iperf3") -> None:
        self.server, self.client, self.server_ip = server, client, server_ip
        self.tracker, self.outdir, self.name = tracker, Path(outdir), name
        self.protocol, self.duration_s, self.interval_s = protocol, duration_s, interval_s
        self.rate_bps, self.length = rate_bps, length
        self.parallel, self.reverse = parallel, reverse
        self.port = port
        self.server_out = self.outdir / f"{name}-server.json"
        self.client_out = self.outdir / f"{name}-client.json"
        self._server: Agent | None = None
        self._client: Agent | None = None
        self.client_started: float | None = None

    def check(self) -> None:
        problems = []
        if not shutil.which("iperf3"):
            problems.append("iperf3 is missing (apt-get install iperf3)")
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if not self.duration_s > 0 or not self.interval_s > 0:
            problems.append("duration_s and interval_s must be > 0")
        if self.rate_bps is not None and self.rate_bps <= 0:
            problems.append("rate_bps must be > 0")
        if not 0 < self.port < 65536:
            problems.append(f"port {self.port} is not a TCP port")
        try:
            ipaddress.IPv4Address(self.server_ip)
        except ValueError:
            problems.append(f"{self.server_ip!r} is not an IPv4 address")
        for role, node in (("server", self.server), ("client", self.client)):
            if not callable(getattr(node, "popen", None)):
                problems.append(f"{role} {node!r} cannot run commands (no popen)")
        if problems:
            raise WorkloadError("iperf3: " + "; ".join(problems))
        self.outdir.mkdir(parents=True, exist_ok=True)

    def _listening(self) -> bool:
        # The server prints nothing until its test ends (--json): ask the kernel instead.
        _, out = Agent(self.server, ["ss", "-Hltn", f"sport = :{self.port}"], self.tracker,
                       f"{self.name}-listening").run_once(5)
        return bool(out.strip())

    def start(self, timeout: float = 5.0) -> None:
        if self._server or self._client:
            raise WorkloadError("iperf3: already started")
        self._server = Agent(self.server, server_args(self.server_ip, self.port), self.tracker,
                             f"{self.name}-server", stdout=self.server_out).spawn()
        deadline = time.monotonic() + timeout
        while not self._listening():
            if not self._server.running() or time.monotonic() > deadline:
                text = (self.server_out.read_text(errors="replace") +
                        self._server.stderr_tail()).strip()
                self.stop()
                raise WorkloadError(f"iperf3 server on {self.server_ip}:{self.port} did not "
                                    f"start: {text[-500:]}")
            time.sleep(0.02)
        args = client_args(self.server_ip, self.port, self.protocol, self.duration_s,
                           self.interval_s, self.rate_bps, self.length, self.parallel, self.reverse)
        self.client_started = time.time()
        self._client = Agent(self.client, args, self.tracker, f"{self.name}-client",
                             stdout=self.client_out).spawn()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self._server, self._client) if p]

    def wait(self, timeout: float | None = None) -> bool:
        """True once the client finished (it exits after duration_s plus a little)."""
        if not self._client or not self._client.proc:
            return False
        try:
            self._client.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        if self._server and self._server.proc:
            try:
                self._server.proc.wait(5)  # -1: it exits after writing its own JSON
            except subprocess.TimeoutExpired:
                pass
        return True

    def stop(self) -> None:
        for agent in (self._client, self._server):
            if agent:
                agent.stop(drain_s=0)
        self._client = self._server = None

    def collect(self) -> dict[str, Any]:
        def load(path: Path) -> Any:
            text = path.read_text(errors="replace") if path.exists() else ""
            try:
                return json.loads(text)
            except ValueError:
                return {"error": f"no JSON from iperf3: {text.strip()[-500:] or 'no output'}"}

        return {"protocol": self.protocol, "client": load(self.client_out),
                "server": load(self.server_out), "client_started": self.client_started}

    @staticmethod
    def parse(raw: dict[str, Any]) -> dict[str, Any]:
        """The client's iperf3 JSON (or {'client': json}) -> metrics. Raises WorkloadError
        with iperf3's own message when the test failed."""
        doc = raw.get("client", raw)
        if "error" in doc and not doc.get("end"):
            raise WorkloadError(f"iperf3: {doc['error']}")
        try:
            out = Iperf3._metrics(doc, raw.get("client_started"))
        except (KeyError, TypeError) as e:
            raise WorkloadError(f"iperf3: incomplete JSON (no {e})") from None
        # A client stopped before the end-of-test exchange (its control connection stalled
        # on a flooded link) reports 0 received; the server counted what really arrived.
        server_end = (raw.get("server") or {}).get("end") or {}
        received = (server_end.get("sum_received") or {}).get("bits_per_second")
        if out["protocol"] == "tcp" and doc.get("error") and not out["throughput_bps"] and received:
            out["throughput_bps"] = received
            out["throughput_from"] = "server"
        return out

    @staticmethod
    def _metrics(doc: dict[str, Any], client_started: float | None) -> dict[str, Any]:
        start, end = doc["start"], doc["end"]
        udp = start["test_start"]["protocol"] == "UDP"
        # iperf3 stamps its start in whole seconds; the workload's own record of when it started
        # the client is within a connection setup of the first interval, so prefer it.
        t0 = client_started or float(start["timestamp"]["timesecs"])
        series = [{"t": t0 + iv["sum"]["start"], "start_s": iv["sum"]["start"],
                   "end_s": iv["sum"]["end"], "bits_per_second": iv["sum"]["bits_per_second"],
                   # a UDP sender counts packets per interval; only the receiver counts loss
                   **({"packets": iv["sum"].get("packets"),
                       "lost_packets": iv["sum"].get("lost_packets")} if udp else {})}
                  for iv in doc.get("intervals", [])]
        out: dict[str, Any] = {
            "protocol": "udp" if udp else "tcp",
            "t_start": t0,
            "duration_s": start["test_start"]["duration"],
            "reverse": bool(start["test_start"].get("reverse")),
            "intervals": series,
            "min_interval_bps": min((s["bits_per_second"] for s in series), default=None),
            "cpu_host_percent": end.get("cpu_utilization_percent", {}).get("host_total"),
            "error": doc.get("error"),
        }
        if udp:
            s = end["sum"]
            # end.sum's rate is what the client sent; iperf3 >= 3.10 adds the receiver's count
            # as sum_received (older ones: sent minus the loss the server reported).
            received = (end.get("sum_received") or {}).get("bits_per_second")
            if received is None:
                received = s["bits_per_second"] * (1 - s["lost_percent"] / 100)
            out.update(throughput_bps=received,
                       sent_bps=(end.get("sum_sent") or s)["bits_per_second"],
                       jitter_ms=s["jitter_ms"], lost_packets=s["lost_packets"],
                       packets=s["packets"], lost_percent=s["lost_percent"])
        else:
            out.update(throughput_bps=end["sum_received"]["bits_per_second"],
                       sent_bps=end["sum_sent"]["bits_per_second"],
                       retransmits=end["sum_sent"].get("retransmits"))
        return out
