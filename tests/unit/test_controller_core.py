"""The controller's pure core, checked by tracing frames through the messages it builds."""

from __future__ import annotations

import itertools

import pytest

from vclab.fabric.controller import core
from vclab.fabric.controller.model import (Attachment, FabricSpec, Link, Network, Options, Switch,
                                    Uplink)
from vclab.fabric.controller.trace import FakeFabric, link_down, single_failures, unprotected

BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac(server: int, vlan: int) -> str:
    return f"02:00:00:{server:02x}:{vlan >> 8:02x}:{vlan & 0xff:02x}"


def server(name: str, idx: int, uplinks: list[tuple[str, int]], vlans: tuple[int, ...]):
    return Attachment(name, tuple(Uplink(s, p) for s, p in uplinks), vlans,
                      {v: (mac(idx, v),) for v in vlans})


NETWORKS = (
    Network("management", 10, "management", 10, 16),
    Network("vmotion", 20, "vmotion", 30, 10, cap_mbps=500),
    Network("storage", 30, "storage", 40, 26),
    Network("vm", 100, "vm", 20, 18),
)


def two_tors() -> FabricSpec:
    """tor-a/tor-b, two parallel cables, three dual-homed servers (esx2 prefers tor-b)."""
    return FabricSpec(
        switches=(Switch("tor-a", 1), Switch("tor-b", 2)),
        links=(Link("isl1", "tor-a", 1, "tor-b", 1), Link("isl2", "tor-a", 2, "tor-b", 2)),
        attachments=(
            server("esx1", 1, [("tor-a", 10), ("tor-b", 10)], (10, 20, 100)),
            server("esx2", 2, [("tor-b", 11), ("tor-a", 11)], (10, 20, 100)),
            server("array", 3, [("tor-a", 12), ("tor-b", 12)], (10, 30)),
        ),
        networks=NETWORKS,
    )


def triangle() -> FabricSpec:
    """Three switches in a ring, servers dual-homed to each pair, one single-homed."""
    return FabricSpec(
        switches=(Switch("a", 1), Switch("b", 2), Switch("c", 3)),
        links=(Link("ab", "a", 1, "b", 1), Link("bc", "b", 2, "c", 2),
               Link("ca", "c", 1, "a", 2)),
        attachments=(
            server("s1", 1, [("a", 10), ("b", 10)], (10, 100)),
            server("s2", 2, [("b", 11), ("c", 11)], (10, 100)),
            server("s3", 3, [("c", 12), ("a", 12)], (10, 100)),
            server("s4", 4, [("a", 13)], (10,)),
        ),
        networks=NETWORKS,
    )


def reachable(spec: FabricSpec, src: str, dst: str, down: set) -> bool:
    """Can dst still be reached at all (its bond has a live NIC and some live path)?"""
    dst_att = next(a for a in spec.attachments if a.server == dst)
    src_att = next(a for a in spec.attachments if a.server == src)
    return all(any((u.switch, u.port) not in down for u in a.uplinks)
               for a in (src_att, dst_att))


def leaf_spine() -> FabricSpec:
    """Two spines, three leaves; servers dual-homed to leaf pairs."""
    links = tuple(Link(f"{leaf}{spine}", leaf, 1 + j, spine, 1 + i)
                  for i, leaf in enumerate(("l1", "l2", "l3"))
                  for j, spine in enumerate(("s1", "s2")))
    return FabricSpec(
        switches=(Switch("s1", 1), Switch("s2", 2), Switch("l1", 11), Switch("l2", 12),
                  Switch("l3", 13)),
        links=links,
        attachments=(
            server("h1", 1, [("l1", 10), ("l2", 10)], (10,)),
            server("h2", 2, [("l2", 11), ("l3", 11)], (10,)),
            server("h3", 3, [("l3", 12), ("l1", 12)], (10,)),
            server("h4", 4, [("l1", 13)], (10,)),
        ),
        networks=NETWORKS,
    )


def ring4() -> FabricSpec:
    names = ("r0", "r1", "r2", "r3")
    return FabricSpec(
        switches=tuple(Switch(n, i + 1) for i, n in enumerate(names)),
        links=tuple(Link(f"c{i}", names[i], 1, names[(i + 1) % 4], 2) for i in range(4)),
        attachments=tuple(server(f"h{i}", i + 1, [(names[i], 10), (names[(i + 1) % 4], 11)],
                                 (10,)) for i in range(4)),
        networks=NETWORKS,
    )


