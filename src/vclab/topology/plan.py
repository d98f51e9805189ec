"""Cluster -> BuildPlan: every bridge, port, veth, address, and the commands that make them.

Pure: no Mininet, no root. `build.py` creates the nodes and veths the plan lists, then runs the
command lists generated here (generate, then apply), so unit tests can read exactly what a build
would do.

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
from typing import TYPE_CHECKING, Literal

from vclab import PREFIX
from vclab.errors import VclabError
from vclab.topology.commands import Sysctl, Tc, Vsctl
from vclab.topology.spec import Cluster, LinkSettings, TeamMode

if TYPE_CHECKING:  # only for type hints: fabric depends on topology, not the reverse
    from vclab.fabric.mechanisms import Mechanism

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


# ---------------------------------------------------------------------------------------------
# Commands


def ovs_commands(plan: BuildPlan, datapath: str = "netdev", mechanism: Mechanism | None = None,
                 run_id: str = "") -> list[list[str]]:
    """One ovs-vsctl transaction per bridge: the bridge, its loop protection and every port at
    once, so a looped fabric never forwards a frame before STP/RSTP is on; then the
    mechanism's own commands. The readable form: `build_commands` is what a build runs."""
    commands = bridge_transactions(plan, datapath, mechanism, run_id)
    if mechanism is not None:
        commands += mechanism.commands(plan)
    return commands


def build_commands(plan: BuildPlan, datapath: str = "netdev", mechanism: Mechanism | None = None,
                   run_id: str = "", bridges: set[str] | None = None) -> list[list[str]]:
    """What a build runs: `ovs_commands` with the bridges' transactions merged into one (or a
    few, see `merge_transactions`). ovs-vswitchd reconfigures once per transaction, and a
    reconfiguration walks every bridge and port it has: one per bridge made the build
    quadratic in the cluster's size (19 of 29 s at 64 hypervisors). Every bridge still gets
    its loop protection in the transaction that creates it. `bridges`: only those (one
    server's, in cluster mode); the mechanism's commands then only with every bridge."""
    chosen = [b for b in plan.bridges if bridges is None or b.name in bridges]
    commands = merge_transactions(bridge_transactions(plan, datapath, mechanism, run_id, chosen))
    if mechanism is not None and bridges is None:
        commands += mechanism.commands(plan)
    return commands


# ovs-vsctl gets its transaction as arguments: stay far below Linux's 2 MiB ARG_MAX (with the
# default 8 MiB stack) whatever the cluster's size.
MAX_TRANSACTION_BYTES = 512 * 1024
MAX_TRANSACTION_TIMEOUT = 300


def merge_transactions(commands: list[list[str]],
                       max_bytes: int = MAX_TRANSACTION_BYTES) -> list[list[str]]:
    """Join consecutive `ovs-vsctl --timeout=T OP ...` transactions into one (ovs-vsctl joins
    operations with `--`, all or nothing), starting a new one before it would pass `max_bytes`
    of arguments. The merged timeout is the sum of the parts' (at most 300 s): as long as
    they were allowed together. Anything else is kept as it is, in order."""
    out: list[list[str]] = []
    current: list[str] | None = None
    devices: list[str] = []
    timeout = size = 0

    def flush() -> None:
        nonlocal current
        if current is not None:
            out.append(Vsctl([f"--timeout={min(timeout, MAX_TRANSACTION_TIMEOUT)}", *current],
                             devices))
            current = None

    for cmd in commands:
        t = _vsctl_timeout(cmd)
        if t is None:
            flush()
            out.append(cmd)
            continue
        ops, cost = cmd[2:], sum(len(a) + 1 for a in cmd[2:])
        if current is not None and size + cost > max_bytes:
            flush()
        if current is None:
            current, timeout, size, devices = list(ops), t, cost, []
        else:
            current += ["--", *ops]
            timeout, size = timeout + t, size + cost + 3
        devices += getattr(cmd, "devices", ())
    flush()
    return out


def _vsctl_timeout(cmd: list[str]) -> int | None:
    """T of `ovs-vsctl --timeout=T OP ...` (no other global option), else None."""
    if len(cmd) < 3 or cmd[0] != "ovs-vsctl" or not cmd[1].startswith("--timeout="):
        return None
    if cmd[2].startswith("-"):
        return None
    try:
        return int(cmd[1].split("=", 1)[1])
    except ValueError:
        return None


