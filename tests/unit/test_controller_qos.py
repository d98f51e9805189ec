"""The QoS commands the build will run on fabric ports and server uplinks (generated only,
never run here)."""

from __future__ import annotations

import pytest

from vclab.fabric import qos
from vclab.fabric.controller.model import FabricSpec, Link, Network, Options, Switch
from vclab.fabric.sdn import fabric_spec, vswitch_uplinks
from vclab.topology.loader import cluster_from_text
from vclab.topology.plan import build_plan

NETS = (
    Network("management", 10, "management", 10, 16),
    Network("vmotion", 20, "vmotion", 30, 10, cap_mbps=400),
    Network("storage", 30, "storage", 40, 26),
)


def classes(cmds: list[list[str]]) -> dict[str, dict[str, str]]:
    """classid -> {rate, ceil, quantum, ...} of the `tc class` commands."""
    out = {}
    for c in cmds:
        if c[:2] == ["tc", "class"]:
            words = c[c.index("htb") + 1:]
            out[c[c.index("classid") + 1]] = dict(zip(words[::2], words[1::2]))
    return out


def test_one_htb_class_per_network_plus_default():
    cmds = qos.port_qos_commands("vcc-ab1a", NETS, 1000)
    assert cmds[0] == ["tc", "qdisc", "replace", "dev", "vcc-ab1a", "root", "handle", "1:",
                       "htb", "default", "1"]
    got = classes(cmds)
    assert list(got) == ["1:fffe", "1:1", "1:2", "1:3", "1:4"]  # OVS's queue numbering
    assert got["1:fffe"]["rate"] == got["1:fffe"]["ceil"] == "1000000000bit"
    assert [got[c]["rate"] for c in ("1:1", "1:2", "1:3", "1:4")] == [
        "200000000bit", "100000000bit", "300000000bit", "400000000bit"]  # rest 20 %, then shares
    assert [got[c]["ceil"] for c in ("1:1", "1:2", "1:3", "1:4")] == [
        "1000000000bit", "1000000000bit", "400000000bit", "1000000000bit"]  # vmotion capped
    # Spare bandwidth is lent in proportion to the shares.
    assert [int(got[c]["quantum"]) for c in ("1:2", "1:3", "1:4")] == [2 * 1518, 6 * 1518, 8 * 1518]


def test_netdev_classes_have_bounded_queues():
    """One send buffer in ovs-vswitchd serves every netdev port: a class queue must stay
    bounded (see qos.py), in bytes, so small frames are not counted as whole TSO segments."""
    cmds = qos.port_qos_commands("p1", NETS, 100)
    leaves = [c for c in cmds if c[:3] == ["tc", "qdisc", "replace"] and "parent" in c]
    assert [c[c.index("parent") + 1] for c in leaves] == ["1:1", "1:2", "1:3", "1:4"]
    assert all(c[-3:] == ["bfifo", "limit", str(qos.NETDEV_QUEUE_BYTES)] for c in leaves)
    assert len({c[c.index("handle") + 1] for c in leaves}) == 4
    assert 4 * qos.NETDEV_QUEUE_BYTES <= 8 * 1024 * 1024  # four full classes fit the send buffer


def test_dscp_filters_point_each_network_at_its_class():
    cmds = [c for c in qos.port_qos_commands("vcc-ab1a", NETS, 1000) if c[:2] == ["tc", "filter"]]
    assert len(cmds) == 6  # IPv4 + IPv6 per network
    v4_vmotion = cmds[2]
    assert v4_vmotion == ["tc", "filter", "add", "dev", "vcc-ab1a", "parent", "1:", "protocol",
                          "all", "prio", "3", "u32", "match", "u8", "0x40", "0xf0", "at", "0",
                          "match", "u8", "0x28", "0xfc", "at", "1", "flowid", "1:3"]
    v6_storage = cmds[5]
    assert v6_storage[-7:] == ["u16", "0x6680", "0xffc0", "at", "0", "flowid", "1:4"]
    assert len({c[c.index("prio") + 1] for c in cmds}) == 6  # every filter its own priority


def test_kernel_datapath_needs_no_filters_and_keeps_default_queues():
    cmds = qos.port_qos_commands("eth1", NETS, 1000, use_set_queue=True)
    assert all(c[:2] == ["tc", "class"] or c[:3] == ["tc", "qdisc", "replace"] for c in cmds)
    assert not any("bfifo" in c for c in cmds)


def test_vlan_filter_matches_the_tag_before_the_ip_header():
    assert qos.vlan_filter_command("vcv0p1", 30, "1:3", 2) == [
        "tc", "filter", "add", "dev", "vcv0p1", "parent", "1:", "protocol", "all", "prio", "2",
        "u32", "match", "u16", "0x8100", "0xffff", "at", "-6",
        "match", "u16", "0x001e", "0x0fff", "at", "-4", "flowid", "1:3"]
    meta = qos.vlan_filter_command("eth1", 4094, "1:3", 2, in_data=False)
    assert meta[-4:] == ["match", "meta(vlan mask 0xfff eq 4094)", "classid", "1:3"]


def test_unknown_classifier_refused():
    with pytest.raises(ValueError, match="classify"):
        qos.htb_tree_commands("p1", 1e8, NETS, "flower")