FABRICS = {"two_tors": two_tors, "triangle": triangle, "leaf_spine": leaf_spine, "ring4": ring4}


@pytest.mark.parametrize("fabric", FABRICS)
def test_unicast_survives_every_single_failure_before_the_controller_reacts(fabric):
    spec = FABRICS[fabric]()
    msgs = core.fabric_messages(spec)  # installed with everything up; no recomputation
    assert unprotected(spec, msgs) == []


@pytest.mark.parametrize("fabric", FABRICS)
def test_broadcast_reaches_each_server_once_after_recompute(fabric):
    spec = FABRICS[fabric]()
    for label, down in single_failures(spec):
        net = FakeFabric(spec, core.fabric_messages(spec, frozenset(down)), down)
        for src in spec.attachments:
            for vlan in src.vlans:
                trace = net.send(src.server, vlan, BROADCAST)
                expect = sorted(a.server for a in spec.attachments if vlan in a.vlans
                                and a is not src and reachable(spec, src.server, a.server, down))
                where = f"{label}: {src.server} vlan {vlan}: {trace}"
                assert not trace.looped, where
                assert sorted(trace.servers()) == expect, where


@pytest.mark.parametrize("fabric", FABRICS)
def test_broadcast_never_loops_or_duplicates_before_recompute(fabric):
    spec = FABRICS[fabric]()
    msgs = core.fabric_messages(spec)
    for label, down in single_failures(spec):
        net = FakeFabric(spec, msgs, down)
        for src in spec.attachments:
            for vlan in src.vlans:
                trace = net.send(src.server, vlan, BROADCAST)
                assert not trace.looped, label
                assert len(trace.servers()) == len(set(trace.servers())), label
                assert src.server not in trace.servers(), label


def test_parallel_cables_keep_broadcast_whole_without_the_controller():
    spec = two_tors()
    msgs = core.fabric_messages(spec)
    net = FakeFabric(spec, msgs, link_down(spec, "isl1"))
    assert sorted(net.send("esx1", 10, BROADCAST).servers()) == ["array", "esx2"]


def test_whole_switch_failure_moves_frames_to_the_servers_next_nic():
    spec = two_tors()
    # tor-b dies: its cables and its server ports all go dark; bonds move to their tor-a NIC.
    dead = {("tor-b", port) for port in (1, 2, 10, 11, 12)} | {("tor-a", 1), ("tor-a", 2)}
    net = FakeFabric(spec, core.fabric_messages(spec), down=dead)
    trace = net.send("esx1", 20, mac(2, 20))
    assert not trace.looped
    assert trace.delivered == [("esx2", "tor-a", 11)]


def test_bfd_false_alarm_on_every_cable_never_loops():
    """The price of surviving a dead switch: when BFD wrongly calls every cable dead, frames
    for a server whose active NIC is across them go to its next NIC, which its bond ignores
    until BFD sees the cables again. Frames never loop or duplicate meanwhile."""
    spec = two_tors()
    all_cables = link_down(spec, "isl1") | link_down(spec, "isl2")
    net = FakeFabric(spec, core.fabric_messages(spec), down=all_cables, broken=set())
    for src, dst in (("esx1", mac(2, 20)), ("esx2", mac(1, 10))):
        trace = net.send(src, 20 if dst == mac(2, 20) else 10, dst)
        assert not trace.looped
        assert len(trace.delivered) <= 1


