"""Cluster mode: which server runs which part of a cluster, and the tunnels between servers.

Pure: no Mininet, no root, no ssh. `lab.py` gives each Mininet node the server chosen here
(Mininet's cluster edition: `RemoteHost`, `RemoteOVSSwitch`, commands over ssh), creates the
VXLAN tunnels listed here in place of the veths of the cables that cross servers, and sends each
root command to the server holding what it names (`server_for`).

Placement rules:
- a server (hypervisor, management server, storage array) stays whole on one machine with its
  virtual switch and, for a hypervisor, its VMs: a VM's ports are veths into its hypervisor's
  virtual switch, and vMotion moves them between virtual switches, so only cables (NIC to
  physical switch, inter-switch links) ever cross machines;
- physical switches are spread over the machines in order (round robin), unless pinned;
- each server goes where it needs the fewest tunnels (its NICs' switches), among the machines
  that still have room for an even share of the nodes, ties to the least loaded.

A cable between machines is a VXLAN tunnel (UDP 4789, one VNI per cable) joining the two ends
that would have been a veth's; the ends keep their names and MACs, so the plan's OVS ports and
commands are the same either way. Mininet ships ssh and GRE tunnels; VXLAN is used because it is
in every kernel that can run vclab (GRE, like netem, is a module some kernels lack) and OVS
never sees the difference.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field

from vclab.errors import VclabError
from vclab.topology.plan import BuildPlan

LOCAL = "localhost"
VXLAN_PORT = 4789
VNI_BASE = 0x760000  # "v" in the high byte: vclab's tunnels are recognisable on the wire
# A 1500-byte underlay carries 1450 bytes of tunnelled frame (VXLAN adds 50): with a tunnel in
# the lab, every host interface is set to this MTU, or full-size frames die in the tunnel.
TUNNEL_MTU = 1450


@dataclass(frozen=True)
class Server:
    name: str  # what the user wrote: localhost, a host name or an address ssh reaches
    address: str  # where its tunnels end (its underlay address)

    @property
    def local(self) -> bool:
        return self.name == LOCAL


@dataclass(frozen=True)
class TunnelEnd:
    server: str
    node: str  # the bridge this end is a port of
    ifname: str  # the cable end's name, as the veth's would have been
    mac: str
    local: str  # this server's address
    remote: str  # the other server's


@dataclass(frozen=True)
class Tunnel:
    cable: str  # the user's name of the cable
    vni: int
    a: TunnelEnd
    b: TunnelEnd

    def end_on(self, server: str) -> list[TunnelEnd]:
        return [e for e in (self.a, self.b) if e.server == server]


@dataclass(frozen=True)
class Placement:
    servers: tuple[Server, ...]
    nodes: dict[str, str]  # Mininet node (host name, bridge name) -> server name
    tunnels: tuple[Tunnel, ...] = ()
    # root-namespace device (bridge, port, veth end) -> server name, for routing commands
    devices: dict[str, str] = field(default_factory=dict)

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    def bridges_on(self, server: str, plan: BuildPlan) -> set[str]:
        return {b.name for b in plan.bridges if self.nodes[b.name] == server}

    def crosses(self, a_node: str, b_node: str) -> bool:
        return self.nodes[a_node] != self.nodes[b_node]

    @property
    def remote(self) -> bool:
        """True when some node runs on another machine (ssh needed)."""
        return any(not self.server(s).local for s in set(self.nodes.values()))

    def load(self) -> dict[str, int]:
        """Nodes per server, in server order."""
        out = {s.name: 0 for s in self.servers}
        for server in self.nodes.values():
            out[server] += 1
        return out


def parse_servers(text: str | list[str]) -> list[Server]:
    """`a,b` or `a=10.0.0.1,b`: server names, each optionally with the address its tunnels
    end at (default: the name itself). `localhost` is this machine; beside remote servers it
    needs the address they reach it at (`localhost=10.0.0.1`)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    servers: list[Server] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, _, address = item.partition("=")
        name, address = name.strip(), address.strip()
        if not name or any(c.isspace() for c in name):
            raise VclabError(f"server {item!r}: a server is a host name or address, optionally "
                             "NAME=TUNNEL_ADDRESS")
        if name in (s.name for s in servers):
            raise VclabError(f"server {name!r} is listed twice")
        servers.append(Server(name, address or ("127.0.0.1" if name == LOCAL else name)))
    if not servers:
        raise VclabError("--servers needs at least one server (localhost is this machine)")
    if len(servers) > 1 and any(s.local and s.address.startswith("127.") for s in servers):
        raise VclabError("with other servers, give localhost's address they reach it at: "
                         "localhost=ADDRESS (tunnels cannot end at 127.0.0.1 across machines)")
    return servers


def _units(plan: BuildPlan) -> list[list[str]]:
    """Nodes that must share a machine: each server with its virtual switch (and VMs)."""
    units: list[list[str]] = []
    for host in plan.hosts:
        if host.role == "vm":
            continue
        unit = [host.name]
        if host.vswitch:
            unit.append(host.vswitch)
            unit += [h.name for h in plan.hosts if h.role == "vm" and h.vswitch == host.vswitch]
        units.append(unit)
    return units


