"""Cluster mode without root or ssh: the placement of a cluster over servers, the tunnels for
the cables that cross them, and where each root command is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from vclab.errors import VclabError
from vclab.topology.loader import cluster_from_text, load_cluster
from vclab.lab.placement import (TUNNEL_MTU, VNI_BASE, Server, describe, parse_servers,
                                      place, remote_command, server_for, tunnel_commands)
from vclab.topology.commands import Exec, Tc, Vsctl
from vclab.topology.plan import build_plan
from vclab.topology.render import build_commands, host_commands

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"
TWO = [Server("a", "10.0.0.1"), Server("b", "10.0.0.2")]


@pytest.fixture(scope="module")
def plan():
    return build_plan(load_cluster(DEFAULT))


def test_parse_servers():
    assert parse_servers("localhost") == [Server("localhost", "127.0.0.1")]
    assert parse_servers("localhost=10.0.0.1, b,c=10.0.0.3") == [
        Server("localhost", "10.0.0.1"), Server("b", "b"), Server("c", "10.0.0.3")]
    for bad, why in (("", "at least one"), ("a,a", "twice"), ("localhost,b", "localhost=ADDRESS"),
                     ("a b", "host name")):
        with pytest.raises(VclabError, match=why):
            parse_servers(bad)


def test_one_server_holds_everything_and_needs_no_tunnel(plan):
    p = place(plan, [Server("localhost", "127.0.0.1")])
    assert set(p.nodes.values()) == {"localhost"}
    assert len(p.nodes) == len(plan.hosts) + len(plan.bridges)
    assert p.tunnels == () and not p.remote


def test_servers_stay_whole_with_their_vswitch_and_vms(plan):
    p = place(plan, TWO)
    for host in plan.hosts:
        assert p.nodes[host.name] == p.nodes[host.vswitch], host.name
    # VMs ride with their hypervisor
    assert p.nodes["web1"] == p.nodes["esx1"] and p.nodes["web2"] == p.nodes["esx2"]
    # physical switches spread, and the nodes shared as evenly as whole servers allow (14
    # nodes in units of 1 to 3: the last server overflows the first machine by one)
    assert {p.nodes["vcs0"], p.nodes["vcs1"]} == {"a", "b"}
    assert p.load() == {"a": 8, "b": 6}


def test_only_cables_cross_and_each_is_one_tunnel(plan):
    p = place(plan, TWO)
    crossing = [v for v in plan.veths if p.crosses(v.a.node, v.b.node)]
    assert crossing and all(v.a.in_root and v.b.in_root for v in crossing)
    assert [t.cable for t in p.tunnels] == [v.name for v in crossing]
    # tor-a and tor-b are on different machines: both inter-switch links cross
    assert sum(t.a.node.startswith("vcs") and t.b.node.startswith("vcs") for t in p.tunnels) == 2
    vnis = [t.vni for t in p.tunnels]
    assert len(set(vnis)) == len(vnis) and min(vnis) == VNI_BASE + 1
    t = p.tunnels[0]
    assert {t.a.server, t.b.server} == {"a", "b"}
    assert (t.a.local, t.a.remote) == (p.server(t.a.server).address, p.server(t.b.server).address)
    # every NIC of a server has one end on its own machine: at most one tunnel per NIC
    assert len(p.tunnels) <= len([v for v in plan.veths if v.a.in_root and v.b.in_root])


def test_a_server_goes_where_its_switch_is():
    """A single switch: servers fill its machine first (no tunnel), then spill over evenly."""
    text = """
