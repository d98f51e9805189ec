"""The controller's decisions as pure functions: FabricSpec + liveness -> OpenFlow 1.3 messages.

Nothing here talks to a switch. Messages are built with os-ken's OFP 1.3 parser classes against
any object that has `.ofproto` and `.ofproto_parser` (a real Datapath, or `OFP13` below), so the
app sends exactly what the unit tests checked with the tracer in `trace.py`.

Pipeline on every fabric switch:
  table 0 ADMIT     which (port, vlan) may enter; LLDP to the controller; meters at the edge
  table 1 CLASSIFY  DSCP per network class (and set_queue on the kernel datapath)
  table 2 FORWARD   known MACs through fast-failover groups; the rest flooded along a tree

Unicast (known MACs) is computed from the cabling alone, never from liveness: failover AND
failback happen in the datapath through fast-failover groups. That matters for failback: a
server's active-backup bond returns to its first NIC the instant that NIC's carrier is back, so
the fabric must deliver there at once too; waiting for the controller would be a second outage.

Loop freedom with only local decisions: a frame for a server carries a delivery phase in its
VLAN PCP bits (0 from the server's edge). Phase n heads for the server's n-th uplink; the switch
holding that uplink delivers, or, if the NIC is dead (the bond has moved on), moves the frame to
phase n+1. Within a phase each switch ranks its cables by hop count to the target switch
avoiding itself. A frame that comes back from the switch's own primary next hop means that
neighbour could not go on: it takes a backup list that also avoids that neighbour. A frame from
any other neighbour that this switch cannot forward goes back out of the port it came in on
(OFPP_IN_PORT), so the sender moves on to its own backup. `trace.unprotected` checks every
single cable and NIC failure; the unit tests run it on two ToRs, a triangle, a ring and a
leaf-spine.

Broadcast and unknown unicast follow one spanning tree of live links; parallel cables between
two switches form one tree edge with a fast-failover "trunk" group, so losing one of them needs
no recomputation. Frames from a non-tree fabric port are not flooded, which is what keeps
broadcast storm-free without blocking any link for unicast (unlike STP).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from vclab.fabric.controller.model import Attachment, FabricSpec
# The paths are computed apart (no OpenFlow there); their names stay importable from here.
from vclab.fabric.controller.paths import (  # noqa: F401
    Down, Route, _index, _neighbours, _ranked, flood_tree, hops_to, neighbours_of, route,
    trunk_ports)

OFPVID_PRESENT = ofproto_v1_3.OFPVID_PRESENT
ETH_LLDP = 0x88CC
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD

TABLE_ADMIT, TABLE_CLASSIFY, TABLE_FORWARD = 0, 1, 2
COOKIE = 0x7C1AB  # marks vclab's flows, for humans reading dump-flows

PRIO_LLDP = 1000
PRIO_ADMIT = 200
PRIO_CLASS_IP = 200
PRIO_CLASS = 100
PRIO_UNICAST_IN = 310  # per in-port class: backup / bounce-back
PRIO_UNICAST = 300
PRIO_FLOOD = 100

# Group id ranges (all static, so a restarted controller overwrites rather than leaks):
ALWAYS_LIVE = 999  # watched by last-resort buckets
TRUNK_BASE = 1_000  # + neighbour switch index
UNICAST_BASE = 1_000_000  # + server index * 1000 + phase * 100 + in-class code
FLOOD_BASE = 100_000_000  # + vlan * 1000 + in-class code
COPY_BASE = 200_000_000  # + the unicast group's offset: its move to the next phase, with a copy
_LOCAL, _BACKUP = 0, 1  # unicast in-class codes; 2 + i = bounce for the i-th fabric port


class OFP13:
    """Stands in for a Datapath when building messages: os-ken only needs these two."""

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser




# ---------------------------------------------------------------- OpenFlow message builders


def _apply(dp: Any, actions: list) -> Any:
    return dp.ofproto_parser.OFPInstructionActions(dp.ofproto.OFPIT_APPLY_ACTIONS, actions)


def _flow(dp: Any, table: int, priority: int, match: Any, instructions: list) -> Any:
    return dp.ofproto_parser.OFPFlowMod(
        dp, cookie=COOKIE, table_id=table, command=dp.ofproto.OFPFC_ADD, priority=priority,
        match=match, instructions=instructions)


def _group(dp: Any, kind: int, group_id: int, buckets: list) -> Any:
    return dp.ofproto_parser.OFPGroupMod(dp, dp.ofproto.OFPGC_ADD, kind, group_id, buckets)


def _ff(dp: Any, group_id: int, ports: Iterable[int], in_port: int | None = None,
        next_phase: tuple[int, int] | None = None, copy_group: int | None = None) -> list:
    """Fast-failover group over fabric `ports`; `in_port` is sent back where it came from.
    Returns the group, preceded by the ALL group it uses to move on (see below).

    `next_phase` (group, phase): when every cable towards this phase's switch is dead, that
    switch is as good as gone (a whole-switch failure), and the server's bond has moved to its
    next NIC: so does the frame, from here. A last bucket that watches nothing repeats the
    first choice: when every cable looks dead at once, BFD is more likely wrong (a stalled
    ovs-vswitchd misses its packets) than all cables broken, and a truly dead port drops the
    frame anyway.

    The move to the next phase also sends one copy, still in this phase, out of the first
    choice (the ALL group `copy_group`): "every cable dead" is also what a repaired cable looks
    like until its BFD session is up (OVS sends BFD once a second until then, RFC 5880 6.8.3:
    1-2 s), while the server's bond is back on the NIC behind it at carrier. The bond takes
    whichever copy reaches its active NIC and drops the other; a cable that really is dead
    drops the copy. Without it, storage-b lost 1.1-1.5 s at every tor-a recovery. A group of
    its own because OVS runs bucket actions as an action set, where a group action wins over
    an output. Never back out of the port the frame came in on (the sender chose this way)."""
    p, of = dp.ofproto_parser, dp.ofproto

    def out(port: int) -> list:
        return [p.OFPActionOutput(of.OFPP_IN_PORT if port == in_port else port)]
    ports = list(ports)
    before = []
    buckets = [p.OFPBucket(watch_port=port, actions=out(port)) for port in ports]
    if next_phase is not None:
        group, phase = next_phase
        move = [p.OFPActionSetField(vlan_pcp=phase), p.OFPActionGroup(group)]
        if copy_group is not None and ports and ports[0] != in_port:
            before.append(_group(dp, of.OFPGT_ALL, copy_group, [
                p.OFPBucket(actions=[p.OFPActionOutput(ports[0])]), p.OFPBucket(actions=move)]))
            move = [p.OFPActionGroup(copy_group)]
        buckets.append(p.OFPBucket(watch_group=group, actions=move))
    if ports:  # OVS wants a watch on every fast-failover bucket: watch one that never fails
        buckets.append(p.OFPBucket(watch_group=ALWAYS_LIVE, actions=out(ports[0])))
    return before + [_group(dp, of.OFPGT_FF, group_id, buckets)]


def always_live_group(dp: Any = OFP13) -> Any:
    """An ALL group whose one bucket watches nothing, so OVS always counts it live."""
    p, of = dp.ofproto_parser, dp.ofproto
    return _group(dp, of.OFPGT_ALL, ALWAYS_LIVE, [p.OFPBucket(actions=[])])


def _vid(vlan: int) -> int:
    return vlan | OFPVID_PRESENT


def unicast_group_id(spec: FabricSpec, server: str, phase: int, code: int) -> int:
    idx = [a.server for a in spec.attachments].index(server)
    return UNICAST_BASE + idx * 1000 + phase * 100 + code


def flood_group_id(vlan: int, code: int) -> int:
    return FLOOD_BASE + vlan * 1000 + code


def trunk_group_id(spec: FabricSpec, peer: str) -> int:
    return TRUNK_BASE + _index(spec, peer)


def meter_messages(spec: FabricSpec, dp: Any = OFP13) -> list:
    """One drop meter per capped network (id = network index + 1), used at the edge."""
    p, of = dp.ofproto_parser, dp.ofproto
    out = []
    for i, net in enumerate(spec.networks):
        if net.cap_mbps:
            kbps = int(net.cap_mbps * 1000)
            band = p.OFPMeterBandDrop(rate=kbps, burst_size=max(kbps // 10, 1))  # 100 ms
            out.append(p.OFPMeterMod(dp, of.OFPMC_ADD, of.OFPMF_KBPS | of.OFPMF_BURST, i + 1,
                                     [band]))
    return out


def admission_flows(spec: FabricSpec, switch: str, dp: Any = OFP13) -> list:
    """Table 0: LLDP to us, each server port only its own VLANs (metered), fabric ports tagged."""
    p, of = dp.ofproto_parser, dp.ofproto
    goto = p.OFPInstructionGotoTable(TABLE_CLASSIFY)
    out = [_flow(dp, TABLE_ADMIT, PRIO_LLDP, p.OFPMatch(eth_type=ETH_LLDP), [
        _apply(dp, [p.OFPActionOutput(of.OFPP_CONTROLLER, of.OFPCML_NO_BUFFER)])])]
    for att, port in spec.server_ports(switch):
        for vlan in att.vlans:
            meter = [p.OFPInstructionMeter(i + 1) for i, n in enumerate(spec.networks)
                     if n.vlan == vlan and n.cap_mbps]
            # Phase 0 for every frame a server sends (see unicast_messages).
            reset = _apply(dp, [p.OFPActionSetField(vlan_pcp=0)])
            out.append(_flow(dp, TABLE_ADMIT, PRIO_ADMIT,
                             p.OFPMatch(in_port=port, vlan_vid=_vid(vlan)),
                             meter + [reset, goto]))
    for port in spec.fabric_ports(switch):
        out.append(_flow(dp, TABLE_ADMIT, PRIO_ADMIT,
                         p.OFPMatch(in_port=port, vlan_vid=(OFPVID_PRESENT, OFPVID_PRESENT)),
                         [goto]))
    out.append(_flow(dp, TABLE_ADMIT, 0, p.OFPMatch(), []))
    return out


def class_flows(spec: FabricSpec, dp: Any = OFP13) -> list:
    """Table 1: each network's DSCP on IP frames, so every egress port can queue by class."""
    p = dp.ofproto_parser
    goto = p.OFPInstructionGotoTable(TABLE_FORWARD)
    out = []
    for i, net in enumerate(spec.networks):
        queue = [p.OFPActionSetQueue(i + 1)] if spec.options.use_set_queue else []
        for eth_type in (ETH_IPV4, ETH_IPV6):
            out.append(_flow(dp, TABLE_CLASSIFY, PRIO_CLASS_IP,
                             p.OFPMatch(vlan_vid=_vid(net.vlan), eth_type=eth_type),
                             [_apply(dp, [p.OFPActionSetField(ip_dscp=net.dscp)] + queue), goto]))
        out.append(_flow(dp, TABLE_CLASSIFY, PRIO_CLASS, p.OFPMatch(vlan_vid=_vid(net.vlan)),
                         ([_apply(dp, queue)] if queue else []) + [goto]))
    out.append(_flow(dp, TABLE_CLASSIFY, 0, p.OFPMatch(), []))
    return out


