"""Cluster -> BuildPlan: every bridge, port, veth and address (render.py: the commands that
make them).

Pure: no Mininet, no root. The lab (lab/lab.py) creates the nodes and veths the plan lists, then
runs the command lists render.py generates from it (generate, then apply), so unit tests can
read exactly what a build would do.

How a cluster becomes Open vSwitch:
- a physical switch is a bridge `vcsN` whose ports are all 802.1Q trunks;
- a hypervisor, management server or storage array is a host (a namespace holding one interface
  per network, named after the network) plus its own virtual switch `vcvN`, where those interfaces
  are access ports and the NICs are uplinks trunking the server's VLANs (2+ NICs form one bond);
- a VM is a host whose interfaces are access ports on its hypervisor's virtual switch, so a
  migration only has to move its ports to another virtual switch.
Root-namespace names are short and opaque (15-character limit); the user's names travel in OVS
`external_ids` (`vclab-name` on bridges, `vclab-link` / `vclab-peer` on interfaces).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from vclab import PREFIX
from vclab.errors import VclabError
from vclab.topology.spec import Cluster, LinkSettings, TeamMode

PortRole = Literal["isl", "downlink", "uplink", "access"]
HostRole = Literal["management", "storage", "hypervisor", "vm"]

# 0x76 0x63 is "vc": every MAC vclab gives a root-namespace port or bridge is 02:76:63:KIND:BRIDGE:OFPORT.
_MAC_PHYSICAL, _MAC_VSWITCH = 0x01, 0x02
_MAX_INDEX = 255


@dataclass(frozen=True)
class Shape:
    """What a cable does to traffic leaving each of its ends (tc on the root-namespace device)."""

    rate: float | None  # bits/s; None = as fast as the machine goes
    delay: float = 0.0  # ms, one way
    loss: float = 0.0  # percent, one way

    @property
    def needs_netem(self) -> bool:
        return self.delay > 0 or self.loss > 0


@dataclass(frozen=True)
class Port:
    """One OVS interface: a veth end in the root namespace, on one bridge."""

    bridge: str
    name: str  # device and OVS interface name, e.g. vcs0p3
    ofport: int
    role: PortRole
    vlans: tuple[int, ...]  # the VLANs a trunk carries, or the one tag of an access port
    link: str  # the user's name for what this port is: esx1.vmnic0, tor-a/tor-b#1, esx1:vmotion
    peer: str  # the user's name of the node at the other end
    mac: str
    shape: Shape | None = None  # cables only; virtual ports are not shaped
    bond: str | None = None  # the bond this interface is a member of
    cost: int | None = None  # STP/RSTP path cost of an inter-switch link

    @property
    def mode(self) -> str:
        return "access" if self.role == "access" else "trunk"


@dataclass(frozen=True)
class Bond:
    """An OVS bond port: a NIC team on a virtual switch, or its LACP partner on a physical one."""

    bridge: str
    name: str
    members: tuple[str, ...]  # interface names
    mode: TeamMode
    primary: str | None  # active-backup's preferred member (interface name)
    role: PortRole
    vlans: tuple[int, ...]
    link: str  # esx1.team, or an inter-switch LAG's name
    peer: str
    cost: int | None = None  # STP/RSTP path cost of an inter-switch LAG


@dataclass(frozen=True)
class Bridge:
    name: str  # vcs0 / vcv0
    friendly: str  # tor-a / esx1
    kind: Literal["physical", "vswitch"]
    dpid: str  # 16 hex digits, for the SDN controller
    hwaddr: str  # fixed so STP/RSTP bridge IDs (and so tie-breaks) are the same every run
    priority: int | None  # physical switches: the STP/RSTP priority the user chose
    ports: tuple[Port, ...]
    bonds: tuple[Bond, ...] = ()

    def port(self, name: str) -> Port:
        return next(p for p in self.ports if p.name == name)

    def ovs_ports(self) -> list[Port | Bond]:
        """What OVS sees as ports: every bond, and every interface not in a bond."""
        return [p for p in self.ports if p.bond is None] + list(self.bonds)


@dataclass(frozen=True)
class HostInterface:
    host: str
    name: str  # named after its network
    network: str
    vlan: int
    ip: str
    prefixlen: int
    mac: str
    bridge: str  # the virtual switch its access port is on
    port: str  # the root-namespace end: that access port


@dataclass(frozen=True)
class Host:
    name: str
    role: HostRole
    interfaces: tuple[HostInterface, ...]
    vswitch: str | None  # its own virtual switch, or (VMs) its hypervisor's

    def interface(self, network: str) -> HostInterface:
        return next(i for i in self.interfaces if i.network == network)


@dataclass(frozen=True)
class End:
    node: str  # Mininet node name: a host's name or a bridge's name
    ifname: str
    mac: str
    in_root: bool  # bridges live in the root namespace, hosts in their own


@dataclass(frozen=True)
class Veth:
    name: str  # the user's name of the cable or virtual port
    a: End
    b: End
    shape: Shape | None = None


@dataclass(frozen=True)
class NetworkPlan:
    name: str
    vlan: int
    subnet: ipaddress.IPv4Network
    kind: str
    members: tuple[tuple[str, str], ...]  # (host, ip) in address order


@dataclass(frozen=True)
class BuildPlan:
    cluster: str
    bridges: tuple[Bridge, ...]
    hosts: tuple[Host, ...]
    veths: tuple[Veth, ...]
    networks: dict[str, NetworkPlan] = field(default_factory=dict)

    def bridge(self, name: str) -> Bridge:
        """By OVS name (vcs0) or by the user's name (tor-a, esx1's virtual switch: esx1)."""
        for b in self.bridges:
            if name in (b.name, b.friendly):
                return b
        raise KeyError(name)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def physical(self) -> list[Bridge]:
        return [b for b in self.bridges if b.kind == "physical"]

    @property
    def vswitches(self) -> list[Bridge]:
        return [b for b in self.bridges if b.kind == "vswitch"]

    def cables(self) -> list[Veth]:
        """The cables between two bridges (both ends in the root namespace); the veths to
        hosts do not count."""
        return [v for v in self.veths if v.a.in_root and v.b.in_root]

    def cable_peers(self) -> dict[str, str]:
        """Root-namespace interface -> the interface at the other end of its cable."""
        return {e.ifname: far.ifname for v in self.cables() for e, far in ((v.a, v.b), (v.b, v.a))}

    def root_links(self) -> list[str]:
        """Every veth end in the root namespace, to check before a build and remove after."""
        return [e.ifname for v in self.veths for e in (v.a, v.b) if e.in_root]

    def lags(self) -> list[str]:
        """Names of the inter-switch link aggregations (`lag:` in the cluster file)."""
        return sorted({b.link for br in self.physical for b in br.bonds if b.role == "isl"})

    def needs_netem(self) -> list[str]:
        """Names of the cables with a delay or loss (they need netem in the kernel)."""
        return [v.name for v in self.veths if v.shape is not None and v.shape.needs_netem]


# ---------------------------------------------------------------------------------------------
# Cluster -> plan


def _mac(kind: int, index: int, ofport: int) -> str:
    return f"02:76:63:{kind:02x}:{index:02x}:{ofport:02x}"


def _host_mac(ip: str) -> str:
    # Subnets never overlap, so an address is unique in the cluster and so is this MAC.
    return "02:00:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def _shape(settings: LinkSettings, rate, delay, loss) -> Shape:
    return Shape(
        rate=settings.rate if rate is None else rate,
        delay=settings.delay if delay is None else delay,
        loss=settings.loss if loss is None else loss,
    )


class _BridgeBuilder:
    """Hands out ofports, interface names and MACs on one bridge, in a fixed order."""

    def __init__(self, name: str, friendly: str, kind: str, index: int, dpid: int,
                 priority: int | None) -> None:
        self.name, self.friendly, self.kind, self.index = name, friendly, kind, index
        self.dpid = f"{dpid:016x}"
        self.mac_kind = _MAC_PHYSICAL if kind == "physical" else _MAC_VSWITCH
        self.priority = priority
        self.ports: list[Port] = []
        self.bonds: list[Bond] = []

    def add(self, role: PortRole, vlans, link: str, peer: str, shape: Shape | None = None,
            cost: int | None = None) -> Port:
        ofport = len(self.ports) + 1
        if ofport > _MAX_INDEX:
            raise VclabError(f"{self.friendly} would need more than {_MAX_INDEX} ports")
        port = Port(self.name, f"{self.name}p{ofport}", ofport, role, tuple(vlans), link, peer,
                    _mac(self.mac_kind, self.index, ofport), shape, None, cost)
        self.ports.append(port)
        return port

    def bond(self, members: list[Port], mode: TeamMode, primary: str | None, role: PortRole,
             vlans, link: str, peer: str, cost: int | None = None) -> Bond:
        name = f"{self.name}b{len(self.bonds) + 1}"
        names = {p.name for p in members}
        self.ports = [Port(**{**p.__dict__, "bond": name}) if p.name in names else p
                      for p in self.ports]
        bond = Bond(self.name, name, tuple(p.name for p in members), mode, primary, role,
                    tuple(vlans), link, peer, cost)
        self.bonds.append(bond)
        return bond

    def freeze(self) -> Bridge:
        return Bridge(self.name, self.friendly, self.kind, self.dpid,
                      _mac(self.mac_kind, self.index, 0), self.priority, tuple(self.ports),
                      tuple(self.bonds))


def build_plan(cluster: Cluster, prefix: str = PREFIX) -> BuildPlan:
    """Lay out the whole cluster. Deterministic: the same file gives the same names, ofports,
    MACs and addresses every time (addresses per network in file order: management servers,
    storage arrays, hypervisors, VMs, from .1 up)."""
    _check_names(cluster, prefix)
    vlan = {n: net.vlan for n, net in cluster.networks.items()}
    all_vlans = sorted(vlan.values())
    default = cluster.defaults.link

    physical = {sw: _BridgeBuilder(f"{prefix}s{i}", sw, "physical", i, i + 1, spec.priority)
                for i, (sw, spec) in enumerate(cluster.switches.items())}
    # Virtual switches: one per server or array, in address order.
    owners = [*cluster.management, *cluster.storage, *cluster.hypervisors]
    vswitch = {o: _BridgeBuilder(f"{prefix}v{j}", o, "vswitch", j, 0x10000 + j + 1, None)
               for j, o in enumerate(owners)}
    for builders in (physical, vswitch):
        if len(builders) > _MAX_INDEX:
            raise VclabError(f"vclab lays out at most {_MAX_INDEX} bridges of a kind")

    veths: list[Veth] = []

    def cable(name: str, a: Port, b: Port, shape: Shape | None) -> None:
        veths.append(Veth(name, End(a.bridge, a.name, a.mac, True),
                          End(b.bridge, b.name, b.mac, True), shape))

    # Inter-switch links first, so their ofports stay the same when servers are added.
    lag_ends: dict[tuple[str, str], list[Port]] = {}  # (lag, switch) -> its cables' ends there
    for link in cluster.link_list():
        sa, sb = link.between
        shape = _shape(default, link.rate, link.delay, link.loss)
        pa = physical[sa].add("isl", all_vlans, link.name, sb, shape, link.cost)
        pb = physical[sb].add("isl", all_vlans, link.name, sa, shape, link.cost)
        cable(link.name, pa, pb, shape)
        if link.lag is not None:
            lag_ends.setdefault((link.lag, sa), []).append(pa)
            lag_ends.setdefault((link.lag, sb), []).append(pb)
    for (lag, switch), members in lag_ends.items():
        physical[switch].bond(members, "lacp", None, "isl", all_vlans, lag, members[0].peer,
                              members[0].cost)

    # Addresses, per network in file order.
    next_ip: dict[str, int] = {n: 1 for n in cluster.networks}
    members: dict[str, list[tuple[str, str]]] = {n: [] for n in cluster.networks}

    def address(host: str, network: str) -> str:
        subnet = cluster.networks[network].subnet
        ip = str(subnet.network_address + next_ip[network])
        next_ip[network] += 1
        members[network].append((host, ip))
        return ip

    hosts: list[Host] = []

    def interfaces(host: str, networks: list[str], vs: _BridgeBuilder) -> tuple[HostInterface, ...]:
        out = []
        for network in networks:
            ip = address(host, network)
            mac = _host_mac(ip)
            port = vs.add("access", (vlan[network],), f"{host}:{network}", host)
            out.append(HostInterface(host, network, network, vlan[network], ip,
                                     cluster.networks[network].subnet.prefixlen, mac,
                                     vs.name, port.name))
            veths.append(Veth(f"{host}:{network}", End(host, network, mac, False),
                              End(vs.name, port.name, port.mac, True)))
        return tuple(out)

    vms_on: dict[str, list[str]] = {}
    for vm, spec in cluster.vms.items():
        vms_on.setdefault(spec.host, []).append(vm)

    def server(name: str, spec, role: HostRole) -> None:
        vs = vswitch[name]
        trunked = set(spec.networks)
        for vm in vms_on.get(name, []):
            trunked.update(cluster.vms[vm].networks)
        vlans = sorted(vlan[n] for n in trunked)
        uplinks, downlinks = [], []
        for nic, cabling in spec.nics.items():
            shape = _shape(default, cabling.rate, cabling.delay, cabling.loss)
            up = vs.add("uplink", vlans, f"{name}.{nic}", cabling.switch, shape)
            down = physical[cabling.switch].add("downlink", all_vlans, f"{name}.{nic}", name, shape)
            cable(f"{name}.{nic}", up, down, shape)
            uplinks.append(up)
            downlinks.append(down)
        if len(uplinks) > 1:
            team = spec.team
            primary = None
            if team.mode == "active-backup":
                nics = list(spec.nics)
                primary = uplinks[nics.index(team.primary) if team.primary else 0].name
            vs.bond(uplinks, team.mode, primary, "uplink", vlans, f"{name}.team",
                    ", ".join(sorted({c.switch for c in spec.nics.values()})))
            if team.mode == "lacp":
                # LACP is negotiated: the switch end must be a LACP bond too (every NIC is on
                # this one switch; the spec refuses LACP across switches).
                sw = physical[next(iter(spec.nics.values())).switch]
                sw.bond(downlinks, "lacp", None, "downlink", all_vlans, f"{name}.team", name)
        hosts.append(Host(name, role, interfaces(name, list(spec.networks), vs), vs.name))

    for name, spec in cluster.management.items():
        server(name, spec, "management")
    for name, spec in cluster.storage.items():
        vs = vswitch[name]
        for network, portal in spec.portals.items():
            # Each uplink carries only its own portal's VLAN: two uplinks never share a VLAN, so
            # the array can never close a loop between two switches.
            up = vs.add("uplink", (vlan[network],), f"{name}.{network}", portal.switch, _shape(default, None, None, None))
            down = physical[portal.switch].add("downlink", all_vlans, f"{name}.{network}", name, up.shape)
            cable(f"{name}.{network}", up, down, up.shape)
        hosts.append(Host(name, "storage", interfaces(name, list(spec.portals), vs), vs.name))
    for name, spec in cluster.hypervisors.items():
        server(name, spec, "hypervisor")
    for name, spec in cluster.vms.items():
        vs = vswitch[spec.host]
        hosts.append(Host(name, "vm", interfaces(name, list(spec.networks), vs), vs.name))

    # Hosts are listed in address order; keep the user's order within each kind.
    bridges = tuple(b.freeze() for b in (*physical.values(), *vswitch.values()))
    networks = {n: NetworkPlan(n, net.vlan, net.subnet, cluster.kind_of(n), tuple(members[n]))
                for n, net in cluster.networks.items()}
    plan = BuildPlan(cluster.cluster, bridges, tuple(hosts), tuple(veths), networks)
    too_long = [n for n in [b.name for b in bridges] + plan.root_links() if len(n) > 15]
    if too_long:
        raise VclabError(f"names longer than Linux's 15 characters: {', '.join(too_long[:5])}; "
                         f"use a shorter prefix than {prefix!r}")
    return plan


def _check_names(cluster: Cluster, prefix: str) -> None:
    problems = [why for _, why in name_problems(cluster, prefix)]
    if problems:
        raise VclabError("; ".join(problems))


def name_problems(cluster: Cluster, prefix: str = PREFIX) -> list[tuple[tuple, str]]:
    """Names the build cannot use, each with the path of the key to blame (for `vclab check`)."""
    problems = []
    sections = ("switches", "hypervisors", "storage", "management", "vms")
    for section in sections:
        for name in getattr(cluster, section):
            # Mininet keeps hosts and bridges in one namespace of names.
            if name.startswith(prefix) and len(name) > len(prefix) and name[len(prefix)] in "sv" \
                    and name[len(prefix) + 1:].isdigit():
                problems.append(((section, name), f"{name!r} is also the name of one of vclab's "
                                 f"bridges ({prefix}sN, {prefix}vN): rename it"))
    for name in cluster.networks:
        if name == "lo":
            problems.append((("networks", name), "a network cannot be called 'lo': its interfaces "
                             "are named after it"))
    return problems


# ---------------------------------------------------------------------------------------------
# Loops


def find_loop(plan: BuildPlan) -> list[str] | None:
    """A loop in the physical fabric, as [switch, link, switch, link, ..., first switch], or None.

    Only inter-switch links can close one: a bond never forwards between its members and a
    storage array's uplinks carry disjoint VLANs."""
    friendly = {b.name: b.friendly for b in plan.physical}
    parent = {name: name for name in friendly.values()}
    tree: dict[str, list[tuple[str, str]]] = {name: [] for name in friendly.values()}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    bonded = {p.name: p.bond for br in plan.physical for p in br.ports if p.bond}
    lag_seen: set[str] = set()
    for veth in plan.veths:
        if veth.a.node not in friendly or veth.b.node not in friendly:
            continue
        lag = bonded.get(veth.a.ifname)
        if lag is not None:  # a LAG's cables are one link: only its first counts
            if lag in lag_seen:
                continue
            lag_seen.add(lag)
        a, b = friendly[veth.a.node], friendly[veth.b.node]
        if root(a) == root(b):
            return [a, veth.name, *_tree_path(tree, b, a)]
        parent[root(a)] = root(b)
        tree[a].append((b, veth.name))
        tree[b].append((a, veth.name))
    return None


def _tree_path(tree: dict[str, list[tuple[str, str]]], start: str, goal: str) -> list[str]:
    """[start, link, node, link, ..., goal] through the spanning forest (breadth first)."""
    previous: dict[str, tuple[str, str] | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if node == goal:
            break
        for nxt, link in tree[node]:
            if nxt not in previous:
                previous[nxt] = (node, link)
                queue.append(nxt)
    path = [goal]
    node = goal
    while previous[node] is not None:
        before, link = previous[node]
        path[:0] = [before, link]
        node = before
    return path


def describe_loop(loop: list[str]) -> str:
    nodes, links = loop[0::2], loop[1::2]
    out = nodes[0]
    for link, node in zip(links, nodes[1:]):
        out += f" -[{link}]- {node}"
    return out