cluster: one
networks: {management: {vlan: 10, subnet: 10.10.0.0/24}}
switches: {tor-a: {}}
hypervisors:
""" + "".join(f"  esx{i}: {{nics: {{vmnic0: tor-a}}, networks: [management]}}\n" for i in range(1, 6))
    plan = build_plan(cluster_from_text(text))
    p = place(plan, TWO)
    assert p.nodes["vcs0"] == "a"
    on_a = [f"esx{i}" for i in range(1, 6) if p.nodes[f"esx{i}"] == "a"]
    assert on_a == ["esx1", "esx2"]  # 11 nodes: room for 6 on a (the switch and 2 x 2)
    assert len(p.tunnels) == 3 and all(t.cable.endswith(".vmnic0") for t in p.tunnels)


def test_pins(plan):
    p = place(plan, TWO, pins={"tor-a": "b", "tor-b": "b", "esx3": "a"})
    assert p.nodes["vcs0"] == p.nodes["vcs1"] == "b"
    assert p.nodes["esx3"] == p.nodes[plan.host("esx3").vswitch] == "a"
    # both switches on b: the inter-switch links stay veths
    assert not any(t.a.node.startswith("vcs") and t.b.node.startswith("vcs") for t in p.tunnels)
    with pytest.raises(VclabError, match="'web1': no switch or server.*tor-a='z': not one of the servers"):
        place(plan, TWO, pins={"web1": "a", "tor-a": "z"})


def test_tunnel_commands_keep_the_cable_ends_name_and_mac(plan):
    p = place(plan, TWO)
    t = p.tunnels[0]
    add, up = tunnel_commands(t.a, t.vni)
    assert add == ["ip", "link", "add", t.a.ifname, "address", t.a.mac, "type", "vxlan", "id",
                   str(t.vni), "local", t.a.local, "remote", t.a.remote, "dstport", "4789"]
    assert up == ["ip", "link", "set", t.a.ifname, "mtu", str(TUNNEL_MTU), "up"]
    assert t.a.ifname in plan.root_links() and t.b.ifname in plan.root_links()


def test_commands_go_to_the_server_holding_what_they_name(plan):
    p = place(plan, TWO)
    tor_a, esx1 = p.nodes["vcs0"], p.nodes[plan.host("esx1").vswitch]
    assert server_for(Exec(["ovs-appctl", "rstp/show", "vcs0"], ["vcs0"]), p) == tor_a
    assert server_for(Tc("qdisc", "replace", "vcs0p1", "root"), p) == tor_a
    assert server_for(Vsctl(["list-br"]), p) is None
    # each server's share of the build transaction names only its own bridges and ports
    for server in ("a", "b"):
        for cmd in build_commands(plan, bridges=p.bridges_on(server, plan)):
            assert server_for(cmd, p) == server
    with pytest.raises(VclabError, match="split it per server"):
        server_for(Vsctl(["del-br", "vcs0", "--", "del-br", "vcs1"], ["vcs0", "vcs1"]), p)
    assert esx1 in ("a", "b")


def test_remote_command_quotes_once():
    cmd = remote_command(Server("b", "10.0.0.2"), ["ovs-vsctl", "set", "interface", "x",
                                                    'external_ids:vclab-link="esx1.vmnic0"'], "lab")
    assert cmd[:6] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "lab@b"]
    assert cmd[6:8] == ["sudo", "-n"]
    assert cmd[8] == "ovs-vsctl set interface x 'external_ids:vclab-link=\"esx1.vmnic0\"'"


def test_hosts_get_the_tunnel_mtu_only_when_asked(plan):
    host = plan.host("esx1")
    assert not any("mtu" in c for c in host_commands(host))
    cmds = host_commands(host, mtu=TUNNEL_MTU)
    assert ["ip", "link", "set", "management", "mtu", str(TUNNEL_MTU)] in cmds


def test_describe(plan):
    lines = describe(place(plan, TWO), plan)
    assert lines[0].startswith("a: switches tor-a; servers vcenter")
    assert any(line.startswith("tunnel ") and "VXLAN" in line for line in lines)


def test_lab_in_cluster_mode_without_building():
    """What a Lab decides before it builds anything (no root needed): which mechanisms can
    cross servers, and which server each command goes to."""
    pytest.importorskip("mininet")
    from vclab.lab.lab import Lab

    cluster = load_cluster(DEFAULT)
    with pytest.raises(VclabError, match="'sdn' does not run across servers"):
        Lab(cluster, mechanism="sdn", servers="localhost=10.0.0.1,b")
    # with localhost alone every command stays here, whatever it names
    assert Lab(cluster, mechanism="sdn", servers="localhost")._server(Exec(["ovs-appctl", "x", "vcs1"], ["vcs1"]),
                                                                        None) is None
    lab = Lab(cluster, servers="localhost=10.0.0.1,b", ssh_user="lab", pins={"tor-b": "b"})
    assert lab.servers == ["localhost", "b"]
    assert lab._server(Exec(["ovs-appctl", "rstp/show", "vcs1"], ["vcs1"]), None) == Server("b", "b")
    assert lab._server(Exec(["ovs-appctl", "rstp/show", "vcs0"], ["vcs0"]), None) is None  # localhost's
    assert lab._server(["ovs-vsctl", "list-br"], "b") == Server("b", "b")
    assert lab._on("b") == {d for d, s in lab.placement.devices.items() if s == "b"}
    assert "vcs1" in lab._on("b") and "vcs0" not in lab._on("b")
