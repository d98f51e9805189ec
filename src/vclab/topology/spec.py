"""The cluster as the user describes it: pure data, validated whole, no Mininet.

Structure (types, allowed keys, ranges) is checked by pydantic; `semantic_problems` then checks
what needs the whole file (references, duplicates, overlaps) and reports every problem with the
path of the offending key, so the loader can point at its line."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from vclab.errors import shown
from vclab.units import Bytes, Millis, Percent, Rate

_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,14}")


def _check_name(value: str) -> str:
    # Names become Mininet host names and interface names inside namespaces: Linux allows 15
    # characters, and a shell or `ip` must never see anything else than these characters.
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{shown(value)} cannot become a Linux interface or host name: use 1 to 15 lowercase "
            "letters, digits, '-' or '_', starting with a letter"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]


def _check_vlan(value: int) -> int:
    if not 1 <= value <= 4094:
        raise ValueError(f"VLAN {value} is outside 1..4094 (0 and 4095 are reserved by 802.1Q)")
    return value


# Strict: pydantic would take `vlan: true` for VLAN 1 and `vlan: 10.0` for VLAN 10.
Vlan = Annotated[int, Field(strict=True), AfterValidator(_check_vlan)]


def _subnet_text(value: object) -> object:
    # pydantic would read `subnet: 5` as 0.0.0.5/32: a subnet is only ever written as text.
    if isinstance(value, (str, ipaddress.IPv4Network)):
        return value
    raise ValueError(f"{shown(value)} is not a subnet; write ADDRESS/PREFIX, e.g. 10.10.0.0/24")


# Blocks no host on a LAN can use: every address there means something else to the kernel.
_NOT_A_LAN = [(ipaddress.IPv4Network("0.0.0.0/8"), "'this network' (0.0.0.0/8), which no host may use"),
              (ipaddress.IPv4Network("127.0.0.0/8"), "loopback (127.0.0.0/8), which never leaves a host"),
              (ipaddress.IPv4Network("224.0.0.0/4"), "multicast (224.0.0.0/4), which cannot be a host's address"),
              (ipaddress.IPv4Network("240.0.0.0/4"), "reserved (240.0.0.0/4, and broadcast)")]


def _usable_subnet(net: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    for block, what in _NOT_A_LAN:
        if net.overlaps(block):
            raise ValueError(f"subnet {net} reaches into {what}; use a private range such as 10.0.0.0/8, "
                             "172.16.0.0/12 or 192.168.0.0/16")
    return net


Subnet = Annotated[ipaddress.IPv4Network, BeforeValidator(_subnet_text), AfterValidator(_usable_subnet)]

# units.py parses the forms; these say which values make sense for a cluster.
LinkRate = Annotated[Rate, Field(gt=0, allow_inf_nan=False)]
Duration = Annotated[Millis, Field(ge=0, allow_inf_nan=False)]
Size = Annotated[Bytes, Field(gt=0)]

NetworkKind = Literal["management", "vmotion", "storage", "vm"]
Mechanism = Literal["none", "stp", "rstp", "linux-stp", "sdn"]
TeamMode = Literal["active-backup", "balance-slb", "lacp"]
NETWORK_KINDS: tuple[str, ...] = ("management", "vmotion", "storage", "vm")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinkSettings(Strict):
    """What a cable is like. Delay and loss need netem in the kernel (`vclab doctor` tells)."""

    rate: LinkRate | None = None
    delay: Duration = 0.0
    loss: Percent = 0.0


class Defaults(Strict):
    link: LinkSettings = LinkSettings(rate=1e9)


class Network(Strict):
    vlan: Vlan
    subnet: Subnet
    kind: NetworkKind | None = None  # defaults to the network's name when that is a kind
    share: Percent | None = None  # guaranteed share of every link, for QoS
    cap: LinkRate | None = None  # policed maximum, for QoS


class Switch(Strict):
    # The user puts the root bridge: STP/RSTP priorities step by 4096.
    priority: int = Field(default=32768, ge=0, le=61440, multiple_of=4096, strict=True)


class Link(Strict):
    """Long form of an inter-switch link; the short form is `[tor-a, tor-b]`."""

    between: tuple[Name, Name]
    # Faults name links by it; it reaches OVS external_ids, so only name-like characters.
    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_./#-]{0,63}$")
    rate: LinkRate | None = None
    delay: Duration | None = None
    loss: Percent | None = None
    cost: int | None = Field(default=None, ge=1, le=200_000_000, strict=True)  # STP/RSTP port cost
    # Cables with the same lag name are one link aggregation between their two switches (LACP
    # at the fast rate, balance-tcp): one port to STP/RSTP, members fail over in the datapath.
    lag: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data):
        return {"between": data} if isinstance(data, (list, tuple)) else data


class Nic(Strict):
    """Long form of a NIC's cabling; the short form is just the switch's name."""

    switch: Name
    rate: LinkRate | None = None
    delay: Duration | None = None
    loss: Percent | None = None


class Team(Strict):
    # lacp = OVS balance-tcp with LACP at the fast rate; it needs every NIC on one switch.
    mode: TeamMode = "active-backup"
    primary: Name | None = None  # active-backup's preferred NIC: defaults to the first one


def _short_nics(value):
    if isinstance(value, dict):
        return {k: ({"switch": v} if isinstance(v, str) else v) for k, v in value.items()}
    return value


NicMap = Annotated[dict[Name, Nic], Field(min_length=1)]


class Server(Strict):
    """Anything with NICs cabled to the fabric: a hypervisor or a management server."""

    nics: NicMap
    team: Team = Team()
    networks: list[Name] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _nics_short_form(cls, data):
        if isinstance(data, dict) and "nics" in data:
            data = {**data, "nics": _short_nics(data["nics"])}
        return data


class Hypervisor(Server):
    pass


class ManagementServer(Server):
    networks: list[Name] = Field(default_factory=lambda: ["management"], min_length=1)


class Portal(Strict):
    switch: Name


class Chap(Strict):
    user: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    secret: str = Field(min_length=12, max_length=16)  # RFC 3720's 96..128-bit secrets


class StorageArray(Strict):
    portals: Annotated[dict[Name, Portal], Field(min_length=1)]  # storage network -> switch
    luns: dict[Name, Size] = Field(default_factory=dict)
    chap: Chap | None = None

    @model_validator(mode="before")
    @classmethod
    def _portals_short_form(cls, data):
        if isinstance(data, dict) and isinstance(data.get("portals"), dict):
            data = {**data, "portals": {k: ({"switch": v} if isinstance(v, str) else v)
                                        for k, v in data["portals"].items()}}
        return data


class VM(Strict):
    host: Name
    networks: list[Name] = Field(default_factory=list)
    memory: Size = 4 * 2**30
    dirty_rate: Annotated[Rate, Field(ge=0, allow_inf_nan=False)] = 0.0  # pages the guest writes ("200MB/s")
    working_set: Size | None = None  # memory the guest keeps rewriting; None = all of it
    disk: Size = 20 * 2**30


class Cluster(Strict):
    cluster: Name
    mechanism: Mechanism = "rstp"
    defaults: Defaults = Defaults()
    networks: Annotated[dict[Name, Network], Field(min_length=1)]
    switches: Annotated[dict[Name, Switch], Field(min_length=1)]
    links: list[Link] = Field(default_factory=list)
    hypervisors: dict[Name, Hypervisor] = Field(default_factory=dict)
    storage: dict[Name, StorageArray] = Field(default_factory=dict)
    management: dict[Name, ManagementServer] = Field(default_factory=dict)
    vms: dict[Name, VM] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _null_sections(cls, data):
        # `switches:` with nothing under it reads as null; an empty section is what was meant.
        if isinstance(data, dict):
            data = dict(data)
            for key in ("switches", "hypervisors", "storage", "management", "vms"):
                if key in data and data[key] is not None and isinstance(data[key], dict):
                    data[key] = {k: ({} if v is None else v) for k, v in data[key].items()}
        return data

    # ---- derived views, used by analysis and build ----
    def kind_of(self, network: str) -> str:
        net = self.networks[network]
        return net.kind or network

    def networks_of_kind(self, kind: str) -> list[str]:
        return [n for n in self.networks if self.kind_of(n) == kind]

    def link_list(self) -> list[Link]:
        """Every inter-switch link in long form, named `a/b#n` unless the user named it."""
        out: list[Link] = []
        seen: Counter = Counter()
        for link in self.links:
            pair = link.between
            seen[pair] += 1
            if link.name is None:
                link = link.model_copy(update={"name": f"{pair[0]}/{pair[1]}#{seen[pair]}"})
            out.append(link)
        return out

    def servers(self) -> dict[str, Server]:
        return {**self.hypervisors, **self.management}

    def node_names(self) -> list[str]:
        return [*self.switches, *self.hypervisors, *self.storage, *self.management, *self.vms]


Path = tuple  # a location in the document: ("hypervisors", "esx1", "nics", "vmnic0")


def _overlapping_subnets(c: Cluster) -> list[tuple[Path, str]]:
    """Each pair of networks whose subnets overlap, blamed on the later one in the file.
    Subnets nest or are apart, never half-overlap: sorted by start (widest first), the subnets
    still open when one starts are exactly those that contain it. O(n log n) plus the pairs
    reported; past the nearest OVERLAPS_SHOWN containers a subnet's further ones are not listed."""
    order = {name: i for i, name in enumerate(c.networks)}
    spans = sorted(((int(n.subnet.network_address), int(n.subnet.broadcast_address), order[name], name)
                    for name, n in c.networks.items()), key=lambda s: (s[0], -s[1], s[2]))
    found: list[tuple[int, int, str, str]] = []
    open_: list[tuple[int, int, str]] = []  # (end, file position, name) of the containers
    for start, end, pos, name in spans:
        while open_ and open_[-1][0] < start:
            open_.pop()
        for _, other_pos, other in reversed(open_[-OVERLAPS_SHOWN:]):
            later, earlier = (name, other) if pos > other_pos else (other, name)
            found.append((order[later], order[earlier], later, earlier))
        open_.append((end, pos, name))
    return [(("networks", b, "subnet"), f"subnet {c.networks[b].subnet} overlaps "
                                        f"{c.networks[a].subnet} of network {a!r}")
            for _, _, b, a in sorted(found)]


