"""Named network namespaces as Mininet-like nodes, and a small rig of them on one OVS bridge.

Mininet hosts and these nodes share the one method workloads need: `popen(args, **kw)`, which
runs a command inside the node's namespace. Tests and benches that need no whole cluster use
`rig()`; everything it creates carries the caller's prefix and is removed on exit.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


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