def _unicast_group(dp: Any, group_id: int, rt: Route, in_port: int | None,
                   next_phase: int | None) -> list:
    """Fast-failover group for one route (and the group it moves on with, if any); on the
    phase's target switch, deliver or move on."""
    p, of = dp.ofproto_parser, dp.ofproto
    if not rt.delivers:
        return _ff(dp, group_id, rt.main, in_port,
                   (next_phase, rt.phase + 1) if next_phase is not None else None,
                   COPY_BASE + group_id - UNICAST_BASE)
    reset = [p.OFPActionSetField(vlan_pcp=0)] if rt.phase else []
    buckets = [p.OFPBucket(watch_port=rt.main[0],
                           actions=reset + [p.OFPActionOutput(rt.main[0])])]
    if next_phase is not None:
        # The server's bond moves to its next NIC when this one dies: so does the frame.
        buckets.append(p.OFPBucket(watch_group=next_phase, actions=[
            p.OFPActionSetField(vlan_pcp=rt.phase + 1), p.OFPActionGroup(next_phase)]))
    return [_group(dp, of.OFPGT_FF, group_id, buckets)]


def unicast_messages(spec: FabricSpec, switch: str, dp: Any = OFP13) -> list:
    """Groups, then flows, delivering every known MAC on `switch` with pre-installed backups.

    A frame's delivery phase rides in its VLAN PCP bits: phase n heads for the server's n-th
    uplink. Only the switch holding that uplink can see it die, and it moves the frame to
    phase n+1; without the mark a switch further on could not tell "that NIC is gone" from
    "that cable is gone" and would send the frame back towards the dead NIC."""
    groups, flows = [], []
    for att in spec.attachments:
        g, f = attachment_messages(spec, att, switch, dp)
        groups += g
        flows += f
    return groups + flows