def test_recovering_switch_is_reached_before_its_bfd_is_up():
    """tor-a comes back: every cable has carrier, the servers' bonds are back on their tor-a
    NICs at once, but BFD calls the inter-switch cables dead for 1-2 s more. tor-b's frames
    for a server on tor-a still reach its active NIC (the copy across the first cable), and
    the other copy goes to the NIC the bond ignores: exactly one delivery, no loop."""
    spec = two_tors()
    not_live = link_down(spec, "isl1") | link_down(spec, "isl2")
    net = FakeFabric(spec, core.fabric_messages(spec), down=not_live, broken=set())
    for src, dst, vlan, server_ in (("esx2", mac(1, 20), 20, "esx1"),
                                    ("esx2", mac(3, 10), 10, "array")):
        trace = net.send(src, vlan, dst)
        assert not trace.looped
        assert trace.servers() == [server_]
    # ...and in a real tor-a failure the copy dies with the cable: still delivered once.
    dead = {("tor-a", port) for port in (1, 2, 10, 11, 12)} | {("tor-b", 1), ("tor-b", 2)}
    trace = FakeFabric(spec, core.fabric_messages(spec), down=dead).send("esx2", 20, mac(1, 20))
    assert trace.servers() == ["esx1"] and ("tor-b", 1) in trace.lost


def test_tree_change_goes_through_shared_edges_and_never_loops():
    spec = triangle()
    old = core.flood_tree(spec)
    new = core.flood_tree(spec, frozenset(link_down(spec, "ab")))
    steps = core.tree_steps(old, new)
    assert steps[-1] == new and steps[0] == old & new
    # While a step is being installed, any switch may still hold the step before it.
    for a, b in zip([old] + steps, steps):
        for mix in itertools.product([a, b], repeat=3):
            msgs = {s.name: core.switch_messages(spec, s.name, t)
                    for s, t in zip(spec.switches, mix)}
            net = FakeFabric(spec, msgs)
            for src in spec.attachments:
                trace = net.send(src.server, 10, BROADCAST)
                assert not trace.looped
                assert len(trace.servers()) == len(set(trace.servers()))


def test_flood_tree_avoids_dead_links_and_spans_every_switch():
    spec = triangle()
    assert core.flood_tree(spec) == {frozenset("ab"), frozenset("ac")}
    tree = core.flood_tree(spec, frozenset(link_down(spec, "ab")))
    assert tree == {frozenset("ac"), frozenset("bc")}


def test_each_phase_heads_for_one_uplink_with_backups():
    spec = two_tors()
    esx1 = spec.attachments[0]
    # Phase 0 goes to esx1's first NIC on tor-a; tor-b gets there over either cable.
    assert core.route(spec, esx1, "tor-a", 0).delivers
    at_b = core.route(spec, esx1, "tor-b", 0)
    assert at_b.main == (1, 2) and at_b.primary_peer == "tor-a" and at_b.trunk == (1, 2)
    # Phase 1 (tor-a saw the first NIC die) is delivered by tor-b to the second NIC.
    assert core.route(spec, esx1, "tor-b", 1).main == (10,)
    assert core.route(spec, esx1, "tor-a", 1).main == (1, 2)


def test_leaf_backup_avoids_the_spine_that_bounced_the_frame():
    spine_leaf = leaf_spine()
    h1 = spine_leaf.attachments[0]
    at_l2 = core.route(spine_leaf, h1, "l2", 0)
    assert at_l2.primary_peer == "s1" and at_l2.main == (1, 2) and at_l2.backup == (2,)


def test_normal_path_crosses_one_cable_and_lands_on_the_primary_nic():
    spec = two_tors()
    net = FakeFabric(spec, core.fabric_messages(spec))
    trace = net.send("esx1", 20, mac(2, 20))
    assert trace.hops == [("tor-a", 10), ("tor-b", 1)]
    assert trace.delivered == [("esx2", "tor-b", 11)]


def test_nic_failure_bounces_once_then_lands_on_the_backup_nic():
    spec = two_tors()
    net = FakeFabric(spec, core.fabric_messages(spec), {("tor-b", 11)})
    trace = net.send("esx1", 20, mac(2, 20))
    assert trace.hops == [("tor-a", 10), ("tor-b", 1), ("tor-a", 1)]
    assert trace.delivered == [("esx2", "tor-a", 11)]


def test_dscp_marks_each_class_and_set_queue_only_when_asked():
    spec = two_tors()
    for use_set_queue in (False, True):
        spec = FabricSpec(spec.switches, spec.links, spec.attachments, spec.networks,
                          Options(use_set_queue=use_set_queue))
        flows = core.class_flows(spec)
        ip = [f for f in flows if f.match.get("eth_type") == core.ETH_IPV4]
        assert [(f.match["vlan_vid"] & 0xFFF, f.instructions[0].actions[0].value)
                for f in ip] == [(10, 16), (20, 10), (30, 26), (100, 18)]
        queues = [a for f in flows for i in f.instructions
                  for a in getattr(i, "actions", []) if type(a).__name__ == "OFPActionSetQueue"]
        assert bool(queues) == use_set_queue


