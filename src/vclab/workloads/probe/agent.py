"""One end of a bidirectional 1 ms UDP probe, run inside a host's network namespace.

    python -m vclab.workloads.probe.agent --bind 10.0.0.1 --peer 10.0.0.2 --out a.probe

Each agent sends to its peer on an absolute schedule and records what it sent (seq, send time)
and what it received (seq, the peer's send time, the kernel's receive time). Times are
CLOCK_REALTIME ns, the clock SO_TIMESTAMPNS uses, so one-way delay is meaningful when both
agents share a machine. Each send is also stamped on CLOCK_MONOTONIC: the wall clock can be
stepped while probing (NTP, a VM's guest agent: +1..5 ms steps per second were seen on a CI
runner), and an outage is a duration on the sender, which only the monotonic clock gives.
Every probe also echoes the last peer seq received and how long ago (TWAMP-style), which gives
RTT without trusting the clocks and without reflecting packets.

Stdlib only and kept lean: it shares two cores with Open vSwitch. The log format lives here
(`write_log`/`read_log`) so the writer and the reader cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

# session, seq, t_send, echo_seq, echo_hold_ns
PAYLOAD = struct.Struct("!IIqIq")
# 64-byte payload (106-byte frames): above the minimum MTU, so netns.MtuBlackHole can drop
# probes while ARP still passes.
DEFAULT_SIZE = 64
NO_ECHO = 0xFFFFFFFF
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("@qq")
MAGIC = b"VCPROBE1"
# After a stop request the agent keeps receiving this long, so probes its peer sent just
# before its own stop are not recorded as lost.
LINGER_S = 0.25
# Behind schedule by more than this many intervals (the sender was descheduled): skip ahead
# instead of bursting, so one stall cannot flood the path.
MAX_CATCH_UP = 20


@dataclass
class AgentLog:
    """Everything one agent recorded. Columns are parallel arrays, one entry per probe."""

    interval_ns: int
    rx_start_ns: int  # receiving from here on: earlier peer probes could not be seen
    rx_end_ns: int
    sent_seq: array = field(default_factory=lambda: array("I"))
    sent_t: array = field(default_factory=lambda: array("q"))
    recv_seq: array = field(default_factory=lambda: array("I"))
    recv_t_send: array = field(default_factory=lambda: array("q"))
    recv_t_recv: array = field(default_factory=lambda: array("q"))
    recv_echo_seq: array = field(default_factory=lambda: array("I"))
    recv_echo_hold: array = field(default_factory=lambda: array("q"))
    sent_mono: array = field(default_factory=lambda: array("q"))  # CLOCK_MONOTONIC of each send
    info: dict = field(default_factory=dict)  # bind/peer addresses, scheduler, errors

    def columns(self) -> list[array]:
        return [self.sent_seq, self.sent_t, self.recv_seq, self.recv_t_send, self.recv_t_recv,
                self.recv_echo_seq, self.recv_echo_hold, self.sent_mono]


def write_log(log: AgentLog, path: Path) -> None:
    """Header (JSON) then each column as a length-prefixed raw array: 60 s at 1 kHz ~ 2 MB."""
    header = dict(log.info, interval_ns=log.interval_ns, rx_start_ns=log.rx_start_ns,
                  rx_end_ns=log.rx_end_ns, byteorder=sys.byteorder, columns=len(log.columns()))
    blob = json.dumps(header).encode()
    tmp = Path(f"{path}.tmp")
    with tmp.open("wb") as f:
        f.write(MAGIC + struct.pack("<I", len(blob)) + blob)
        for col in log.columns():
            f.write(struct.pack("<cI", col.typecode.encode(), len(col)))
            col.tofile(f)
    os.replace(tmp, path)  # a reader never sees half a log


def read_log(path: Path) -> AgentLog:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path}: not a probe log")
    pos = len(MAGIC)
    (hlen,) = struct.unpack_from("<I", data, pos)
    pos += 4
    header = json.loads(data[pos : pos + hlen])
    pos += hlen
    swap = header.pop("byteorder", sys.byteorder) != sys.byteorder
    cols = []
    for _ in range(header.pop("columns", 7)):  # 7: written before sends were stamped monotonic
        code, n = struct.unpack_from("<cI", data, pos)
        pos += 5
        col = array(code.decode())
        col.frombytes(data[pos : pos + n * col.itemsize])
        pos += n * col.itemsize
        if swap:
            col.byteswap()
        cols.append(col)
    interval_ns = header.pop("interval_ns")
    rx_start, rx_end = header.pop("rx_start_ns"), header.pop("rx_end_ns")
    return AgentLog(interval_ns, rx_start, rx_end, *cols, info=header)


def udp_drops() -> int:
    """UDP datagrams this namespace's kernel dropped on receive (buffer full, bad checksum):
    losses the probe would cause itself, as opposed to the network's."""
    try:
        head, values = [line.split()[1:] for line in Path("/proc/net/snmp").read_text().splitlines()
                        if line.startswith("Udp:")][:2]
    except (OSError, ValueError):
        return 0
    stats = dict(zip(head, map(int, values)))
    return stats.get("InErrors", 0)  # counts RcvbufErrors and InCsumErrors too