def place(plan: BuildPlan, servers: list[Server], pins: dict[str, str] | None = None) -> Placement:
    """Every node of the plan on a server (rules in the module docstring). `pins`: the user's
    node name (a switch, hypervisor, management server or array) -> server name."""
    if not servers:
        raise VclabError("no servers to place the cluster on")
    names = [s.name for s in servers]
    pins = dict(pins or {})
    friendly = {b.friendly: b.name for b in plan.physical}
    known = set(friendly) | {h.name for h in plan.hosts if h.role != "vm"}
    problems = [f"pin {node!r}: no switch or server of that name" for node in pins if node not in known]
    problems += [f"pin {node}={server!r}: not one of the servers ({', '.join(names)})"
                 for node, server in pins.items() if server not in names]
    if problems:
        raise VclabError("; ".join(problems))

    nodes: dict[str, str] = {}
    load = {n: 0 for n in names}
    spread = 0
    for bridge in plan.physical:
        if bridge.friendly in pins:
            nodes[bridge.name] = pins[bridge.friendly]
        else:
            nodes[bridge.name] = names[spread % len(names)]
            spread += 1
        load[nodes[bridge.name]] += 1

    # Where each server's NICs lead: the physical switches its uplinks are cabled to.
    switch_of_port = {p.name: b.name for b in plan.physical for p in b.ports}
    cabled: dict[str, list[str]] = {}
    for veth in plan.veths:
        for mine, other in ((veth.a, veth.b), (veth.b, veth.a)):
            if other.ifname in switch_of_port and mine.node not in switch_of_port.values():
                cabled.setdefault(mine.node, []).append(switch_of_port[other.ifname])

    units = _units(plan)
    total = len(plan.physical) + sum(len(u) for u in units)
    room = math.ceil(total / len(names))
    for unit in units:
        owner, vswitch = unit[0], (unit[1] if len(unit) > 1 else None)
        if owner in pins:
            choice = pins[owner]
        else:
            switches = cabled.get(vswitch or owner, [])

            def cost(server: str) -> tuple[int, int, int]:
                crossings = sum(nodes[s] != server for s in switches)
                full = load[server] + len(unit) > room
                return (full, crossings, load[server])

            choice = min(names, key=lambda s: (*cost(s), names.index(s)))
        for node in unit:
            nodes[node] = choice
        load[choice] += len(unit)
    return _with_tunnels(plan, servers, nodes)


def _with_tunnels(plan: BuildPlan, servers: list[Server], nodes: dict[str, str]) -> Placement:
    address = {s.name: s.address for s in servers}
    devices: dict[str, str] = {b.name: nodes[b.name] for b in plan.bridges}
    tunnels: list[Tunnel] = []
    for veth in plan.veths:
        sa, sb = nodes[veth.a.node], nodes[veth.b.node]
        for end, server in ((veth.a, sa), (veth.b, sb)):
            if end.in_root:
                devices[end.ifname] = server
        if sa == sb:
            continue
        if not (veth.a.in_root and veth.b.in_root):
            # Cannot happen with `place` (a host stays with its virtual switch); a hand-made
            # placement that splits them is refused rather than half built.
            raise VclabError(f"{veth.name} joins a host to its virtual switch across servers "
                             f"({sa}, {sb}): a server stays whole on one machine")
        vni = VNI_BASE + len(tunnels) + 1
        tunnels.append(Tunnel(
            veth.name, vni,
            TunnelEnd(sa, veth.a.node, veth.a.ifname, veth.a.mac, address[sa], address[sb]),
            TunnelEnd(sb, veth.b.node, veth.b.ifname, veth.b.mac, address[sb], address[sa])))
    return Placement(tuple(servers), nodes, tuple(tunnels), devices)


def tunnel_commands(end: TunnelEnd, vni: int, port: int = VXLAN_PORT) -> list[list[str]]:
    """Make one end of a cable's tunnel on its server: a VXLAN device with the cable end's
    name and MAC, at the MTU a 1500-byte underlay leaves, up (OVS then adds it as the port
    the plan says)."""
    return [["ip", "link", "add", end.ifname, "address", end.mac, "type", "vxlan", "id",
             str(vni), "local", end.local, "remote", end.remote, "dstport", str(port)],
            ["ip", "link", "set", end.ifname, "mtu", str(TUNNEL_MTU), "up"]]


def server_for(command: list[str], placement: Placement) -> str | None:
    """The server a root-namespace command is about: the one holding the bridges and devices
    its fields name (a typed command's `devices`, topology/commands.py). None when it names
    none of them, or is a plain argument list: a question about this machine. Refused when it
    names things on two servers: the commands of a cluster-mode build are generated per server."""
    devices = getattr(command, "devices", ())
    found = {placement.devices[d] for d in devices if d in placement.devices}
    if len(found) > 1:
        raise VclabError(f"{shlex.join(command)[:120]} names devices on "
                         f"{', '.join(sorted(found))}: split it per server")
    return found.pop() if found else None


def remote_command(server: Server, args: list[str], user: str | None = None) -> list[str]:
    """ssh to a server and run `args` there as root (sudo without a password, as Mininet's
    cluster edition needs too); the arguments travel as one quoted shell line."""
    dest = f"{user}@{server.name}" if user else server.name
    return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", dest, "sudo", "-n",
            shlex.join(args)]


def describe(placement: Placement, plan: BuildPlan) -> list[str]:
    """One line per server: what runs there; then one per tunnel."""
    friendly = {b.name: b.friendly for b in plan.bridges}
    lines = []
    for server in placement.servers:
        mine = [n for n, s in placement.nodes.items() if s == server.name]
        switches = [friendly[n] for n in mine if n in friendly and
                    plan.bridge(n).kind == "physical"]
        servers = [h.name for h in plan.hosts if h.role != "vm" and h.name in mine]
        vms = [h.name for h in plan.hosts if h.role == "vm" and h.name in mine]
        lines.append(f"{server.name}: switches {', '.join(switches) or '-'}; servers "
                     f"{', '.join(servers) or '-'}; {len(vms)} VMs ({len(mine)} nodes)")
    for t in placement.tunnels:
        lines.append(f"tunnel {t.cable}: {t.a.server} {t.a.ifname} <-> {t.b.server} "
                     f"{t.b.ifname} (VXLAN {t.vni})")
    return lines
