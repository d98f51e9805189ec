"""What the controller is told about the fabric: switches, cabling, servers, networks.

The topology build writes this as one JSON file and the controller process reads it at start.
Everything is known in advance (cabling from the spec, MACs are deterministic), so the
controller can install every path before the first packet and never needs to learn.

Ports are OpenFlow port numbers (the build pins them with `ofport_request`); `ifname` is the
kernel name of the same port, needed only by the QoS commands (tc works on names).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vclab.errors import ConfigError, Problem

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

# DSCP per network kind, in preference order; a second network of the same kind takes the
# next value so that every network keeps its own egress class.
DSCP_BY_KIND: dict[str, tuple[int, ...]] = {
    "management": (16, 48),  # CS2, CS6
    "vmotion": (10, 12, 14),  # AF11..AF13
    "storage": (26, 28, 30, 34),  # AF31..AF33, AF41
    "vm": (18, 20, 22, 0),  # AF21..AF23, best effort
}


@dataclass(frozen=True)
class Switch:
    name: str
    dpid: int


@dataclass(frozen=True)
class Link:
    """One cable between two fabric switches."""

    name: str
    a: str
    a_port: int
    b: str
    b_port: int
    a_ifname: str = ""
    b_ifname: str = ""

    def end(self, switch: str) -> tuple[int, str, int]:
        """(my port, peer switch, peer port) as seen from `switch`."""
        if switch == self.a:
            return self.a_port, self.b, self.b_port
        return self.b_port, self.a, self.a_port


@dataclass(frozen=True)
class Uplink:
    """A server NIC's cable into a fabric switch port."""

    switch: str
    port: int
    ifname: str = ""


@dataclass(frozen=True)
class Attachment:
    """A server (hypervisor, storage array, management server) and how it hangs off the fabric.

    `uplinks` are in preference order: the server's active-backup bond uses the first live one,
    so the fabric must deliver there and nowhere else."""

    server: str
    uplinks: tuple[Uplink, ...]
    vlans: tuple[int, ...]
    macs: dict[int, tuple[str, ...]] = field(default_factory=dict)  # vlan -> MACs behind it


@dataclass(frozen=True)
class Network:
    name: str
    vlan: int
    kind: str = "vm"
    share: float = 0.0  # guaranteed % of each fabric port
    dscp: int = 0
    cap_mbps: float | None = None  # policed with an OpenFlow meter when set


@dataclass(frozen=True)
class Options:
    use_set_queue: bool = False  # kernel datapath only: netdev ignores set_queue
    link_mbps: float = 1000.0  # port rate the HTB shares are taken from