def attachment_messages(spec: FabricSpec, att: Attachment, switch: str,
                        dp: Any = OFP13) -> tuple[list, list]:
    """(groups, flows) of `switch` for one server: they depend on the cabling, that server's
    uplinks and MACs, and nothing else, so a moved VM changes two servers' worth only."""
    p = dp.ofproto_parser
    groups, flows = [], []
    fabric = spec.fabric_ports(switch)
    phases = len(att.uplinks)
    routes = [route(spec, att, switch, j) for j in range(phases)]
    for rt in reversed(routes):  # a phase's groups chain to the next one's: add those first
        def gid(code: int, phase: int = rt.phase) -> int:
            return unicast_group_id(spec, att.server, phase, code)

        def chain(code: int) -> int | None:
            return gid(code, rt.phase + 1) if rt.phase + 1 < phases else None

        groups += _unicast_group(dp, gid(_LOCAL), rt, None, chain(_LOCAL))
        groups += _ff(dp, gid(_BACKUP), rt.backup)
        by_in_port: dict[int, int] = {port: gid(_BACKUP) for port in rt.trunk}
        for i, port in enumerate(fabric):
            groups += _unicast_group(dp, gid(2 + i), rt, port, chain(2 + i))
            if port not in by_in_port and (port in rt.main or chain(2 + i) is not None):
                by_in_port[port] = gid(2 + i)
        for vlan in att.vlans:
            for mac in att.macs.get(vlan, ()):
                frame = dict(vlan_vid=_vid(vlan), vlan_pcp=rt.phase, eth_dst=mac)
                flows.append(_flow(dp, TABLE_FORWARD, PRIO_UNICAST, p.OFPMatch(**frame),
                                   [_apply(dp, [p.OFPActionGroup(gid(_LOCAL))])]))
                for port, group in sorted(by_in_port.items()):
                    flows.append(_flow(dp, TABLE_FORWARD, PRIO_UNICAST_IN,
                                       p.OFPMatch(in_port=port, **frame),
                                       [_apply(dp, [p.OFPActionGroup(group)])]))
    return groups, flows


