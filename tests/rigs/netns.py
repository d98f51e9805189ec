"""Test rig: named network namespaces as Mininet-like nodes, and a small rig of them on one OVS bridge.

Mininet hosts and these nodes share the one method workloads need: `popen(args, **kw)`, which
runs a command inside the node's namespace. Tests and benches that need no whole cluster use
`rig()`; everything it creates carries the caller's prefix and is removed on exit. The faults
they check the probe with: `BlackHole` (an OpenFlow drop rule, as a switch failure looks) and
`MtuBlackHole` (in the kernel, so its edges are known to the microsecond).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from vclab.errors import VclabError


def run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@dataclass
class NetnsNode:
    """A named netns (`ip netns add NAME`) that runs commands like a Mininet host."""

    name: str
    ips: dict[str, str] = field(default_factory=dict)  # interface -> address

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *args], **kwargs)

    def cmd(self, args: list[str], check: bool = False) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.name, *args], check=check)

    @property
    def ip(self) -> str:
        return next(iter(self.ips.values()))


@dataclass
class Rig:
    bridge: str
    nodes: list[NetnsNode]
    ports: dict[str, str]  # node name -> its OVS port (root-namespace end of the veth)
    ofports: dict[str, int]


@contextmanager
def rig(prefix: str, count: int = 2, subnet: str = "10.250.0.0/24") -> Iterator[Rig]:
    """`count` namespaces PREFIX-a, PREFIX-b, ... on one netdev OVS bridge PREFIX-br (NORMAL).

    Offloads are turned off on the endpoints so TCP works even where OVS's userspace TSO is not
    enabled (see STACK.md)."""
    bridge = f"{prefix}-br"
    net = ipaddress.ip_network(subnet)
    nodes: list[NetnsNode] = []
    ports: dict[str, str] = {}
    ofports: dict[str, int] = {}
    try:
        run(["ovs-vsctl", "--may-exist", "add-br", bridge, "--", "set", "bridge", bridge,
             "datapath_type=netdev", "fail_mode=standalone"])
        run(["ip", "link", "set", bridge, "up"], check=False)
        for i in range(count):
            letter = chr(ord("a") + i)
            name = f"{prefix}-{letter}"
            port = f"{prefix}-{letter}p"
            run(["ip", "netns", "add", name])
            run(["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name])
            node = NetnsNode(name, {"eth0": str(net.network_address + 1 + i)})
            nodes.append(node)
            ports[name] = port
            node.cmd(["ip", "addr", "add", f"{node.ip}/{net.prefixlen}", "dev", "eth0"], check=True)
            node.cmd(["ip", "link", "set", "eth0", "up"], check=True)
            node.cmd(["ip", "link", "set", "lo", "up"], check=True)
            node.cmd(["ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off"])
            run(["ip", "link", "set", port, "up"])
            run(["ovs-vsctl", "add-port", bridge, port, "--", "set", "interface", port,
                 f"ofport_request={i + 1}"])
            ofports[name] = i + 1
        yield Rig(bridge, nodes, ports, ofports)
    finally:
        run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)
        for i in range(count):
            letter = chr(ord("a") + i)
            run(["ip", "link", "del", f"{prefix}-{letter}p"], check=False)
            run(["ip", "netns", "del", f"{prefix}-{letter}"], check=False)


def ovs_rundir() -> str:
    return os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")


class OpenFlowSocket:
    """A direct OpenFlow 1.3 connection to a bridge's management socket.

    `ovs-ofctl` costs ~7 ms of process start per rule on a busy machine, which would blur the
    moment a fault took effect; a flow mod plus barrier over this socket takes ~0.2 ms."""

    def __init__(self, bridge: str) -> None:
        from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

        self.ofp, self.parser = ofproto_v1_3, ofproto_v1_3_parser
        # os-ken's messages only need the datapath for its protocol modules.
        self.dp = SimpleNamespace(ofproto=ofproto_v1_3, ofproto_parser=ofproto_v1_3_parser)
        self.xid = 0
        self.last_mono = (0, 0)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(f"{ovs_rundir()}/{bridge}.mgmt")
        self.sock.sendall(self._bytes(self.parser.OFPHello(self.dp)))
        version, kind, _ = self._read()
        if kind != self.ofp.OFPT_HELLO or version < self.ofp.OFP_VERSION:
            raise VclabError(f"{bridge}: OpenFlow 1.3 not enabled (got version {version})")

    def _bytes(self, msg: Any) -> bytes:
        self.xid += 1
        msg.set_xid(self.xid)
        msg.serialize()
        return bytes(msg.buf)

    def _read(self) -> tuple[int, int, int]:
        head = self._exact(8)
        version, kind, length, xid = struct.unpack("!BBHI", head)
        body = self._exact(length - 8)
        if kind == self.ofp.OFPT_ERROR:
            err_type, code = struct.unpack_from("!HH", body)
            raise VclabError(f"OpenFlow error type {err_type} code {code} (xid {xid})")
        return version, kind, xid

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise VclabError("OpenFlow connection closed by the switch")
            buf += chunk
        return buf

    def flow_mod(self, **kwargs: Any) -> tuple[int, int]:
        """Send a flow mod and a barrier; return CLOCK_REALTIME ns just before sending and
        just after the barrier reply (the switch has then applied the flow mod).
        `last_mono` holds the same two moments on CLOCK_MONOTONIC."""
        data = self._bytes(self.parser.OFPFlowMod(self.dp, **kwargs))
        data += self._bytes(self.parser.OFPBarrierRequest(self.dp))
        barrier = self.xid
        sent, sent_mono = time.time_ns(), time.monotonic_ns()
        self.sock.sendall(data)
        while True:
            _, kind, xid = self._read()
            if kind == self.ofp.OFPT_BARRIER_REPLY and xid == barrier:
                done_mono, done = time.monotonic_ns(), time.time_ns()
                self.last_mono = (sent_mono, done_mono)
                return sent, done

    def echo(self) -> tuple[int, int]:
        """An echo round trip: CLOCK_REALTIME ns when asked and when answered."""
        data = self._bytes(self.parser.OFPEchoRequest(self.dp))
        xid = self.xid
        sent = time.time_ns()
        self.sock.sendall(data)
        while self._read()[2] != xid:
            pass
        return sent, time.time_ns()

    def close(self) -> None:
        self.sock.close()


@dataclass
class BlackHole:
    """A silent-loss fault: an OpenFlow drop rule above NORMAL, carrier stays up.

    By default it drops every IPv4 packet on the bridge (ARP still passes, so recovery is not
    delayed by address resolution). `match` takes os-ken OFPMatch fields, e.g.
    {"in_port": 1, "eth_type": 0x0800}. apply() and undo() record when the rule really took
    effect: `applied_ns`/`undone_ns` are taken just after the switch confirmed it, and the
    `*_sent_ns` just before the request, so the effect lies between the two."""

    bridge: str
    match: dict[str, Any] = field(default_factory=lambda: {"eth_type": 0x0800})
    priority: int = 65000
    cookie: int = 0x7663_0000_0000_B1AC  # "vc" + black: finds our rule and nobody else's
    # OVS confirms a flow mod before its revalidators have updated the datapath's cached
    # flows. Measured on 2 cores: each edge lands -1.3..+2.7 ms from the confirmation, up to
    # +10 ms with the host overloaded (the probe sees it; the timestamps here cannot). The
    # lags of the two edges mostly cancel in the length: 5 ms covered 39 of 40 trials.
    effect_slack_ms: float = 5.0
    switch_timed: bool = True
    applied_sent_ns: int | None = None
    applied_ns: int | None = None
    undone_sent_ns: int | None = None
    undone_ns: int | None = None
    # the four moments on CLOCK_MONOTONIC: the length is a duration, which a step of the wall
    # clock (NTP, a VM's guest agent) would otherwise lengthen or shorten
    mono: dict[str, int] = field(default_factory=dict)
    _of: OpenFlowSocket | None = field(default=None, repr=False)

    def _conn(self) -> OpenFlowSocket:
        if self._of is None:
            self._of = OpenFlowSocket(self.bridge)
        return self._of

    def connect(self) -> "BlackHole":
        """Open the connection now, so apply() pays no setup cost."""
        self._conn()
        return self

    def apply(self) -> int:
        of = self._conn()
        self.applied_sent_ns, self.applied_ns = of.flow_mod(
            cookie=self.cookie, priority=self.priority, match=of.parser.OFPMatch(**self.match),
            instructions=[])  # no instructions: drop
        self.mono["applied_sent"], self.mono["applied"] = of.last_mono
        return self.applied_ns

    def undo(self) -> int:
        of = self._conn()
        self.undone_sent_ns, self.undone_ns = of.flow_mod(
            command=of.ofp.OFPFC_DELETE, table_id=of.ofp.OFPTT_ALL, cookie=self.cookie,
            cookie_mask=0xFFFF_FFFF_FFFF_FFFF, out_port=of.ofp.OFPP_ANY,
            out_group=of.ofp.OFPG_ANY, match=of.parser.OFPMatch())
        self.mono["undone_sent"], self.mono["undone"] = of.last_mono
        return self.undone_ns

    @property
    def length_ms(self) -> float | None:
        """How long the path was black-holed. Each edge took effect somewhere between the
        request and the switch's confirmation: take the middle of both (monotonic clock)."""
        m = self.mono
        if len(m) < 4 or self.undone_ns is None:
            return None
        return ((m["undone_sent"] + m["undone"]) - (m["applied_sent"] + m["applied"])) / 2e6

    @property
    def length_error_ms(self) -> float | None:
        """+- on length_ms: half of each request's round trip to the switch."""
        m = self.mono
        if self.length_ms is None:
            return None
        return ((m["undone"] - m["undone_sent"]) + (m["applied"] - m["applied_sent"])) / 2e6

    def close(self) -> None:
        """Remove the rule if it is still in place, and close the connection."""
        try:
            if self.applied_ns is not None and self.undone_ns is None:
                self.undo()
        finally:
            if self._of is not None:
                self._of.close()
                self._of = None

    def __enter__(self) -> "BlackHole":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


