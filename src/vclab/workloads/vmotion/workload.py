"""vMotion replay: the pre-copy rounds of the model (model.py) sent as real TCP between two hypervisors.

A receiver runs in the destination's namespace on its vMotion address, a sender in the source's.
Each round is a header (round, bytes) and page-sized writes; the receiver acknowledges the whole
round before the sender starts the next, as pre-copy must know which pages arrived before it
re-sends the dirty ones. Both ends log per-round timestamps (wall clock, which every namespace on
the host shares, so they line up with fault times), and the measured total time and downtime come
from the fabric: a stall mid-migration stretches its round.

In "live" mode (default) the sender feeds each round's measured duration back into the model, so
a slow round lets the guest dirty more and the migration takes more rounds, as a real one would.
"plan" mode sends the model's rounds byte for byte, whatever happens.

With `--switchover` the sender hands the pause to whoever moves the VM (workloads/migration.py):
before the stop-and-copy round it prints `pause T_NS` and waits for a line on stdin (the VM is
paused and off the network by then, so it dirties nothing more), and once that round is
acknowledged it prints `copied T_NS`, so the VM can resume on the destination.

    python -m vclab.workloads.vmotion.workload receive --bind IP [--port 8000] --log FILE
    python -m vclab.workloads.vmotion.workload send --to IP --spec JSON [--mode live|plan] [--switchover] --log FILE
    python -m vclab.workloads.vmotion.workload measure --to IP [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from vclab.lab.procs import ProcessTracker
from vclab.workloads.agent import Agent
from vclab.workloads.base import Workload, WorkloadError
from vclab.workloads.vmotion.model import (
    MEMORY,
    STOP_AND_COPY,
    PlannedRound,
    VmotionSpec,
    precopy,
    simulate,
)

VMOTION_PORT = 8000  # ESXi's vMotion TCP port
MODES = ("live", "plan")

_HEADER = struct.Struct("!IQ")  # round index, bytes that follow
_ACK = struct.Struct("!I")  # round index, once all of it arrived
_END = 0xFFFFFFFF
_RECV_CHUNK = 1 << 20
_WRITE_BYTES = 1 << 16


def _recv_exact(sock: socket.socket, n: int, buf: bytearray) -> bool:
    """Read n bytes into buf[:n] (False if the peer closed)."""
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:n])
        if k == 0:
            return False
        got += k
    return True


class _JsonLog:
    def __init__(self, path: str | None) -> None:
        self.file: BinaryIO | None = open(path, "ab", buffering=0) if path else None

    def write(self, **record: Any) -> None:
        if self.file:
            self.file.write((json.dumps(record) + "\n").encode())


def receive(bind: str, port: int, log_path: str | None) -> None:
    """Serve migrations one connection after another until killed."""
    log = _JsonLog(log_path)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, port))
    listener.listen(4)
    print("ready", flush=True)  # the workload waits for this before starting the sender
    conn_id = 0
    header = bytearray(_HEADER.size)
    buf = bytearray(_RECV_CHUNK)
    while True:
        sock, peer = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn_id += 1
        with sock:
            while _recv_exact(sock, _HEADER.size, header):
                index, nbytes = _HEADER.unpack(header)
                if index == _END:
                    break
                t_first = None
                left = nbytes
                while left:
                    k = sock.recv_into(buf, min(left, len(buf)))
                    if k == 0:
                        break
                    t_first = t_first or time.time()
                    left -= k
                if left:
                    break
                t_last = time.time()
                sock.sendall(_ACK.pack(index))
                log.write(event="round", conn=conn_id, round=index, bytes=nbytes,
                          t_first=t_first, t_last=t_last)


class _Sender:
    def __init__(self, to: str, port: int, page_bytes: int) -> None:
        self.sock = socket.create_connection((to, port), timeout=10)
        self.sock.settimeout(None)  # a stalled fabric must stretch the round, not abort it
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Whole pages per write, up to 64 KiB: one 4 KiB write per system call cost the Python
        # sender more CPU than the userspace datapath's forwarding (the replay was CPU-bound
        # below 1 Gbit/s); TCP sends the same bytes either way.
        self.page = bytes(max(page_bytes, (_WRITE_BYTES // page_bytes) * page_bytes))
        self.ack = bytearray(_ACK.size)

    def round(self, index: int, nbytes: int) -> tuple[float, float]:
        """Send one round in whole-page writes and wait for its ack: (wall start, seconds)."""
        t_start, m_start = time.time(), time.monotonic()
        self.sock.sendall(_HEADER.pack(index, nbytes))
        page, size = self.page, len(self.page)
        full, rest = divmod(nbytes, size)
        send = self.sock.sendall
        for _ in range(full):
            send(page)
        if rest:
            send(page[:rest])
        if not _recv_exact(self.sock, _ACK.size, self.ack) or _ACK.unpack(self.ack)[0] != index:
            raise ConnectionError(f"receiver did not acknowledge round {index}")
        return t_start, time.monotonic() - m_start

    def close(self) -> None:
        try:
            self.sock.sendall(_HEADER.pack(_END, 0))
        finally:
            self.sock.close()


def _planned(spec: VmotionSpec) -> Iterator[PlannedRound]:
    for r in simulate(spec).rounds:
        yield PlannedRound(r.index, r.phase, r.bytes, r.bytes)


def _handshake(word: str) -> None:
    """Tell the mover where the migration is; when ready (connected) and before the pause,
    wait for it to say go."""
    print(word, time.time_ns(), flush=True)
    if word in ("ready", "pause") and not sys.stdin.readline():
        raise ConnectionError(f"the switch-over went away before {word}")


def send(to: str, port: int, spec: VmotionSpec, mode: str, log_path: str | None,
         switchover: bool = False) -> None:
    log = _JsonLog(log_path)
    sender = _Sender(to, port, spec.page_bytes)
    if switchover:  # started ahead of its time: copy on the mover's cue
        _handshake("ready")
    log.write(event="start", t=time.time(), mode=mode, spec=spec.model_dump())

    def one(step: PlannedRound) -> float:
        if switchover and step.phase == STOP_AND_COPY:
            _handshake("pause")
        t_start, seconds = sender.round(step.index, step.bytes)
        log.write(event="round", round=step.index, phase=step.phase, bytes=step.bytes,
                  t_start=t_start, duration_s=seconds)
        if switchover and step.phase == STOP_AND_COPY:
            _handshake("copied")
        return seconds

    if mode == "live":
        plan = precopy(spec)
        step = next(plan)
        while True:
            seconds = one(step)
            if step.phase == STOP_AND_COPY:
                break
            step = plan.send(seconds)
    else:
        for step in _planned(spec):
            one(step)
    sender.close()
    log.write(event="done", t=time.time())


def measure(to: str, port: int, seconds: float, page_bytes: int, samples: int = 3) -> dict:
    """Achievable rate with the replay's own writes and acks: a warm-up round opens the
    congestion window, then `samples` rounds sized to share `seconds`; the median of their
    rates, so one scheduling hiccup on a busy machine does not set the model's rate."""
    sender = _Sender(to, port, page_bytes)
    try:
        nbytes = 1 << 20
        _, took = sender.round(0, nbytes)
        estimate = nbytes * 8 / took
        for _ in range(3):  # grow the warm-up until it is not dominated by slow start
            nbytes = int(min(max(estimate / 8 * seconds / samples, 1 << 20), 1 << 34))
            _, took = sender.round(0, nbytes)
            estimate = nbytes * 8 / took
            if took >= seconds / samples / 2:
                break
        rates = []
        for index in range(1, samples + 1):
            _, took = sender.round(index, nbytes)
            rates.append(nbytes * 8 / took)
    finally:
        sender.close()
    return {"rate_bps": statistics.median(rates), "samples_bps": rates, "bytes": nbytes}