def flood_messages(spec: FabricSpec, switch: str, tree: frozenset[frozenset[str]],
                   dp: Any = OFP13) -> list:
    """Trunk groups, flood groups and flood flows of `switch` for the given tree.

    The set of groups and flows does not depend on the tree (only their contents do), so a
    new tree overwrites the old one entry by entry and nothing is left behind."""
    p, of = dp.ofproto_parser, dp.ofproto
    peers = neighbours_of(spec, switch)
    on_tree = [q for q in peers if frozenset((switch, q)) in tree]
    trunks = [g for q in peers for g in _ff(dp, trunk_group_id(spec, q), trunk_ports(spec, switch, q))]
    groups, flows = [], []
    for net in spec.networks:
        local = [port for att, port in spec.server_ports(switch) if net.vlan in att.vlans]
        for code, came_from in [(0, None)] + [(1 + _index(spec, q), q) for q in peers]:
            buckets = [p.OFPBucket(actions=[p.OFPActionOutput(port)]) for port in local]
            buckets += [p.OFPBucket(actions=[p.OFPActionGroup(trunk_group_id(spec, q))])
                        for q in on_tree if q != came_from]
            groups.append(_group(dp, of.OFPGT_ALL, flood_group_id(net.vlan, code), buckets))
        for port in local:
            flows.append(_flow(dp, TABLE_FORWARD, PRIO_FLOOD,
                               p.OFPMatch(in_port=port, vlan_vid=_vid(net.vlan)),
                               [_apply(dp, [p.OFPActionGroup(flood_group_id(net.vlan, 0))])]))
        for q in peers:
            group = flood_group_id(net.vlan, 1 + _index(spec, q))
            # Off the tree: not flooded, which is what keeps broadcast from storming.
            action = [_apply(dp, [p.OFPActionGroup(group)])] if q in on_tree else []
            for port in trunk_ports(spec, switch, q):
                flows.append(_flow(dp, TABLE_FORWARD, PRIO_FLOOD,
                                   p.OFPMatch(in_port=port, vlan_vid=_vid(net.vlan)), action))
    return trunks + groups + flows