class SwitchWatch:
    """A witness that tells the switch's stalls from the probe's: OpenFlow echo requests every
    few ms on a connection of its own, answered by the same ovs-vswitchd main loop that
    forwards the netdev ports. Other users of a shared OVS adding or deleting bridges stall
    that loop for 10-600 ms, and forwarding with it; a trial run through such a stall measures
    the switch's behaviour, not the probe's accuracy."""

    def __init__(self, bridge: str, every_s: float = 0.005) -> None:
        self.bridge = bridge
        self.every_s = every_s
        self.samples: list[tuple[int, int]] = []  # (sent, answered) CLOCK_REALTIME ns
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: Exception | None = None

    def _run(self, of: OpenFlowSocket) -> None:
        try:
            while not self._stop.is_set():
                self.samples.append(of.echo())
                self._stop.wait(self.every_s)
        except (OSError, VclabError) as e:
            self.error = e
        finally:
            of.close()

    def start(self) -> "SwitchWatch":
        self._thread = threading.Thread(target=self._run, args=(OpenFlowSocket(self.bridge),),
                                        name=f"watch-{self.bridge}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def stalls(self, min_ms: float = 10.0) -> list[tuple[int, int]]:
        """(start, end) ns of every echo that took at least `min_ms` to be answered."""
        return [(s, e) for s, e in self.samples if e - s >= min_ms * 1e6]

    def __enter__(self) -> "SwitchWatch":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


SIOCGIFMTU, SIOCSIFMTU = 0x8921, 0x8922
MIN_MTU = 68  # IPv4's minimum: ARP (28 + 14 bytes) still fits, probes of 64-byte payload do not


def link_mtu(ifname: str, mtu: int | None = None) -> int:
    """Read (or set) a root-namespace interface's MTU with one ioctl: no process, no delay."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16si", ifname.encode(), mtu or 0).ljust(40, b"\0")
        out = fcntl.ioctl(s, SIOCSIFMTU if mtu else SIOCGIFMTU, ifreq)
        return struct.unpack_from("16si", out)[1]


@dataclass
class MtuBlackHole:
    """A black hole with exactly known edges: shrink one veth's MTU to the minimum.

    The kernel then drops every larger frame the namespace sends into the veth (at the
    sender's own sendto, so that direction's edges are the ioctl's, to ~0.1 ms) and OVS cannot
    send larger frames out of it (that direction also carries OVS's queueing delay at each
    edge). ARP still fits. Not how a switch fails, but the reference for the probe's accuracy:
    nothing in Open vSwitch decides when it takes effect. Same record as BlackHole."""

    port: str  # root-namespace end of a rig veth, e.g. Rig.ports["vcp-a"]
    mtu: int = MIN_MTU
    effect_slack_ms: float = 0.0
    switch_timed: bool = False
    original_mtu: int | None = None
    applied_sent_ns: int | None = None
    applied_ns: int | None = None
    undone_sent_ns: int | None = None
    undone_ns: int | None = None
    mono: dict[str, int] = field(default_factory=dict)

    def connect(self) -> "MtuBlackHole":
        self.original_mtu = link_mtu(self.port)
        return self

    def apply(self) -> int:
        if self.original_mtu is None:
            self.connect()
        self.applied_sent_ns, self.mono["applied_sent"] = time.time_ns(), time.monotonic_ns()
        link_mtu(self.port, self.mtu)
        self.mono["applied"], self.applied_ns = time.monotonic_ns(), time.time_ns()
        return self.applied_ns

    def undo(self) -> int:
        self.undone_sent_ns, self.mono["undone_sent"] = time.time_ns(), time.monotonic_ns()
        link_mtu(self.port, self.original_mtu)
        self.mono["undone"], self.undone_ns = time.monotonic_ns(), time.time_ns()
        return self.undone_ns

    length_ms = BlackHole.length_ms
    length_error_ms = BlackHole.length_error_ms

    def close(self) -> None:
        if self.applied_ns is not None and self.undone_ns is None:
            self.undo()

    def __enter__(self) -> "MtuBlackHole":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()