def test_capped_network_is_metered_at_server_ports_only():
    spec = two_tors()
    meters = core.meter_messages(spec)
    assert [(m.meter_id, m.bands[0].rate) for m in meters] == [(2, 500_000)]
    admit = core.admission_flows(spec, "tor-a")
    metered = [f for f in admit if any(type(i).__name__ == "OFPInstructionMeter"
                                       for i in f.instructions)]
    assert sorted((f.match["in_port"], f.match["vlan_vid"] & 0xFFF) for f in metered) == [
        (10, 20), (11, 20)]


def test_lldp_goes_to_the_controller_and_misses_drop():
    spec = two_tors()
    msgs = core.switch_messages(spec, "tor-a", core.flood_tree(spec))
    net = FakeFabric(spec, {"tor-a": msgs, "tor-b": []})
    trace = net.send("esx1", 10, "01:80:c2:00:00:0e", eth_type=core.ETH_LLDP)
    assert trace.to_controller == ["tor-a"]
    misses = [m for m in msgs if type(m).__name__ == "OFPFlowMod" and m.priority == 0]
    assert sorted(m.table_id for m in misses) == [0, 1, 2]
    assert all(m.instructions == [] for m in misses)


def test_server_port_refuses_vlans_it_does_not_carry():
    spec = two_tors()
    net = FakeFabric(spec, core.fabric_messages(spec))
    assert net.send("array", 20, mac(1, 20)).servers() == []


def test_messages_are_deterministic_and_groups_come_before_flows():
    spec = two_tors()
    one = core.fabric_messages(spec)
    two = core.fabric_messages(spec)
    assert [core.content(m) for m in one["tor-a"]] == [core.content(m) for m in two["tor-a"]]
    kinds = [type(m).__name__ for m in one["tor-a"]]
    assert kinds.index("OFPFlowMod") > max(i for i, k in enumerate(kinds) if k == "OFPGroupMod")
    for msg in one["tor-a"]:
        msg.serialize()  # a real switch could parse every one of them


def test_changes_sends_only_what_differs_and_modifies_groups_in_place():
    spec = triangle()
    before = core.fabric_messages(spec)["b"]
    after = core.fabric_messages(spec, frozenset(link_down(spec, "ab")))["b"]
    installed = {core.key(m): m for m in before}
    diff = core.changes(installed, after)
    assert diff, "the flood tree moved, so b must change"
    of = core.OFP13.ofproto
    assert all(m.command == of.OFPGC_MODIFY for m in diff if type(m).__name__ == "OFPGroupMod")
    assert not any(type(m).__name__ == "OFPFlowMod" and m.command != of.OFPFC_ADD for m in diff)
    unchanged = {core.key(m) for m in before} & {core.key(m) for m in after}
    assert len(diff) < len(unchanged)
    assert core.changes({core.key(m): m for m in after}, after) == []


def test_changes_on_unknown_switch_sends_modify_then_add():
    spec = two_tors()
    desired = core.fabric_messages(spec)["tor-a"]
    diff = core.changes(None, desired)
    of = core.OFP13.ofproto
    groups = [m for m in diff if type(m).__name__ == "OFPGroupMod"]
    assert [m.command for m in groups[:2]] == [of.OFPGC_MODIFY, of.OFPGC_ADD]
    assert groups[0].group_id == groups[1].group_id
    assert not any(getattr(m, "command", None) == of.OFPFC_DELETE_STRICT for m in diff)


def test_changes_deletes_what_is_no_longer_wanted_after_adding():
    spec = two_tors()
    desired = core.fabric_messages(spec)["tor-a"]
    extra = core._flow(core.OFP13, 2, 999, core.OFP13.ofproto_parser.OFPMatch(in_port=77), [])
    installed = {core.key(m): m for m in desired + [extra]}
    diff = core.changes(installed, desired)
    assert len(diff) == 1 and diff[0].command == core.OFP13.ofproto.OFPFC_DELETE_STRICT