def switch_messages(spec: FabricSpec, switch: str, tree: frozenset[frozenset[str]],
                    dp: Any = OFP13) -> list:
    """Everything `switch` should hold, in an order it accepts: meters, groups, then flows."""
    p = dp.ofproto_parser
    flood = flood_messages(spec, switch, tree, dp)
    unicast = unicast_messages(spec, switch, dp)
    msgs = (meter_messages(spec, dp) + [always_live_group(dp)] + flood + unicast
            + admission_flows(spec, switch, dp)
            + class_flows(spec, dp)
            + [_flow(dp, TABLE_FORWARD, 0, p.OFPMatch(), [])])
    kinds = (p.OFPMeterMod, p.OFPGroupMod, p.OFPFlowMod)
    return sorted(msgs, key=lambda m: kinds.index(type(m)))  # stable: keeps trunks before floods


def fabric_messages(spec: FabricSpec, down: Down = frozenset(),
                    dp: Any = OFP13) -> dict[str, list]:
    tree = flood_tree(spec, down)
    return {s.name: switch_messages(spec, s.name, tree, dp) for s in spec.switches}


# ---------------------------------------------------------------- memoised desired state

Entry = tuple[tuple, Any, str]  # (key, message, content): what a switch should hold, one item


def _attachment_key(att: Attachment) -> tuple:
    return (att.server, att.uplinks, att.vlans, tuple(sorted(att.macs.items())))


class Compiler:
    """`switch_messages` with a memory, as (key, message, content) entries.

    Building ~400 os-ken messages and their canonical contents cost ~300 ms per call on a quiet
    2-core machine (0.4-1 s under the default experiment's load), and the controller used to
    pay it on every port-status message: a whole-switch failure's 14 port changes were handled
    one every ~0.45 s. The parts depend on little: flood entries on (switch, tree, cabling,
    who is attached where), a server's unicast entries on (switch, cabling, that server), the
    edge on (switch, cabling, attachments' ports and VLANs). Each is built once per distinct
    input; a port change that keeps the tree costs dictionary look-ups, a moved VM rebuilds
    the two servers it moved between."""

    LIMIT = 512  # memo entries kept (a few trees x a few specs; cleared when exceeded)

    def __init__(self, dp: Any = OFP13) -> None:
        self.dp = dp
        self._memo: dict[tuple, list[Entry]] = {}
        self.built = 0  # messages built so far: the cost the memory saves, for tests and status

    def _entries(self, memo_key: tuple, build: Any) -> list[Entry]:
        hit = self._memo.get(memo_key)
        if hit is None:
            if len(self._memo) >= self.LIMIT:
                self._memo.clear()
            msgs = build()
            self.built += len(msgs)
            hit = self._memo[memo_key] = [(key(m), m, content(m)) for m in msgs]
        return hit

    def desired(self, spec: FabricSpec, switch: str,
                tree: frozenset[frozenset[str]]) -> list[Entry]:
        """The entries of switch_messages(spec, switch, tree), in the same order."""
        dp = self.dp
        cabling = (spec.switches, spec.links, spec.networks, spec.options)
        ports = tuple((a.server, a.uplinks, a.vlans) for a in spec.attachments)
        edge = self._entries(("edge", switch, cabling, ports), lambda: (
            meter_messages(spec, dp) + [always_live_group(dp)]
            + admission_flows(spec, switch, dp) + class_flows(spec, dp)
            + [_flow(dp, TABLE_FORWARD, 0, dp.ofproto_parser.OFPMatch(), [])]))
        flood = self._entries(("flood", switch, cabling, ports, tree),
                              lambda: flood_messages(spec, switch, tree, dp))
        groups: list[Entry] = []
        flows: list[Entry] = []
        for i, att in enumerate(spec.attachments):
            both = self._entries(("unicast", switch, cabling, i, _attachment_key(att)),
                                 lambda: _concat(attachment_messages(spec, att, switch, dp)))
            for entry in both:
                (groups if entry[0][0] == "group" else flows).append(entry)
        order = ("meter", "group", "flow")
        meters = [e for e in edge if e[0][0] == "meter"]
        edge_groups = [e for e in edge if e[0][0] == "group"]
        edge_flows = [e for e in edge if e[0][0] == "flow"]
        out = meters + edge_groups + flood + groups + flows + edge_flows
        return sorted(out, key=lambda e: order.index(e[0][0]))  # stable, as switch_messages