class VmotionReplay(Workload):
    """One migration replayed from `source` to `destination_ip` on `destination`."""

    kind = "vmotion"

    def __init__(self, source: Any, destination: Any, destination_ip: str, spec: VmotionSpec,
                 tracker: ProcessTracker, outdir: Path, *, port: int = VMOTION_PORT,
                 mode: str = "live", name: str = "vmotion", switchover: bool = False) -> None:
        self.source, self.destination = source, destination
        self.switchover = switchover  # hand the pause to the mover (pause()/resume())
        self.destination_ip, self.spec, self.tracker = destination_ip, spec, tracker
        self.outdir, self.port, self.mode, self.name = Path(outdir), port, mode, name
        self.sender_log = self.outdir / f"{name}-sender.jsonl"
        self.receiver_log = self.outdir / f"{name}-receiver.jsonl"
        self.measured_rate_bps: float | None = None
        self.measured_samples_bps: list[float] = []
        self._receiver: Agent | None = None
        self._sender: Agent | None = None
        self.sender_error = ""

    def _program(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "vclab.workloads.vmotion.workload", *args]

    def check(self) -> None:
        if self.mode not in MODES:
            raise WorkloadError(f"vmotion mode {self.mode!r} is not one of {', '.join(MODES)}")
        for node in (self.source, self.destination):
            if not callable(getattr(node, "popen", None)):
                raise WorkloadError(f"{node!r} cannot run processes (no popen)")
        try:
            socket.inet_aton(self.destination_ip)
        except OSError:
            raise WorkloadError(f"vmotion destination {self.destination_ip!r} is not an IPv4 "
                                "address") from None
        self.outdir.mkdir(parents=True, exist_ok=True)
        if not os.access(self.outdir, os.W_OK):
            raise WorkloadError(f"cannot write vmotion logs to {self.outdir}")

    def _ensure_receiver(self, timeout: float = 10.0) -> None:
        if self._receiver and self._receiver.running():
            return
        self.receiver_log.unlink(missing_ok=True)
        self._receiver = Agent(
            self.destination, self._program("receive", "--bind", self.destination_ip, "--port",
                                            str(self.port), "--log", str(self.receiver_log)),
            self.tracker, f"{self.name}-receiver").spawn()
        try:
            self._receiver.expect("ready", timeout)
        except WorkloadError:
            err = self._receiver.stderr_tail() if not self._receiver.running() else ""
            self.stop()
            raise WorkloadError(f"vmotion receiver did not start on {self.destination_ip}:"
                                f"{self.port}: {err.strip()[-500:]}") from None

    def measure_rate(self, seconds: float = 2.0, timeout: float = 60.0) -> float:
        """The TCP rate the replay can reach between the two hosts now (bits/s)."""
        self._ensure_receiver()
        agent = Agent(self.source, self._program(
            "measure", "--to", self.destination_ip, "--port", str(self.port), "--seconds",
            str(seconds), "--page-bytes", str(self.spec.page_bytes)),
            self.tracker, f"{self.name}-measure")
        rc, out = agent.run_once(timeout, "vmotion rate measurement")
        if rc != 0:
            raise WorkloadError(f"vmotion rate measurement failed: {agent.stderr.strip()[-500:]}")
        result = json.loads(out)
        self.measured_rate_bps = float(result["rate_bps"])
        self.measured_samples_bps = [float(x) for x in result["samples_bps"]]
        return self.measured_rate_bps

    @property
    def run_spec(self) -> VmotionSpec:
        """The spec the sender runs: at the measured rate once measure_rate() ran, because the
        stop-and-copy threshold (downtime target x rate) must use the rate the fabric gives."""
        if self.measured_rate_bps:
            return self.spec.at_rate(self.measured_rate_bps)
        return self.spec

    def spawn(self, timeout: float = 30.0) -> None:
        """Start the sender and let it connect: with switchover it then waits for start()'s
        cue, so a migration readied before the run copies at its scheduled time (the
        process's start took ~0.25 s under the default load)."""
        self._ensure_receiver()
        self.sender_log.unlink(missing_ok=True)
        args = self._program("send", "--to", self.destination_ip, "--port", str(self.port),
                             "--spec", self.run_spec.model_dump_json(), "--mode", self.mode,
                             "--log", str(self.sender_log))
        self._sender = Agent(self.source, args + (["--switchover"] if self.switchover else []),
                             self.tracker, f"{self.name}-sender", stdin=self.switchover,
                             stdout=self.switchover).spawn()
        if self.switchover:
            self._expect("ready", timeout)

    def start(self) -> None:
        if self._sender is None:
            self.spawn()
        if self.switchover:
            self._sender.send("go")

    def _expect(self, word: str, timeout: float) -> int:
        sender = self._sender
        if sender is None or sender.proc is None or sender.proc.stdout is None:
            raise WorkloadError("vmotion: the sender was not started with switchover=True")
        t = sender.expect(word, timeout).t_ns
        if t is None:
            raise WorkloadError(f"vmotion sender said {word!r} without its time")
        return t

    def pause(self, timeout: float = 600.0) -> int:
        """Wait until pre-copy is over and the VM must pause: the sender's time (ns)."""
        return self._expect("pause", timeout)

    def resume(self, timeout: float = 600.0) -> int:
        """The VM is paused: send the stop-and-copy round; returns (ns) once it is acknowledged,
        when the VM may run on the destination."""
        assert self._sender is not None
        self._sender.send("go")
        return self._expect("copied", timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the migration finished (the sender exited) within `timeout` seconds."""
        if not self._sender or self._sender.proc is None:
            return False
        try:
            self._sender.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> None:
        sender = self._sender
        failed = sender is not None and sender.proc is not None and \
            sender.proc.poll() not in (0, None)
        for agent in (self._sender, self._receiver):
            if agent:
                agent.stop(drain_s=0)
        if failed:
            self.sender_error = sender.stderr[-2000:]
        self._sender = self._receiver = None

    def collect(self) -> dict[str, Any]:
        def lines(path: Path) -> list[dict]:
            if not path.exists():
                return []
            return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]

        return {
            "name": self.name,
            "mode": self.mode,
            "spec": self.run_spec.model_dump(),
            "measured_rate_bps": self.measured_rate_bps,
            "measured_samples_bps": self.measured_samples_bps,
            "sender": lines(self.sender_log),
            "receiver": lines(self.receiver_log),
            "sender_error": self.sender_error,
        }

    @staticmethod
    def parse(raw: dict[str, Any]) -> dict[str, Any]:
        """Measured rounds, total time and downtime; and the model at the measured rate."""
        spec = VmotionSpec(**raw["spec"])
        rounds = [e for e in raw["sender"] if e.get("event") == "round"]
        done = any(e.get("event") == "done" for e in raw["sender"])
        if not rounds:
            raise WorkloadError("the vmotion sender recorded no round")
        finished = done and rounds[-1]["phase"] == STOP_AND_COPY
        first = rounds[0]["t_start"]
        end = rounds[-1]["t_start"] + rounds[-1]["duration_s"]
        out: dict[str, Any] = {
            "finished": finished,
            "t_start": first,
            "rounds": [
                {"round": r["round"], "phase": r["phase"], "bytes": r["bytes"],
                 "start_s": r["t_start"] - first, "duration_s": r["duration_s"],
                 "rate_bps": r["bytes"] * 8 / r["duration_s"] if r["duration_s"] else None}
                for r in rounds
            ],
            "precopy_rounds": sum(1 for r in rounds if r["phase"] == MEMORY),
            "bytes_sent": sum(r["bytes"] for r in rounds),
            # The replay moves no device state: the modelled resume time is added so measured
            # and modelled figures count the same things.
            "total_s": end - first + spec.resume_s if finished else None,
            "downtime_s": rounds[-1]["duration_s"] + spec.resume_s if finished else None,
        }
        if finished:
            # The rate the fabric actually gave this migration: with it, the model separates
            # "the fabric was slower" from "a stall made the guest dirty more" (the latter
            # still leaves the measured total above the model).
            achieved = out["bytes_sent"] * 8 / (end - first)
            at_achieved = simulate(spec.at_rate(achieved))
            out["achieved_rate_bps"] = achieved
            out["model_at_achieved_total_s"] = at_achieved.total_s
        rate = raw.get("measured_rate_bps")
        if rate:
            model = simulate(spec.at_rate(rate))
            out["measured_rate_bps"] = rate
            out["model_total_s"] = model.total_s
            out["model_downtime_s"] = model.downtime_s
            out["model_precopy_rounds"] = model.precopy_rounds
            if finished:
                out["total_error"] = out["total_s"] / model.total_s - 1
        return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vclab.workloads.vmotion.workload")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("receive")
    r.add_argument("--bind", required=True)
    r.add_argument("--port", type=int, default=VMOTION_PORT)
    r.add_argument("--log")
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--port", type=int, default=VMOTION_PORT)
    s.add_argument("--spec", required=True, help="VmotionSpec as JSON")
    s.add_argument("--mode", choices=MODES, default="live")
    s.add_argument("--switchover", action="store_true",
                   help="print pause/copied around stop-and-copy; wait for a stdin line to pause")
    s.add_argument("--log")
    m = sub.add_parser("measure")
    m.add_argument("--to", required=True)
    m.add_argument("--port", type=int, default=VMOTION_PORT)
    m.add_argument("--seconds", type=float, default=2.0)
    m.add_argument("--page-bytes", type=int, default=4096)
    args = ap.parse_args(argv)
    if args.cmd == "receive":
        receive(args.bind, args.port, args.log)
    elif args.cmd == "send":
        send(args.to, args.port, VmotionSpec.model_validate_json(args.spec), args.mode, args.log,
             args.switchover)
    else:
        print(json.dumps(measure(args.to, args.port, args.seconds, args.page_bytes)))


if __name__ == "__main__":
    main()
