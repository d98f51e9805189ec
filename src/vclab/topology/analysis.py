"""What a cluster file promises before anything is built: single points of failure, hypervisors
missing networks, a management network that is not redundant or not isolated. Pure: no root.

The model:
- switches and inter-switch links form the fabric; every VLAN is carried everywhere in it;
- a server (hypervisor or management server) reaches the fabric through its active NIC: the
  team's primary while it has carrier, else the first live NIC in file order. Teams fail over on
  carrier loss only, so a server whose NICs end up in two halves of a split fabric stays in the
  half of its active NIC;
- a storage array reaches a storage network through the portal it has on that network;
- a VM reaches a network through its hypervisor, if the hypervisor is on that network.

A member of a network is cut when it has no live attachment, or when the network's members fall
into several pieces and it is not in the biggest one (ties: the piece of the member listed
first). Storage is judged per hypervisor and array instead: multipath needs one live path, so
losing one of two paths is a note, losing the last is a single point of failure.

"Management not isolated from VM traffic": VLANs and subnets cannot be shared (validation
forbids it) and VMs cannot join a management network (their networks must be of kind vm), so
the one way left is QoS: VM networks hold a guaranteed share of the links and a management
network has none, so VM bursts can starve heartbeats and vCenter traffic on the shared uplinks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from vclab.topology.spec import Cluster

Severity = Literal["error", "warning", "note"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "note")

# What every hypervisor must be on, so any VM can run or migrate anywhere.
REQUIRED_KINDS: tuple[str, ...] = ("management", "vmotion", "storage")


@dataclass(frozen=True)
class Finding:
    """One thing the cluster's design gets wrong or should know about."""

    severity: Severity
    code: str  # e.g. "single-point-of-failure", "missing-network"
    subject: str  # the component in the user's names: tor-a, tor-a/tor-b#1, esx1.vmnic0
    message: str
    path: tuple = ()  # where in the file, e.g. ("hypervisors", "esx1"), for file:line

    def __str__(self) -> str:
        return f"{self.severity}: {self.code}: {self.subject}: {self.message}"


@dataclass(frozen=True)
class Failure:
    """One component lost: a switch, an inter-switch link, a server NIC or an array portal."""

    kind: Literal["switch", "link", "NIC", "portal"]
    name: str
    path: tuple


def analyse(cluster: Cluster) -> list[Finding]:
    """Every finding for the cluster: errors, then warnings, then notes, each in file order."""
    findings = missing_networks(cluster)
    findings += management_not_redundant(cluster)
    findings += management_not_isolated(cluster)
    findings += unreachable(cluster)
    findings += single_points_of_failure(cluster)
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


# ---- the rule: every hypervisor on every network a VM may need -------------------------------

def missing_networks(c: Cluster) -> list[Finding]:
    out: list[Finding] = []
    if c.hypervisors:
        for kind in REQUIRED_KINDS:
            if not c.networks_of_kind(kind):
                out.append(Finding("error", "missing-network", c.cluster,
                                   f"the cluster has no {kind} network, which every hypervisor needs",
                                   ("networks",)))
    used_by: dict[str, list[str]] = {}
    for vm, spec in c.vms.items():
        for net in spec.networks:
            used_by.setdefault(net, []).append(vm)
    for name, hv in c.hypervisors.items():
        for net in c.networks:
            if net in hv.networks:
                continue
            kind = c.kind_of(net)
            if kind in REQUIRED_KINDS:
                why = {"management": f"{name} cannot be managed or send HA heartbeats there",
                       "vmotion": f"VMs cannot migrate to or from {name}",
                       "storage": f"{name} has no path to the datastores behind {net}"}[kind]
                what = net if net == kind else f"{net} (a {kind} network)"
                out.append(Finding("error", "missing-network", name, f"{name} is not on {what}: {why}",
                                   ("hypervisors", name, "networks")))
            elif net in used_by:
                here = [vm for vm in used_by[net] if c.vms[vm].host == name]
                vms = ", ".join(used_by[net])
                why = (f"{', '.join(here)} on it cannot reach {net}" if here
                       else f"{vms} cannot run there")
                out.append(Finding("error", "missing-network", name,
                                   f"{name} is not on VM network {net}, used by {vms}: {why}",
                                   ("hypervisors", name, "networks")))
    for name, server in c.management.items():
        if not any(c.kind_of(n) == "management" for n in server.networks):
            out.append(Finding("error", "missing-network", name,
                               f"management server {name} is on no management network",
                               ("management", name, "networks")))
    return out


# ---- management ------------------------------------------------------------------------------