def _concat(parts: tuple[list, list]) -> list:
    return parts[0] + parts[1]


# ---------------------------------------------------------------- installing changes


def key(msg: Any) -> tuple:
    """What a message overwrites on the switch: a meter id, a group id, or a flow's match."""
    kind = type(msg).__name__
    if kind == "OFPMeterMod":
        return ("meter", msg.meter_id)
    if kind == "OFPGroupMod":
        return ("group", msg.group_id)
    return ("flow", msg.table_id, msg.priority, _canon(msg.match.to_jsondict()))


def content(msg: Any) -> str:
    body = dict(next(iter(msg.to_jsondict().values())))
    body.pop("command", None)
    return _canon(body)


def _canon(doc: Any) -> str:
    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("len", "length")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return json.dumps(strip(doc), sort_keys=True)


def changes(installed: dict[tuple, Any] | None, desired: list, dp: Any = OFP13) -> list:
    """Messages that turn `installed` into `desired`, without ever removing a live path first.

    Flows are always sent as ADD, which replaces a flow with the same match in place. Groups
    and meters are MODIFY when we know the switch has them. `installed=None` means we do not
    know (a switch that reconnected, or a restarted controller): then each group and meter is
    sent as MODIFY followed by ADD, so whichever the switch lacks is refused harmlessly and
    traffic never meets a missing group."""
    have = None if installed is None else {k: (m, content(m)) for k, m in installed.items()}
    return changed_entries(have, [(key(m), m, content(m)) for m in desired], dp)


def changed_entries(installed: dict[tuple, tuple[Any, str]] | None, desired: list[Entry],
                    dp: Any = OFP13) -> list:
    """`changes` on entries whose contents are already known: {key: (message, content)}."""
    of = dp.ofproto
    out: list = []
    want = {k for k, _, _ in desired}
    for k, msg, text in desired:
        if installed is not None and k in installed and installed[k][1] == text:
            continue
        if k[0] == "flow":
            out.append(msg)
            continue
        modify = _recommand(dp, msg, of.OFPGC_MODIFY if k[0] == "group" else of.OFPMC_MODIFY)
        if installed is None:
            out += [modify, msg]
        else:
            out.append(modify if k in installed else msg)
    if installed:
        stale = [installed[k][0] for k in installed if k not in want]
        for msg in sorted(stale, key=lambda m: ("flow", "group", "meter").index(key(m)[0])):
            out.append(_delete(dp, msg))
    return out


def _recommand(dp: Any, msg: Any, command: int) -> Any:
    p = dp.ofproto_parser
    if isinstance(msg, p.OFPGroupMod):
        return p.OFPGroupMod(dp, command, msg.type, msg.group_id, msg.buckets)
    return p.OFPMeterMod(dp, command, msg.flags, msg.meter_id, msg.bands)


def _delete(dp: Any, msg: Any) -> Any:
    p, of = dp.ofproto_parser, dp.ofproto
    if isinstance(msg, p.OFPGroupMod):
        return p.OFPGroupMod(dp, of.OFPGC_DELETE, msg.type, msg.group_id, [])
    if isinstance(msg, p.OFPMeterMod):
        return p.OFPMeterMod(dp, of.OFPMC_DELETE, 0, msg.meter_id, [])
    return p.OFPFlowMod(dp, cookie=COOKIE, table_id=msg.table_id,
                        command=of.OFPFC_DELETE_STRICT, priority=msg.priority, match=msg.match,
                        out_port=of.OFPP_ANY, out_group=of.OFPG_ANY)


def tree_steps(old: frozenset[frozenset[str]] | None,
               new: frozenset[frozenset[str]]) -> list[frozenset[frozenset[str]]]:
    """Trees to install in turn: first only the edges both trees share, then the new tree.

    Switching every switch at once is not atomic across switches; going through old & new
    (a forest, so loop-free) means no moment has old and new edges forming a cycle."""
    if old is None:
        return [new]
    mid = old & new
    return [new] if mid in (old, new) else [mid, new]  # only adding or only removing: one step