def _realtime(priority: int) -> str:
    """SCHED_FIFO if allowed: the agent sleeps almost all the time, so it cannot starve OVS,
    and it wakes on schedule even when OVS keeps both cores busy."""
    if priority <= 0:
        return "other"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return f"fifo:{priority}"
    except (AttributeError, OSError):
        return "other"


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.interval_ns = int(args.interval_ms * 1e6)
        self.peer = (args.peer, args.peer_port or args.port)
        self.session = args.session
        self.stopping = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((args.bind, args.port))
        self.sock.setblocking(False)
        self.pad = b"\0" * max(0, args.size - PAYLOAD.size)
        self.seq = 0
        self.last_rx_seq = NO_ECHO
        self.last_rx_t = 0
        self.log = AgentLog(self.interval_ns, 0, 0)
        self.log.info = {"bind": args.bind, "peer": args.peer, "port": args.port,
                         "session": args.session, "size": max(args.size, PAYLOAD.size),
                         "send_errors": 0, "foreign": 0}

    def stop(self, *_: object) -> None:
        self.stopping = True

    def send(self) -> None:
        now = time.time_ns()
        mono = time.monotonic_ns()
        hold = now - self.last_rx_t if self.last_rx_seq != NO_ECHO else 0
        msg = PAYLOAD.pack(self.session, self.seq, now, self.last_rx_seq, hold) + self.pad
        try:
            self.sock.sendto(msg, self.peer)
        except OSError:
            # No route / no ARP answer during a fault: the probe is lost, as on the wire.
            self.log.info["send_errors"] += 1
        self.log.sent_seq.append(self.seq)
        self.log.sent_t.append(now)
        self.log.sent_mono.append(mono)
        self.seq = (self.seq + 1) & 0xFFFFFFFF

    def drain(self) -> None:
        log = self.log
        while True:
            try:
                data, anc, _flags, addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # a queued ICMP error from before the peer bound: not a probe
            if len(data) < PAYLOAD.size or addr[0] != self.peer[0]:
                log.info["foreign"] += 1
                continue
            session, seq, t_send, echo_seq, hold = PAYLOAD.unpack_from(data)
            if session != self.session:
                log.info["foreign"] += 1
                continue
            t_recv = 0
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = TIMESPEC.unpack_from(cdata)
                    t_recv = sec * 1_000_000_000 + nsec
            if not t_recv:  # no kernel timestamp (should not happen): next best thing
                t_recv = time.time_ns()
            log.recv_seq.append(seq)
            log.recv_t_send.append(t_send)
            log.recv_t_recv.append(t_recv)
            log.recv_echo_seq.append(echo_seq)
            log.recv_echo_hold.append(hold)
            self.last_rx_seq, self.last_rx_t = seq, t_recv

    def wait(self, until_mono_ns: int) -> None:
        """Receive until the monotonic deadline (select has µs resolution, poll only ms)."""
        while True:
            left = until_mono_ns - time.monotonic_ns()
            if left <= 0:
                return
            ready, _, _ = select.select([self.sock], [], [], left / 1e9)
            if ready:
                self.drain()
            if self.stopping:
                return

    def run(self) -> AgentLog:
        args = self.args
        self.log.info["sched"] = _realtime(args.rt_priority)
        drops = udp_drops()
        self.log.rx_start_ns = time.time_ns()
        print("ready", self.log.rx_start_ns, flush=True)
        start = time.monotonic_ns()
        end = start + int(args.duration * 1e9) if args.duration > 0 else None
        due = start
        while not self.stopping:
            now = time.monotonic_ns()
            if end is not None and now >= end:
                break
            if now >= due:
                self.send()
                due += self.interval_ns
                if now - due > MAX_CATCH_UP * self.interval_ns:
                    due = now + self.interval_ns
                continue
            self.wait(due)
        self._linger()
        self.log.rx_end_ns = time.time_ns()
        # per namespace, so another UDP user there would count too: an upper bound
        self.log.info["udp_drops"] = udp_drops() - drops
        return self.log

    def _linger(self) -> None:
        self.stopping = False  # let wait() run its full course
        self.wait(time.monotonic_ns() + int(LINGER_S * 1e9))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bind", required=True, help="this endpoint's address")
    p.add_argument("--peer", required=True, help="the other endpoint's address")
    p.add_argument("--port", type=int, default=7370)
    p.add_argument("--peer-port", type=int, default=0, help="default: same as --port")
    p.add_argument("--interval-ms", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until SIGTERM")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="UDP payload bytes")
    p.add_argument("--session", type=int, default=0, help="tag that rejects stray old probes")
    p.add_argument("--rt-priority", type=int, default=10, help="SCHED_FIFO priority; 0 = off")
    p.add_argument("--out", required=True, type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.interval_ms <= 0:
        print("--interval-ms must be > 0", file=sys.stderr)
        return 2
    agent = Agent(args)
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    log = agent.run()
    write_log(log, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