def management_not_redundant(c: Cluster) -> list[Finding]:
    out: list[Finding] = []
    for name, server in c.management.items():
        switches = {nic.switch for nic in server.nics.values()}
        if len(server.nics) == 1:
            nic = next(iter(server.nics))
            out.append(Finding("warning", "management-not-redundant", name,
                               f"management server {name} has a single NIC ({nic}): losing it "
                               "or its switch cuts management off", ("management", name, "nics")))
        elif len(switches) == 1:
            out.append(Finding("warning", "management-not-redundant", name,
                               f"every NIC of management server {name} is cabled to switch "
                               f"{next(iter(switches))}: losing that switch cuts management off",
                               ("management", name, "nics")))
    return out


def management_not_isolated(c: Cluster) -> list[Finding]:
    vm_shares = [n for n in c.networks_of_kind("vm") if c.networks[n].share]
    if not vm_shares:
        return []
    return [Finding("warning", "management-not-isolated", net,
                    f"management network {net} has no guaranteed share while VM network"
                    f"{'s' if len(vm_shares) > 1 else ''} {', '.join(vm_shares)} "
                    f"{'have' if len(vm_shares) > 1 else 'has'} one: VM traffic can starve "
                    "management and HA heartbeats on the shared uplinks", ("networks", net))
            for net in c.networks_of_kind("management") if not c.networks[net].share]


# ---- connectivity ----------------------------------------------------------------------------

def failures(c: Cluster) -> list[Failure]:
    """Every single component whose loss is worth trying, in file order."""
    out = [Failure("switch", s, ("switches", s)) for s in c.switches]
    out += [Failure("link", link.name or f"#{i + 1}", ("links", i)) for i, link in enumerate(c.link_list())]
    for section in ("hypervisors", "management"):
        for host, server in getattr(c, section).items():
            out += [Failure("NIC", f"{host}.{nic}", (section, host, "nics", nic)) for nic in server.nics]
    for array, spec in c.storage.items():
        out += [Failure("portal", f"{array}.{net}", ("storage", array, "portals", net)) for net in spec.portals]
    return out


def _fabric_pieces(c: Cluster, lost: Failure | None) -> dict[str, int]:
    """Live switch -> number of the piece of fabric it is in (BFS over live links)."""
    live = [s for s in c.switches if not (lost and lost.kind == "switch" and lost.name == s)]
    neighbours: dict[str, list[str]] = {s: [] for s in live}
    for link in c.link_list():
        a, b = link.between
        if lost and lost.kind == "link" and lost.name == link.name:
            continue
        if a in neighbours and b in neighbours:
            neighbours[a].append(b)
            neighbours[b].append(a)
    piece: dict[str, int] = {}
    for start in live:
        if start in piece:
            continue
        piece[start] = len(set(piece.values()))
        todo = [start]
        while todo:
            for nxt in neighbours[todo.pop()]:
                if nxt not in piece:
                    piece[nxt] = piece[start]
                    todo.append(nxt)
    return piece


@dataclass(frozen=True)
class _State:
    """Where every member attaches with one component lost (None = nowhere)."""

    server: dict[str, int | None]  # server -> piece of its active NIC
    portal: dict[tuple[str, str], int | None]  # (array, network) -> piece


def _state(c: Cluster, lost: Failure | None) -> _State:
    piece = _fabric_pieces(c, lost)
    server: dict[str, int | None] = {}
    for name, spec in c.servers().items():
        live = [nic for nic, cab in spec.nics.items()
                if cab.switch in piece and not (lost and lost.kind == "NIC" and lost.name == f"{name}.{nic}")]
        active = spec.team.primary if spec.team.primary in live else (live[0] if live else None)
        server[name] = piece[spec.nics[active].switch] if active else None
    portal: dict[tuple[str, str], int | None] = {}
    for array, spec in c.storage.items():
        for net, p in spec.portals.items():
            gone = lost is not None and lost.kind == "portal" and lost.name == f"{array}.{net}"
            portal[(array, net)] = None if gone else piece.get(p.switch)
    return _State(server, portal)


def _attachments(c: Cluster) -> dict[str, list[tuple[str, str]]]:
    """Network (all but storage) -> its (member, server it reaches the fabric through). The
    same for every failure: computed once, so trying each failure stays linear in the file."""
    out: dict[str, list[tuple[str, str]]] = {}
    for net in c.networks:
        if c.kind_of(net) == "storage":
            continue
        members = [(s, s) for s, spec in c.servers().items() if net in spec.networks]
        members += [(vm, spec.host) for vm, spec in c.vms.items()
                    if net in spec.networks and spec.host in c.hypervisors
                    and net in c.hypervisors[spec.host].networks]
        out[net] = members
    return out


def _cuts(c: Cluster, st: _State, skip: Collection[str] = (),
          attached: dict[str, list[tuple[str, str]]] | None = None) -> set[tuple[str, str]]:
    """(member, network) pairs cut off, for every network but storage (judged per path)."""
    out: set[tuple[str, str]] = set()
    for net, members in (attached if attached is not None else _attachments(c)).items():
        if net in skip:
            continue
        pieces = [st.server[via] for _, via in members]
        sizes = Counter(p for p in pieces if p is not None)
        # The biggest piece is the network; a tie goes to the piece of the member listed first.
        main = max(sizes, key=lambda p: (sizes[p], -pieces.index(p)), default=None)
        out |= {(m, net) for (m, _), p in zip(members, pieces) if p is None or p != main}
    return out