OVERLAPS_SHOWN = 8


def semantic_problems(c: Cluster) -> list[tuple[Path, str]]:
    """Every cross-reference problem in the cluster, each with the path of the key to blame."""
    out: list[tuple[Path, str]] = []
    switches = sorted(c.switches)

    def need_switch(path: Path, name: str) -> None:
        if name not in c.switches:
            out.append((path, f"unknown switch {name!r}; switches are: {', '.join(switches)}"))

    def need_network(path: Path, name: str, kinds: tuple[str, ...] | None = None) -> None:
        if name not in c.networks:
            out.append((path, f"unknown network {name!r}; networks are: {', '.join(sorted(c.networks))}"))
        # A network with no kind is reported once, where it is defined, not at every use.
        elif kinds and c.kind_of(name) in NETWORK_KINDS and c.kind_of(name) not in kinds:
            out.append((path, f"network {name!r} is of kind {c.kind_of(name)!r}; "
                              f"expected {' or '.join(kinds)}"))

    # Names share one namespace: they become Mininet host names.
    sections = ("switches", "hypervisors", "storage", "management", "vms")
    first_seen: dict[str, str] = {}
    for section in sections:
        for name in getattr(c, section):
            if name in first_seen:
                out.append(((section, name), f"name {name!r} is already used in {first_seen[name]}"))
            else:
                first_seen[name] = section

    for name, net in c.networks.items():
        if net.kind is None and name not in NETWORK_KINDS:
            out.append((("networks", name), f"network {name!r} needs `kind:` "
                        f"(one of {', '.join(NETWORK_KINDS)}) since its name is not a kind"))
    vlans: dict[int, str] = {}
    for name, net in c.networks.items():
        if net.vlan in vlans:
            out.append((("networks", name, "vlan"), f"VLAN {net.vlan} is already used by network {vlans[net.vlan]!r}"))
        vlans.setdefault(net.vlan, name)
    out += _overlapping_subnets(c)
    total_share = sum(n.share or 0 for n in c.networks.values())
    if total_share > 100:
        out.append((("networks",), f"the shares add up to {total_share:g}%; at most 100% can be guaranteed"))

    for i, link in enumerate(c.link_list()):
        a, b = link.between
        base: Path = ("links", i, "between")
        need_switch(base + (0,), a)
        need_switch(base + (1,), b)
        if a == b:
            out.append((base, f"a link joins two different switches, not {a!r} to itself"))
    link_names = Counter(l.name for l in c.link_list())
    for i, link in enumerate(c.link_list()):
        if link_names[link.name] > 1:
            out.append((("links", i), f"link name {link.name!r} is used more than once"))
    lags: dict[str, list[tuple[int, Link]]] = {}
    for i, link in enumerate(c.link_list()):
        if link.lag is not None:
            lags.setdefault(link.lag, []).append((i, link))
    for lag, members in lags.items():
        first_i, first = members[0]
        if len(members) < 2:
            out.append((("links", first_i, "lag"), f"LAG {lag!r} has only this cable; a link "
                        "aggregation needs two cables or more between the same two switches"))
        for i, link in members[1:]:
            if set(link.between) != set(first.between):
                out.append((("links", i, "lag"), f"LAG {lag!r} joins {first.between[0]} and "
                            f"{first.between[1]} (links[{first_i}]); this cable joins "
                            f"{link.between[0]} and {link.between[1]}"))
            elif link.cost != first.cost:
                out.append((("links", i, "cost"), f"the cables of LAG {lag!r} are one port to "
                            f"STP/RSTP, so they take one cost: {first.cost} (links[{first_i}]), "
                            f"not {link.cost}"))

    for section in ("hypervisors", "management"):
        for host, server in getattr(c, section).items():
            for nic, cabling in server.nics.items():
                need_switch((section, host, "nics", nic), cabling.switch)
            for j, net in enumerate(server.networks):
                need_network((section, host, "networks", j), net)
            if len(set(server.networks)) != len(server.networks):
                out.append(((section, host, "networks"), "a network is listed twice"))
            team = server.team
            if team.primary is not None and team.primary not in server.nics:
                out.append(((section, host, "team", "primary"),
                            f"unknown NIC {team.primary!r}; NICs are: {', '.join(server.nics)}"))
            cabled = {n.switch for n in server.nics.values()}
            if team.mode == "lacp" and len(cabled) > 1:
                out.append(((section, host, "team", "mode"),
                            "LACP across independent switches needs MLAG, which vclab does not "
                            "emulate: use active-backup or balance-slb, or cable every NIC to one switch"))

    for array, spec in c.storage.items():
        for net, portal in spec.portals.items():
            need_network(("storage", array, "portals", net), net, ("storage",))
            need_switch(("storage", array, "portals", net), portal.switch)

    for vm, spec in c.vms.items():
        if spec.host not in c.hypervisors:
            out.append((("vms", vm, "host"), f"unknown hypervisor {spec.host!r}; hypervisors are: "
                        f"{', '.join(sorted(c.hypervisors)) or '(none)'}"))
        for j, net in enumerate(spec.networks):
            need_network(("vms", vm, "networks", j), net, ("vm",))
        if len(set(spec.networks)) != len(spec.networks):
            out.append((("vms", vm, "networks"), "a network is listed twice"))
        if spec.working_set is not None and spec.working_set > spec.memory:
            out.append((("vms", vm, "working_set"), "the working set cannot exceed the VM's memory"))

    # Every member of a network needs an address in its subnet.
    members: Counter = Counter()
    for server in c.servers().values():
        members.update(server.networks)
    for spec in c.storage.values():
        members.update(list(spec.portals))
    for spec in c.vms.values():
        members.update(spec.networks)
    for net, count in members.items():
        if net in c.networks:
            usable = c.networks[net].subnet.num_addresses - 2
            if count > usable:
                out.append((("networks", net, "subnet"),
                            f"{count} members need addresses but {c.networks[net].subnet} has {usable}"))
    return out