def bridge_transactions(plan: BuildPlan, datapath: str = "netdev",
                        mechanism: Mechanism | None = None, run_id: str = "",
                        bridges: list[Bridge] | None = None) -> list[list[str]]:
    """One ovs-vsctl transaction per bridge (of `bridges`, default all)."""
    commands = []
    for bridge in plan.bridges if bridges is None else bridges:
        if mechanism is not None and not mechanism.on_ovs(bridge):
            continue  # e.g. linux-stp: the mechanism's own commands make this switch
        options = mechanism.bridge_options(bridge) if mechanism is not None else []
        # A mechanism may choose the fail mode (sdn: secure, nothing forwards without rules).
        fail_mode = [] if any(o.startswith("fail_mode=") for o in options) else ["fail_mode=standalone"]
        cmd = ["--timeout=30", "add-br", bridge.name, "--", "set", "bridge",
               bridge.name, f"datapath_type={datapath}", *fail_mode,
               f"other_config:datapath-id={bridge.dpid}", f"other_config:hwaddr={bridge.hwaddr}",
               f"external_ids:vclab-name={bridge.friendly}",
               f"external_ids:vclab-kind={bridge.kind}"]
        if run_id:
            cmd.append(f"external_ids:vclab-run={run_id}")
        cmd += options
        for port in bridge.ovs_ports():
            vlan = ([f"tag={port.vlans[0]}"] if port.role == "access" else
                    ["vlan_mode=trunk", "trunks=" + ",".join(map(str, port.vlans))])
            extra = mechanism.port_options(bridge, port) if mechanism is not None else []
            if isinstance(port, Bond):
                cmd += ["--", "add-bond", bridge.name, port.name, *port.members, *vlan,
                        *_bond_columns(port), *extra]
                members = [bridge.port(m) for m in port.members]
            else:
                cmd += ["--", "add-port", bridge.name, port.name, *vlan, *extra]
                members = [port]
            for iface in members:
                cmd += ["--", "set", "interface", iface.name, f"ofport_request={iface.ofport}",
                        f'external_ids:vclab-link="{iface.link}"',
                        f'external_ids:vclab-peer="{iface.peer}"']
                if mechanism is not None:
                    cmd += mechanism.interface_options(bridge, iface)
        if mechanism is not None:
            cmd += mechanism.transaction(bridge)
        names = [bridge.name, *(p.name for p in bridge.ovs_ports()),
                 *(m for p in bridge.ovs_ports() if isinstance(p, Bond) for m in p.members)]
        commands.append(Vsctl(cmd, names))
    return commands


def _bond_columns(bond: Bond) -> list[str]:
    if bond.mode == "lacp":
        # lb-output-action: the userspace datapath picks the member itself, from a table the
        # main loop rewrites when a member goes down (no revalidation round: 0-2 ms measured).
        # Datapaths without it fall back to recirculation.
        return ["bond_mode=balance-tcp", "lacp=active", "other_config:lacp-time=fast",
                "other_config:lb-output-action=true"]
    cols = [f"bond_mode={bond.mode}"]
    if bond.primary:
        cols.append(f"other_config:bond-primary={bond.primary}")
    return cols


def ipv6_off_commands(ifnames: list[str]) -> list[list[str]]:
    """Switch ports carry no IP, so give them no IPv6 (no link-local address, no routes).

    ovs-vswitchd re-reads the whole routing table after every link change in its namespace
    (lib/route-table.c), in the main thread that also forwards every frame of the userspace
    datapath. With three IPv6 routes per port, each cable fault or repair stalled all traffic
    for that long; without them the re-read is a few routes. `-e`: a kernel without IPv6 has
    no such keys, and nothing to switch off."""
    if not ifnames:
        return []
    return [Sysctl([f"net/ipv6/conf/{name}/disable_ipv6=1" for name in sorted(ifnames)], ifnames)]


def tc_commands(plan: BuildPlan) -> list[list[str]]:
    """Shape every cable on both ends (each end shapes what leaves it): HTB for the rate, netem
    under it for delay and loss. Mininet's TCLink is not used: it ignores rates above 1 Gbit/s
    and carries on without delay when netem is missing, both silently."""
    commands = []
    seen = set()
    for veth in plan.veths:
        if veth.shape is None:
            continue
        for end in (veth.a, veth.b):
            if not end.in_root or end.ifname in seen:
                continue
            seen.add(end.ifname)
            commands += shape_commands(end.ifname, veth.shape)
    return commands


def shape_commands(dev: str, shape: Shape) -> list[list[str]]:
    out: list[list[str]] = []
    parent = ["root"]
    if shape.rate:
        rate = int(shape.rate)
        # A burst of 1 ms at the rate (at least 64 KiB, one TSO segment) keeps HTB accurate at
        # high rates without letting a long burst through at low ones.
        burst = max(rate // 8 // 1000, 65536)
        out += [Tc("qdisc", "replace", dev, "root", "handle", "5:", "htb", "default", "1"),
                Tc("class", "replace", dev, "parent", "5:", "classid", "5:1", "htb",
                   "rate", f"{rate}bit", "burst", str(burst), "cburst", str(burst),
                   "quantum", "200000")]
        parent = ["parent", "5:1"]
    if shape.needs_netem:
        netem = [*parent, "handle", "10:", "netem"]
        if shape.delay:
            netem += ["delay", f"{shape.delay:g}ms"]
        if shape.loss:
            netem += ["loss", f"{shape.loss:g}%"]
        out.append(Tc("qdisc", "replace", dev, *netem))
    return out


def host_commands(host: Host, tx_offload_off: bool = False, mtu: int | None = None) -> list[list[str]]:
    """Run inside the host's namespace after its interfaces exist. `mtu`: what a tunnel
    between servers leaves of a frame (cluster mode), or None to keep the default."""
    cmds = [["ip", "link", "set", "lo", "up"],
            # No IPv6 chatter (router solicitations, DAD) in the measurements.
            ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
            ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            # A host on several networks answers ARP only on the network the address is on, as
            # a hypervisor's vmk ports do; otherwise a VLAN-isolation check sees the host answer
            # for its management address on the VM network.
            ["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"],
            ["sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2"]]
    for i in host.interfaces:
        cmds.append(["ip", "addr", "replace", f"{i.ip}/{i.prefixlen}", "dev", i.name])
        if mtu is not None:
            cmds.append(["ip", "link", "set", i.name, "mtu", str(mtu)])
        cmds.append(["ip", "link", "set", i.name, "up"])
        if tx_offload_off:
            # Without OVS userspace TSO, TCP through the netdev datapath hangs on bad checksums.
            cmds.append(["ethtool", "-K", i.name, "tx", "off"])
    return cmds
