"""The QoS commands the build will run on fabric ports (generated only, never run here)."""

from __future__ import annotations

from vclab.controller import qos
from vclab.controller.model import FabricSpec, Link, Network, Options, Switch

NETS = (
    Network("management", 10, "management", 10, 16),
    Network("vmotion", 20, "vmotion", 30, 10, cap_mbps=400),
    Network("storage", 30, "storage", 40, 26),
)


def test_one_htb_queue_per_network_plus_default():
    cmds = qos.port_qos_commands("vcc-ab1a", NETS, 1000)
    ovs = cmds[0]
    assert ovs[:6] == ["ovs-vsctl", "--", "set", "port", "vcc-ab1a", "qos=@q"]
    assert "type=linux-htb" in ovs and "other-config:max-rate=1000000000" in ovs
    assert [a for a in ovs if a.startswith("queues:")] == [
        "queues:0=@q0", "queues:1=@q1", "queues:2=@q2", "queues:3=@q3"]
    mins = [a.split("=")[1] for a in ovs if a.startswith("other-config:min-rate")]
    assert mins == ["200000000", "100000000", "300000000", "400000000"]  # rest 20 %, then shares
    maxes = [a.split("=")[1] for a in ovs if a.startswith("other-config:max-rate")][1:]
    assert maxes == ["1000000000", "1000000000", "400000000", "1000000000"]  # vmotion capped


def test_dscp_filters_point_each_network_at_its_class():
    cmds = qos.port_qos_commands("vcc-ab1a", NETS, 1000)[1:]
    assert len(cmds) == 6  # IPv4 + IPv6 per network
    v4_vmotion = cmds[2]
    assert v4_vmotion == ["tc", "filter", "add", "dev", "vcc-ab1a", "parent", "1:", "protocol",
                          "all", "prio", "3", "u32", "match", "u8", "0x40", "0xf0", "at", "0",
                          "match", "u8", "0x28", "0xfc", "at", "1", "flowid", "1:3"]
    v6_storage = cmds[5]
    assert v6_storage[-7:] == ["u16", "0x6680", "0xffc0", "at", "0", "flowid", "1:4"]
    assert len({c[c.index("prio") + 1] for c in cmds}) == 6  # every filter its own priority


def test_kernel_datapath_needs_no_filters():
    cmds = qos.port_qos_commands("eth1", NETS, 1000, use_set_queue=True)
    assert len(cmds) == 1 and cmds[0][0] == "ovs-vsctl"


def test_fabric_commands_cover_named_ports_only():
    spec = FabricSpec((Switch("a", 1), Switch("b", 2)),
                      (Link("ab", "a", 1, "b", 1, "vcc-a1", "vcc-b1"), Link("ab2", "a", 2, "b", 2)),
                      (), NETS, Options(link_mbps=100))
    cmds = qos.fabric_qos_commands(spec)
    devices = {c[4] for c in cmds if c[0] == "ovs-vsctl"}
    assert devices == {"vcc-a1", "vcc-b1"}
    assert all("other-config:max-rate=100000000" in c for c in cmds if c[0] == "ovs-vsctl")
    assert qos.queue_of(spec, NETS[2]) == 3


def test_meters_and_removal():
    spec = FabricSpec((Switch("a", 1),), networks=NETS)
    assert qos.meter_commands(spec, "vcc-a") == [[
        "ovs-ofctl", "-O", "OpenFlow13", "add-meter", "vcc-a",
        "meter=2,kbps,burst,band=type=drop,rate=400000,burst_size=40000"]]
    undo = qos.removal_commands("vcc-a1", "u-q", ["u-0", "u-1"])[0]
    assert undo[:6] == ["ovs-vsctl", "--if-exists", "clear", "port", "vcc-a1", "qos"]
    assert undo.count("destroy") == 3
