"""A tiny in-memory OpenFlow 1.3 packet tracer, after Faucet's clib/fakeoftable.py (much smaller).

It follows one frame through the very messages core.py builds (flows, ALL and fast-failover
groups), given which ports are down, and says where every copy ended. Unit tests use it to
show, with no switch: delivered to the right server's active NIC, exactly once, no loop.

A server is modelled as its active-backup bond: it sends from its first live uplink and accepts
frames only there (OVS drops what arrives on a backup member).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as of

from vclab.fabric.controller.model import Attachment, FabricSpec

MAX_HOPS = 32


@dataclass
class Trace:
    delivered: list[tuple[str, str, int]] = field(default_factory=list)  # server, switch, port
    at_backup_nic: list[tuple[str, str, int]] = field(default_factory=list)  # bond drops these
    lost: list[tuple[str, int]] = field(default_factory=list)  # sent into a dead port
    to_controller: list[str] = field(default_factory=list)
    looped: bool = False
    hops: list[tuple[str, int]] = field(default_factory=list)  # (switch, in_port) visited

    def servers(self) -> list[str]:
        return [d[0] for d in self.delivered]


def active_uplink(att: Attachment, down: Iterable[tuple[str, int]]) -> tuple[str, int] | None:
    down = set(down)
    for up in att.uplinks:
        if (up.switch, up.port) not in down:
            return up.switch, up.port
    return None


def link_down(spec: FabricSpec, name: str) -> set[tuple[str, int]]:
    """Both ends of a cable: carrier (or BFD) goes away on both sides at once."""
    lk = next(lk for lk in spec.links if lk.name == name)
    return {(lk.a, lk.a_port), (lk.b, lk.b_port)}


class FakeFabric:
    def __init__(self, spec: FabricSpec, messages: dict[str, list],
                 down: Iterable[tuple[str, int]] = (),
                 broken: Iterable[tuple[str, int]] | None = None) -> None:
        """`down`: ports the switches see as not live; `broken`: ports that really drop
        frames (default: the same; differs for a BFD false alarm or an undetected fault)."""
        self.spec = spec
        self.down = set(down)
        self.broken = self.down if broken is None else set(broken)
        self.tables: dict[str, dict[int, list]] = {}
        self.groups: dict[str, dict[int, Any]] = {}
        for switch, msgs in messages.items():
            tables: dict[int, list] = {}
            groups: dict[int, Any] = {}
            for msg in msgs:
                kind = type(msg).__name__
                if kind == "OFPFlowMod":
                    tables.setdefault(msg.table_id, []).append(msg)
                elif kind == "OFPGroupMod":
                    groups[msg.group_id] = msg
            for flows in tables.values():
                flows.sort(key=lambda m: -m.priority)  # stable: ties keep install order
            self.tables[switch] = tables
            self.groups[switch] = groups
        self.wire: dict[tuple[str, int], tuple[str, int]] = {}
        for lk in spec.links:
            self.wire[(lk.a, lk.a_port)] = (lk.b, lk.b_port)
            self.wire[(lk.b, lk.b_port)] = (lk.a, lk.a_port)
        self.nic: dict[tuple[str, int], Attachment] = {
            (up.switch, up.port): att for att in spec.attachments for up in att.uplinks}

    def send(self, server: str, vlan: int, eth_dst: str, eth_src: str = "02:ff:ff:ff:ff:ff",
             eth_type: int = 0x0800) -> Trace:
        """A frame `server` sends on its active NIC; where do its copies end up?"""
        att = next(a for a in self.spec.attachments if a.server == server)
        trace = Trace()
        start = active_uplink(att, self.down)
        if start is None:
            return trace
        frame = {"vlan_vid": vlan | of.OFPVID_PRESENT, "vlan_pcp": 0, "eth_dst": eth_dst.lower(),
                 "eth_src": eth_src, "eth_type": eth_type}
        self._arrive(trace, start[0], start[1], frame, 0)
        return trace

    # A frame entering `switch` on `in_port`.
    def _arrive(self, trace: Trace, switch: str, in_port: int, frame: dict, hops: int) -> None:
        if hops > MAX_HOPS:
            trace.looped = True
            return
        trace.hops.append((switch, in_port))
        frame = dict(frame, in_port=in_port)
        outputs: list[tuple[int, dict]] = []
        table = 0
        while table is not None:
            flow = self._lookup(switch, table, frame)
            table = None
            if flow is None:
                break
            for inst in flow.instructions:
                name = type(inst).__name__
                if name == "OFPInstructionActions":
                    frame = self._actions(switch, inst.actions, frame, outputs)
                elif name == "OFPInstructionGotoTable":
                    table = inst.table_id
        for port, copy in outputs:
            self._leave(trace, switch, in_port, port, copy, hops)

    def _lookup(self, switch: str, table: int, frame: dict) -> Any:
        for flow in self.tables.get(switch, {}).get(table, []):
            if all(_matches(frame.get(f), v) for f, v in flow.match.items()):
                return flow
        return None

    def _actions(self, switch: str, actions: list, frame: dict, outputs: list) -> dict:
        for act in actions:
            name = type(act).__name__
            if name == "OFPActionOutput":
                outputs.append((act.port, dict(frame)))
            elif name == "OFPActionSetField":
                frame = dict(frame, **{act.key: act.value})
            elif name == "OFPActionSetQueue":
                frame = dict(frame, queue=act.queue_id)
            elif name == "OFPActionGroup":
                self._group(switch, act.group_id, frame, outputs)
        return frame

    def _group(self, switch: str, group_id: int, frame: dict, outputs: list) -> None:
        group = self.groups[switch][group_id]  # KeyError = a flow points at a missing group
        if group.type == of.OFPGT_ALL:
            for bucket in group.buckets:
                self._actions(switch, _action_set(bucket.actions), dict(frame), outputs)
        elif group.type == of.OFPGT_FF:
            for bucket in group.buckets:
                if self._live(switch, bucket):
                    self._actions(switch, _action_set(bucket.actions), dict(frame), outputs)
                    return
        else:
            raise NotImplementedError(f"group type {group.type}")

    def _live(self, switch: str, bucket: Any, depth: int = 0) -> bool:
        """OVS's rule: a bucket watching nothing is live; a watched group is live while any
        of its buckets is."""
        if bucket.watch_port not in (of.OFPP_ANY, None):
            return (switch, bucket.watch_port) not in self.down
        if bucket.watch_group not in (of.OFPG_ANY, None) and depth < 8:
            group = self.groups[switch][bucket.watch_group]
            return any(self._live(switch, b, depth + 1) for b in group.buckets)
        return True

    def _leave(self, trace: Trace, switch: str, in_port: int, port: int, frame: dict,
               hops: int) -> None:
        if port == of.OFPP_CONTROLLER:
            trace.to_controller.append(switch)
            return
        if port == of.OFPP_IN_PORT:
            port = in_port
        elif port == in_port:
            return  # OpenFlow never sends a frame back out of its in_port unless told IN_PORT
        if (switch, port) in self.broken:
            trace.lost.append((switch, port))
            return
        if (switch, port) in self.wire:
            peer = self.wire[(switch, port)]
            self._arrive(trace, peer[0], peer[1], frame, hops + 1)
            return
        att = self.nic.get((switch, port))
        if att is None:
            trace.lost.append((switch, port))
        elif active_uplink(att, self.down) == (switch, port):
            trace.delivered.append((att.server, switch, port))
        else:
            trace.at_backup_nic.append((att.server, switch, port))


def _action_set(actions: list) -> list:
    """A bucket's actions as OVS runs them: an action set (ovs-actions(7), "Groups contain
    action sets"): field changes first, then the group action if there is one, which wins over
    any output (an output beside a group action is silently dropped)."""
    kinds = [type(a).__name__ for a in actions]
    sets = [a for a, k in zip(actions, kinds) if k not in ("OFPActionOutput", "OFPActionGroup")]
    groups = [a for a, k in zip(actions, kinds) if k == "OFPActionGroup"]
    return sets + (groups[-1:] if groups else [a for a, k in zip(actions, kinds)
                                               if k == "OFPActionOutput"][-1:])


def _matches(value: Any, want: Any) -> bool:
    if isinstance(want, tuple):
        want, mask = want
        if value is None:
            return False
        if isinstance(want, str):  # masked MAC
            w, m, v = (bytes.fromhex(x.replace(":", "")) for x in (want, mask, value))
            return all((a & c) == (b & c) for a, b, c in zip(w, v, m))
        return (value & mask) == (want & mask)
    return value == want


def single_failures(spec: FabricSpec) -> list[tuple[str, set[tuple[str, int]]]]:
    """No failure, each cable, and each server NIC on its own."""
    cases: list[tuple[str, set[tuple[str, int]]]] = [("none", set())]
    cases += [(f"cable {lk.name}", link_down(spec, lk.name)) for lk in spec.links]
    cases += [(f"{att.server} nic{i}", {(up.switch, up.port)})
              for att in spec.attachments for i, up in enumerate(att.uplinks)]
    return cases


def unprotected(spec: FabricSpec, messages: dict[str, list]) -> list[str]:
    """Each (failure, source, destination, vlan) the installed unicast state does not carry
    exactly once to the destination's active NIC, before any controller reaction."""
    problems = []
    for label, down in single_failures(spec):
        net = FakeFabric(spec, messages, down)
        for src in spec.attachments:
            if active_uplink(src, down) is None:
                continue
            for dst in spec.attachments:
                if dst is src or active_uplink(dst, down) is None:
                    continue
                for vlan in sorted(set(src.vlans) & set(dst.vlans)):
                    for mac in dst.macs.get(vlan, ())[:1]:
                        trace = net.send(src.server, vlan, mac)
                        if trace.looped or trace.servers() != [dst.server] or trace.at_backup_nic:
                            problems.append(f"{label}: {src.server} -> {dst.server} vlan {vlan}: "
                                            f"{'loop' if trace.looped else trace.delivered}")
    return problems