def test_fabric_commands_cover_named_ports_only():
    spec = FabricSpec((Switch("a", 1), Switch("b", 2)),
                      (Link("ab", "a", 1, "b", 1, "vcc-a1", "vcc-b1"), Link("ab2", "a", 2, "b", 2)),
                      (), NETS, Options(link_mbps=100))
    cmds = qos.fabric_qos_commands(spec)
    assert {c[c.index("dev") + 1] for c in cmds} == {"vcc-a1", "vcc-b1"}
    assert all(classes(cmds[:2])["1:fffe"]["rate"] == "100000000bit" for _ in (0,))
    assert qos.queue_of(spec, NETS[2]) == 3


def test_uplinks_get_classes_for_the_networks_they_carry():
    cmds = qos.uplink_qos_commands(
        [("up1", (10, 30), 2e8),  # a hypervisor NIC: management and storage
         ("portal", (30,), 2e8),  # a storage portal carries one VLAN: nothing to share
         ("fast", (10, 20, 30), None)],  # no cable rate: no shares of it
        NETS)
    assert {c[c.index("dev") + 1] for c in cmds} == {"up1"}
    got = classes(cmds)
    assert got["1:fffe"]["rate"] == "200000000bit"
    # Only its own networks, in the fabric's order; the rest is what they leave (50 %).
    assert [got[c]["rate"] for c in ("1:1", "1:2", "1:3")] == [
        "100000000bit", "20000000bit", "80000000bit"]
    filters = [c for c in cmds if c[:2] == ["tc", "filter"]]
    assert [(f[f.index("-4") - 3], f[-1]) for f in filters] == [("0x000a", "1:2"), ("0x001e", "1:3")]
    kernel = qos.uplink_qos_commands([("up1", (10, 30), 2e8)], NETS, kernel_datapath=True)
    assert sum("basic" in c for c in kernel) == 2 and not any("bfifo" in c for c in kernel)


def test_uplinks_without_shares_are_left_alone():
    plain = tuple(Network(n.name, n.vlan, n.kind, 0.0, n.dscp) for n in NETS)
    assert qos.uplink_qos_commands([("up1", (10, 20, 30), 1e9)], plain) == []


CLUSTER = """
cluster: q
mechanism: sdn
defaults: {link: {rate: 100Mbit}}
networks:
  management: {vlan: 10, subnet: 10.10.0.0/24, share: 10%}
  storage:    {vlan: 30, subnet: 10.30.0.0/24, share: 40%, kind: storage}
  vm-web:     {vlan: 100, subnet: 10.100.0.0/24, share: 20%, kind: vm, cap: 80Mbit}
switches: {tor-a: {}}
hypervisors:
  esx1: {nics: {vmnic0: tor-a, vmnic1: {switch: tor-a, rate: 50Mbit}}, team: {mode: balance-slb},
         networks: [management, storage, vm-web]}
storage:
  array1: {portals: {storage: tor-a}}
management:
  vcenter: {nics: {eth0: tor-a}, networks: [management]}
"""


def test_nioc_goes_on_every_hypervisor_nic_with_its_own_rate():
    cluster = cluster_from_text(CLUSTER)
    plan = build_plan(cluster, "vcq")
    spec = fabric_spec(plan, cluster)
    assert [n.cap_mbps for n in spec.networks] == [None, None, 80.0]  # vm-web is policed
    ups = vswitch_uplinks(plan)
    esx1 = plan.bridge("esx1")
    assert [u for u in ups if u[0].startswith(esx1.name)] == [
        (esx1.name + "p1", (10, 30, 100), 1e8), (esx1.name + "p2", (10, 30, 100), 5e7)]
    cmds = qos.uplink_qos_commands(ups, spec.networks)
    roots = {c[c.index("dev") + 1]: classes([c])["1:fffe"]["rate"] for c in cmds
             if c[:2] == ["tc", "class"] and c[c.index("classid") + 1] == "1:fffe"}
    # Both team members (each its own rate); the array's portal and vcenter carry one network.
    assert roots == {esx1.name + "p1": "100000000bit", esx1.name + "p2": "50000000bit"}
    capped = classes([c for c in cmds if c[c.index("dev") + 1] == esx1.name + "p1"])["1:4"]
    assert capped["ceil"] == "80000000bit"


def test_meters():
    spec = FabricSpec((Switch("a", 1),), networks=NETS)
    assert qos.meter_commands(spec, "vcc-a") == [[
        "ovs-ofctl", "-O", "OpenFlow13", "add-meter", "vcc-a",
        "meter=2,kbps,burst,band=type=drop,rate=400000,burst_size=40000"]]


def test_share_floor_counts_headers_and_tolerance():
    # 40 % of 100 Mbit/s is 40 Mbit/s of frames, 38.2 of TCP payload, 34.3 with 10 % slack.
    assert qos.share_floor_bps(40, 100e6) == pytest.approx(34.34e6, rel=1e-3)
    assert qos.share_floor_bps(40, 100e6, tolerance=0) == pytest.approx(38.16e6, rel=1e-3)
    assert qos.share_floor_bps(0, 100e6) == 0