@dataclass(frozen=True)
class FabricSpec:
    switches: tuple[Switch, ...]
    links: tuple[Link, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    networks: tuple[Network, ...] = ()
    options: Options = Options()

    def switch(self, name: str) -> Switch:
        return next(s for s in self.switches if s.name == name)

    def by_dpid(self, dpid: int) -> Switch | None:
        return next((s for s in self.switches if s.dpid == dpid), None)

    def network(self, vlan: int) -> Network | None:
        return next((n for n in self.networks if n.vlan == vlan), None)

    def links_of(self, switch: str) -> list[Link]:
        return [lk for lk in self.links if switch in (lk.a, lk.b)]

    def fabric_ports(self, switch: str) -> list[int]:
        """Ports of `switch` that face another fabric switch, in cabling order."""
        return [lk.end(switch)[0] for lk in self.links_of(switch)]

    def server_ports(self, switch: str) -> list[tuple[Attachment, int]]:
        return [(att, up.port) for att in self.attachments for up in att.uplinks
                if up.switch == switch]


def default_dscp(kind: str, taken: set[int]) -> int:
    """The DSCP vclab gives a network of `kind`, skipping values other networks hold."""
    for value in DSCP_BY_KIND.get(kind, ()) + tuple(range(8, 64, 2)):
        if value not in taken:
            return value
    raise ValueError("no free DSCP value left")


def validate(spec: FabricSpec, file: str = "<fabric>") -> None:
    """Raise ConfigError listing every inconsistency (unknown switch, port used twice...)."""
    problems: list[Problem] = []

    def bad(fieldname: str, message: str) -> None:
        problems.append(Problem(message, file=file, field=fieldname))

    names = [s.name for s in spec.switches]
    for i, s in enumerate(spec.switches):
        if names.count(s.name) > 1:
            bad(f"switches.{i}.name", f"switch {s.name!r} defined twice")
        if [x.dpid for x in spec.switches].count(s.dpid) > 1:
            bad(f"switches.{i}.dpid", f"dpid {s.dpid:#x} used by two switches")
    used: dict[tuple[str, int], str] = {}

    def take(fieldname: str, switch: str, port: int, who: str) -> None:
        if switch not in names:
            bad(fieldname, f"unknown switch {switch!r}; known: {', '.join(names)}")
        elif (switch, port) in used:
            bad(fieldname, f"{switch} port {port} already used by {used[(switch, port)]}")
        else:
            used[(switch, port)] = who

    for i, lk in enumerate(spec.links):
        if lk.a == lk.b:
            bad(f"links.{i}", f"link {lk.name} loops back to {lk.a}")
        take(f"links.{i}.a", lk.a, lk.a_port, lk.name)
        take(f"links.{i}.b", lk.b, lk.b_port, lk.name)
    for s in spec.switches:
        if len(spec.fabric_ports(s.name)) > 97:  # group ids keep 2 digits per fabric port
            bad("links", f"switch {s.name} has more than 97 fabric cables")
    vlans = {n.vlan for n in spec.networks}
    for i, n in enumerate(spec.networks):
        if not 1 <= n.vlan <= 4094:
            bad(f"networks.{i}.vlan", f"vlan {n.vlan} outside 1..4094")
        if not 0 <= n.dscp <= 63:
            bad(f"networks.{i}.dscp", f"dscp {n.dscp} outside 0..63")
        if [x.dscp for x in spec.networks].count(n.dscp) > 1:
            bad(f"networks.{i}.dscp", f"dscp {n.dscp} shared: each network needs its own class")
    if sum(n.share for n in spec.networks) > 100:
        bad("networks", "shares add up to more than 100%")
    for i, att in enumerate(spec.attachments):
        if not 1 <= len(att.uplinks) <= 8:  # the delivery phase rides in 3 PCP bits
            bad(f"attachments.{i}.uplinks", f"server {att.server} needs 1..8 uplinks")
        for j, up in enumerate(att.uplinks):
            take(f"attachments.{i}.uplinks.{j}", up.switch, up.port, att.server)
        for v in att.vlans:
            if v not in vlans:
                bad(f"attachments.{i}.vlans", f"vlan {v} is not a network; known: {sorted(vlans)}")
        for v, macs in att.macs.items():
            if v not in att.vlans:
                bad(f"attachments.{i}.macs.{v}", f"server {att.server} does not carry vlan {v}")
            for mac in macs:
                if not _MAC.match(mac):
                    bad(f"attachments.{i}.macs.{v}", f"{mac!r} is not a MAC (aa:bb:cc:dd:ee:ff)")
    if problems:
        raise ConfigError(problems)


def to_dict(spec: FabricSpec) -> dict[str, Any]:
    doc = asdict(spec)
    for att in doc["attachments"]:
        att["macs"] = {str(v): list(m) for v, m in att["macs"].items()}  # JSON keys are strings
    return doc


def from_dict(doc: dict[str, Any], file: str = "<fabric>") -> FabricSpec:
    """Build and validate a FabricSpec; uplinks may be written ["tor-a", 10] for short."""

    def uplink(raw: Any) -> Uplink:
        if isinstance(raw, (list, tuple)):
            return Uplink(*raw)
        return Uplink(**raw)

    try:
        spec = FabricSpec(
            switches=tuple(Switch(**s) for s in doc.get("switches", [])),
            links=tuple(Link(**lk) for lk in doc.get("links", [])),
            attachments=tuple(
                Attachment(
                    server=a["server"],
                    uplinks=tuple(uplink(u) for u in a["uplinks"]),
                    vlans=tuple(a.get("vlans", ())),
                    macs={int(v): tuple(m.lower() for m in ms)
                          for v, ms in a.get("macs", {}).items()},
                )
                for a in doc.get("attachments", [])
            ),
            networks=tuple(Network(**n) for n in doc.get("networks", [])),
            options=Options(**doc.get("options", {})),
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise ConfigError([Problem(f"malformed fabric file: {exc}", file=file)]) from exc
    validate(spec, file)
    return spec


def dumps(spec: FabricSpec) -> str:
    return json.dumps(to_dict(spec), indent=2)


def loads(text: str, file: str = "<fabric>") -> FabricSpec:
    return from_dict(json.loads(text), file)


def dump(spec: FabricSpec, path: str | Path) -> None:
    Path(path).write_text(dumps(spec) + "\n")


def load(path: str | Path) -> FabricSpec:
    return loads(Path(path).read_text(), str(path))