def _shared(c: Cluster) -> dict[tuple[str, str], list[str]]:
    """(server, array) -> the storage networks both are on (the server's possible paths)."""
    out: dict[tuple[str, str], list[str]] = {}
    for name, spec in c.servers().items():
        on = set(spec.networks)
        for array, arr in c.storage.items():
            shared = [n for n in arr.portals if n in on]
            if shared:
                out[(name, array)] = shared
    return out


def _paths(c: Cluster, st: _State,
           shared: dict[tuple[str, str], list[str]] | None = None) -> dict[tuple[str, str], set[str]]:
    """(server, array) -> storage networks on which the server reaches the array's portal."""
    out: dict[tuple[str, str], set[str]] = {}
    for (name, array), nets in (shared if shared is not None else _shared(c)).items():
        here = st.server[name]
        out[(name, array)] = {n for n in nets if here is not None and st.portal[(array, n)] == here}
    return out


def _clauses(pairs: set[tuple[str, str]], order: list[str]) -> str:
    """'esx1, esx3 from management, vmotion; web1 from vm-web': members grouped by what they lose."""
    rank: dict[str, int] = {}
    for i, name in enumerate(order):
        rank.setdefault(name, i)

    def key(name: str) -> tuple[int, str]:
        return (rank.get(name, len(rank)), name)

    lost: dict[str, list[str]] = {}
    for member, what in pairs:
        lost.setdefault(member, []).append(what)
    groups: dict[tuple[str, ...], list[str]] = {}
    for member in sorted(lost, key=key):
        groups.setdefault(tuple(sorted(lost[member], key=key)), []).append(member)
    return "; ".join(f"{', '.join(ms)} from {', '.join(ws)}" for ws, ms in groups.items())


def unreachable(c: Cluster) -> list[Finding]:
    """Members cut off with nothing lost: the fabric is split or an array is out of reach."""
    st = _state(c, None)
    order = _order(c)
    lost: dict[str, list[str]] = {}
    for member, net in _cuts(c, st):
        lost.setdefault(member, []).append(net)
    out = [Finding("error", "unreachable", m, f"{m} cannot reach every member of "
                   f"{', '.join(sorted(lost[m], key=order.index))} even with nothing failed: "
                   "the switches it needs are not linked", _where(c, m))
           for m in sorted(lost, key=order.index)]
    for (server, array), nets in _paths(c, st).items():
        if not nets:
            out.append(Finding("error", "unreachable", server, f"{server} has no storage path to "
                               f"{array} even with nothing failed", _where(c, server)))
    return out


def single_points_of_failure(c: Cluster) -> list[Finding]:
    """Fail each switch, link, NIC and portal in turn; report what newly loses its network."""
    order = _order(c)
    base = _state(c, None)
    attached, shared = _attachments(c), _shared(c)
    # A network already split is reported as unreachable; which piece counts as "the network"
    # would shift with every failure, so it gets no single-failure verdict until it is fixed.
    split = {net for _, net in _cuts(c, base, (), attached)}
    base_paths = _paths(c, base, shared)
    errors: list[Finding] = []
    notes: list[Finding] = []
    for lost in failures(c):
        st = _state(c, lost)
        cut = _cuts(c, st, split, attached)
        fewer: dict[str, dict[str, list[str]]] = {}  # array -> paths left -> servers
        for key, nets in _paths(c, st, shared).items():
            server, array = key
            if not base_paths[key]:
                continue
            if not nets:
                cut.add((server, f"{array}'s storage"))
            elif nets < base_paths[key]:
                fewer.setdefault(array, {}).setdefault(", ".join(sorted(nets)), []).append(server)
        if cut:
            errors.append(Finding("error", "single-point-of-failure", lost.name,
                                  f"losing {lost.kind} {lost.name} cuts {_clauses(cut, order)}", lost.path))
        if fewer:
            parts = [f"{', '.join(servers)} only {left} to {array}"
                     for array, by_left in fewer.items() for left, servers in by_left.items()]
            notes.append(Finding("note", "storage-path-lost", lost.name,
                                 f"losing {lost.kind} {lost.name} leaves {'; '.join(parts)} "
                                 "(multipath keeps the datastore, without redundancy)", lost.path))
    return errors + notes


def _order(c: Cluster) -> list[str]:
    """Networks, then names, in file order, so messages list things as the user wrote them."""
    return [*c.networks, *c.node_names()]


def _where(c: Cluster, name: str) -> tuple:
    for section in ("hypervisors", "management", "storage", "vms"):
        if name in getattr(c, section):
            return (section, name)
    return ()
