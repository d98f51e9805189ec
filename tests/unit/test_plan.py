"""The build plan and the commands it generates, without root: names, ofports, VLANs, bonds,
addresses, loops, and the mechanisms' options and convergence parsing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vclab.errors import ConfigError, VclabError
from vclab.fabric.mechanisms import NoProtection, Rstp, Stp, parse_port_table
from vclab.fabric.registry import get_mechanism
from vclab.topology.loader import cluster_from_text, load_cluster
from vclab.topology.plan import Bond, build_plan, describe_loop, find_loop, Shape
from vclab.topology.render import (build_commands, host_commands, ipv6_off_commands,
                                   merge_transactions, ovs_commands, shape_commands, tc_commands)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"


@pytest.fixture(scope="module")
def plan():
    return build_plan(load_cluster(DEFAULT))


def small(extra: str = "", switches: str = "{tor-a: {priority: 4096}, tor-b: {}}",
          links: str = "[[tor-a, tor-b]]", esx: str = "{vmnic0: tor-a, vmnic1: tor-b}",
          team: str = "{mode: active-backup}") -> str:
    return f"""
cluster: t
networks:
  management: {{vlan: 10, subnet: 10.10.0.0/24}}
  vmotion: {{vlan: 20, subnet: 10.20.0.0/24}}
  vm-a: {{vlan: 100, subnet: 10.100.0.0/24, kind: vm}}
switches: {switches}
links: {links}
hypervisors:
  esx1: {{nics: {esx}, team: {team}, networks: [management, vmotion]}}
  esx2: {{nics: {{vmnic0: tor-a}}, networks: [management, vmotion]}}
vms:
  vm1: {{host: esx1, networks: [vm-a]}}
{extra}
"""


# ---- layout ----

def test_default_bridges_and_names(plan):
    assert [b.name for b in plan.physical] == ["vcs0", "vcs1"]
    assert [b.friendly for b in plan.physical] == ["tor-a", "tor-b"]
    # one virtual switch per management server, array and hypervisor, in address order
    assert [(b.name, b.friendly) for b in plan.vswitches] == [
        ("vcv0", "vcenter"), ("vcv1", "array1"), ("vcv2", "esx1"), ("vcv3", "esx2"), ("vcv4", "esx3")]
    for name in [b.name for b in plan.bridges] + plan.root_links():
        assert name.startswith("vc") and len(name) <= 15
    assert len(set(plan.root_links())) == len(plan.root_links())


def test_ofports_are_dense_and_links_first(plan):
    for bridge in plan.bridges:
        assert [p.ofport for p in bridge.ports] == list(range(1, len(bridge.ports) + 1))
        assert all(p.name == f"{bridge.name}p{p.ofport}" for p in bridge.ports)
    tor_a = plan.bridge("tor-a")
    assert [p.link for p in tor_a.ports[:2]] == ["tor-a/tor-b#1", "tor-a/tor-b#2"]
    assert tor_a.port("vcs0p5").link == "esx1.vmnic0" and tor_a.port("vcs0p5").peer == "esx1"


def test_physical_ports_trunk_every_vlan(plan):
    for bridge in plan.physical:
        for port in bridge.ports:
            assert port.mode == "trunk" and port.vlans == (10, 20, 30, 31, 100)


def test_vswitch_uplinks_bond_and_access_ports(plan):
    esx1 = plan.bridge("esx1")
    assert [p.role for p in esx1.ports] == ["uplink"] * 2 + ["access"] * 6
    (bond,) = esx1.bonds
    assert bond.members == ("vcv2p1", "vcv2p2") and bond.mode == "active-backup"
    assert bond.primary == "vcv2p1"  # the first NIC unless team.primary says otherwise
    assert bond.vlans == (10, 20, 30, 31, 100)
    access = {p.link: p.vlans for p in esx1.ports if p.role == "access"}
    assert access == {"esx1:management": (10,), "esx1:vmotion": (20,), "esx1:storage-a": (30,),
                      "esx1:storage-b": (31,), "esx1:vm-web": (100,), "web1:vm-web": (100,)}


def test_storage_uplinks_carry_only_their_portal(plan):
    array = plan.bridge("array1")
    assert not array.bonds
    uplinks = [(p.link, p.peer, p.vlans) for p in array.ports if p.role == "uplink"]
    assert uplinks == [("array1.storage-a", "tor-a", (30,)), ("array1.storage-b", "tor-b", (31,))]


def test_addresses_in_file_order_from_dot_one(plan):
    assert plan.networks["management"].members == (
        ("vcenter", "10.10.0.1"), ("esx1", "10.10.0.2"), ("esx2", "10.10.0.3"), ("esx3", "10.10.0.4"))
    assert plan.networks["storage-a"].members[0] == ("array1", "10.30.0.1")
    assert plan.networks["vm-web"].members[-2:] == (("web1", "10.100.0.4"), ("web2", "10.100.0.5"))
    iface = plan.host("esx2").interface("vmotion")
    assert (iface.name, iface.ip, iface.prefixlen, iface.vlan) == ("vmotion", "10.20.0.2", 24, 20)
    assert iface.mac == "02:00:0a:14:00:02"


def test_macs_unique(plan):
    macs = [e.mac for v in plan.veths for e in (v.a, v.b)] + [b.hwaddr for b in plan.bridges]
    assert len(macs) == len(set(macs))


def test_plan_is_deterministic():
    c = load_cluster(DEFAULT)
    assert build_plan(c) == build_plan(c)


def test_vms_bring_their_vlans_to_the_hypervisor_trunk():
    p = build_plan(cluster_from_text(small()))
    (bond,) = p.bridge("esx1").bonds
    assert bond.vlans == (10, 20, 100)  # vm-a is not in esx1's own networks
    assert p.bridge("esx2").port("vcv1p1").vlans == (10, 20)  # one NIC: a plain uplink
    assert not p.bridge("esx2").bonds


def test_team_primary_and_modes():
    p = build_plan(cluster_from_text(small(team="{mode: active-backup, primary: vmnic1}")))
    assert p.bridge("esx1").bonds[0].primary == "vcv0p2"
    p = build_plan(cluster_from_text(small(team="{mode: balance-slb}")))
    assert p.bridge("esx1").bonds[0].mode == "balance-slb" and p.bridge("esx1").bonds[0].primary is None
    assert not p.bridge("tor-a").bonds  # the switch end of an SLB team is plain ports


def test_lacp_team_gets_a_lacp_partner_on_the_switch():
    p = build_plan(cluster_from_text(small(esx="{vmnic0: tor-a, vmnic1: tor-a}", team="{mode: lacp}")))
    (partner,) = p.bridge("tor-a").bonds
    assert partner.mode == "lacp" and partner.role == "downlink" and len(partner.members) == 2
    cmd = " ".join(ovs_commands(p)[0])
    assert f"add-bond vcs0 {partner.name} {' '.join(partner.members)}" in cmd
    assert "lacp=active" in cmd and "bond_mode=balance-tcp" in cmd and "lacp-time=fast" in cmd


def test_names_that_would_clash_are_refused():
    text = small(extra="  vcs0: {host: esx1}").replace("vms:\n", "vms:\n")
    with pytest.raises(VclabError, match="vcs0"):
        build_plan(cluster_from_text(text))


# ---- commands ----

def test_ovs_commands_one_transaction_per_bridge_with_rstp_at_creation(plan):
    cmds = ovs_commands(plan, "netdev", Rstp(), run_id="run1")
    assert len(cmds) == len(plan.bridges)
    tor_a = cmds[0]
    assert tor_a[:4] == ["ovs-vsctl", "--timeout=30", "add-br", "vcs0"]
    first_port = tor_a.index("add-port")
    # RSTP and the priority are set in the same transaction, before any port exists
    assert tor_a.index("rstp_enable=true") < first_port
    assert "other_config:rstp-priority=4096" in tor_a[:first_port]
    for needed in ("datapath_type=netdev", "fail_mode=standalone", "external_ids:vclab-name=tor-a",
                   "external_ids:vclab-run=run1", "other_config:datapath-id=0000000000000001"):
        assert needed in tor_a
    # every interface gets its ofport and its user name
    assert tor_a.count("ofport_request=1") == 1
    assert 'external_ids:vclab-link="esx1.vmnic0"' in tor_a
    # ports facing servers are edge ports; inter-switch links are not
    i = tor_a.index("vcs0p5")
    assert "other_config:rstp-port-admin-edge=true" in tor_a[i:i + 6]
    i = tor_a.index("vcs0p1")
    assert "other_config:rstp-port-admin-edge=true" not in tor_a[i:i + 6]
    # virtual switches run no loop protection
    assert not any("rstp" in arg for arg in cmds[2])


def test_build_runs_every_bridge_in_one_transaction(plan):
    """What a build runs: the per-bridge transactions joined with `--`, nothing lost, nothing
    reordered, every bridge's RSTP still set in the operations that create it."""
    per_bridge = ovs_commands(plan, "netdev", Rstp(), run_id="run1")
    (merged,) = build_commands(plan, "netdev", Rstp(), run_id="run1")
    assert merged[0] == "ovs-vsctl"
    assert merged[1] == f"--timeout={30 * len(plan.bridges)}"
    ops = merged[2:]
    joined: list[str] = []
    for cmd in per_bridge:
        joined += (["--"] if joined else []) + cmd[2:]
    assert ops == joined
    tor_a = ops.index("vcs0")
    assert ops.index("rstp_enable=true", tor_a) < ops.index("add-port", tor_a)


def test_merge_transactions_keeps_other_commands_in_place():
    a = ["ovs-vsctl", "--timeout=30", "add-br", "x"]
    b = ["ovs-vsctl", "--timeout=10", "add-br", "y", "--", "set", "bridge", "y", "stp_enable=true"]
    ip = ["ip", "link", "set", "dev", "x", "up"]
    waitless = ["ovs-vsctl", "--no-wait", "add-br", "z"]
    assert merge_transactions([a, b, ip, a, waitless]) == [
        ["ovs-vsctl", "--timeout=40", "add-br", "x", "--", "add-br", "y", "--", "set", "bridge",
         "y", "stp_enable=true"], ip, a, waitless]
    # a size cap splits between transactions, never inside one
    split = merge_transactions([a, b, a], max_bytes=30)
    assert split == [a, ["ovs-vsctl", "--timeout=10", *b[2:]], a]
    # the merged timeout is capped
    assert merge_transactions([a] * 20)[0][1] == "--timeout=300"


def test_build_commands_one_server_and_the_mechanisms_commands(plan):
    from vclab.fabric.linux_stp import LinuxStp

    stp = LinuxStp(vlan_filtering=False)
    everything = build_commands(plan, "netdev", stp)
    assert everything[0][0] == "ovs-vsctl" and everything[1][:3] == ["ip", "link", "add"]
    assert everything[1:] == stp.commands(plan)
    (one,) = build_commands(plan, "netdev", Rstp(), bridges={"vcv2"})
    assert one[2:4] == ["add-br", "vcv2"] and "vcs0" not in one


def test_ovs_commands_vswitch_bond_and_access(plan):
    esx1 = next(c for c in ovs_commands(plan) if c[3] == "vcv2")
    text = " ".join(esx1)
    assert ("add-bond vcv2 vcv2b1 vcv2p1 vcv2p2 vlan_mode=trunk trunks=10,20,30,31,100 "
            "bond_mode=active-backup other_config:bond-primary=vcv2p1") in text
    assert "add-port vcv2 vcv2p4 tag=20" in text
    assert "set interface vcv2p1 ofport_request=1" in text


def test_ovs_commands_kernel_datapath(plan):
    assert "datapath_type=system" in ovs_commands(plan, "system")[0]


def test_stp_options():
    p = build_plan(cluster_from_text(small(links="[{between: [tor-a, tor-b], cost: 4}]")))
    cmd = ovs_commands(p, mechanism=Stp(hello_time=1, max_age=6, forward_delay=4))[0]
    for opt in ("stp_enable=true", "other_config:stp-priority=4096", "other_config:stp-forward-delay=4",
                "other_config:stp-max-age=6", "other_config:stp-hello-time=1"):
        assert opt in cmd
    i = cmd.index("vcs0p1")
    assert "other_config:stp-path-cost=4" in cmd[i:i + 5]
    # server-facing ports leave STP (OVS's STP has no edge ports)
    i = cmd.index("vcs0p2")
    assert "other_config:stp-enable=false" in cmd[i:i + 5]
    assert Stp(forward_delay=4, max_age=6).timeout == 24.0


def test_tc_shapes_each_cable_end_once(plan):
    cmds = tc_commands(plan)
    devs = [c[4] for c in cmds if c[1] == "qdisc"]
    cables = [v for v in plan.veths if v.shape is not None]
    assert len(devs) == len(set(devs)) == 2 * len(cables)
    assert not any(d.startswith("vcv") and plan.bridge(d[:4]).port(d).role == "access" for d in devs)
    assert ["tc", "class", "replace", "dev", "vcs0p1", "parent", "5:", "classid", "5:1", "htb",
            "rate", "1000000000bit", "burst", "125000", "cburst", "125000", "quantum", "200000"] in cmds


def test_shape_commands_delay_and_loss():
    assert shape_commands("x", Shape(rate=None)) == []
    netem_only = shape_commands("x", Shape(rate=None, delay=5, loss=0.5))
    assert netem_only == [["tc", "qdisc", "replace", "dev", "x", "root", "handle", "10:", "netem",
                           "delay", "5ms", "loss", "0.5%"]]
    both = shape_commands("x", Shape(rate=1e8, delay=2))
    assert both[-1][5:7] == ["parent", "5:1"] and "delay" in both[-1]
    assert both[1][both[1].index("burst") + 1] == "65536"  # never below one TSO segment


def test_needs_netem_lists_the_links():
    p = build_plan(cluster_from_text(small(links="[{between: [tor-a, tor-b], delay: 5ms}]")))
    assert p.needs_netem() == ["tor-a/tor-b#1"]
    assert build_plan(cluster_from_text(small())).needs_netem() == []


def test_host_commands(plan):
    cmds = host_commands(plan.host("esx1"))
    assert ["ip", "addr", "replace", "10.20.0.1/24", "dev", "vmotion"] in cmds
    assert ["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"] in cmds
    assert not any(c[0] == "ethtool" for c in cmds)
    assert ["ethtool", "-K", "vmotion", "tx", "off"] in host_commands(plan.host("esx1"), tx_offload_off=True)
    # a VM keeps its ARP cache while a vMotion pauses it (its carrier taken away)
    keep = ["sysctl", "-qew", "net.ipv4.conf.all.arp_evict_nocarrier=0"]
    assert keep not in cmds and keep in host_commands(next(h for h in plan.hosts if h.role == "vm"))


# ---- loops and mechanisms ----

def test_find_loop_parallel_links(plan):
    loop = find_loop(plan)
    assert loop == ["tor-a", "tor-a/tor-b#2", "tor-b", "tor-a/tor-b#1", "tor-a"]
    assert describe_loop(loop) == "tor-a -[tor-a/tor-b#2]- tor-b -[tor-a/tor-b#1]- tor-a"


def test_find_loop_triangle_and_tree():
    tri = small(switches="{a: {}, b: {}, c: {}}", links="[[a, b], [b, c], [c, a]]",
                esx="{vmnic0: a, vmnic1: b}").replace("tor-a", "a")
    loop = find_loop(build_plan(cluster_from_text(tri)))
    assert loop[0] == loop[-1] == "c" and set(loop[0::2]) == {"a", "b", "c"} and len(loop) == 7
    tree = small(links="[[tor-a, tor-b]]")
    assert find_loop(build_plan(cluster_from_text(tree))) is None


def test_none_refused_on_a_loop_with_the_loop_named(plan):
    with pytest.raises(VclabError, match=r"tor-a -\[tor-a/tor-b#2\]- tor-b"):
        NoProtection().check(plan)
    NoProtection().check(build_plan(cluster_from_text(small())))  # a tree is fine


def test_get_mechanism():
    assert isinstance(get_mechanism("rstp"), Rstp) and str(get_mechanism("rstp")) == "rstp"
    assert isinstance(get_mechanism("stp"), Stp)
    assert str(get_mechanism("sdn")) == "sdn" and str(get_mechanism("linux-stp")) == "linux-stp"
    with pytest.raises(VclabError, match="unknown mechanism"):
        get_mechanism("ospf")
    custom = Stp(forward_delay=4)
    assert get_mechanism(custom) is custom


RSTP_SHOW = """---- vcs0 ----
Root ID:
  stp-priority    4096
  stp-system-id   02:76:63:01:00:00
  This bridge is the root

Bridge ID:
  stp-priority    4096
  stp-system-id   02:76:63:01:00:00

  Interface  Role       State      Cost     Pri.Nbr 
  ---------- ---------- ---------- -------- -------
  vcs0p1     Designated Forwarding 2000     128.1
  vcs0p2     Designated Discarding 2000     128.2
  vcs0p3     Designated Forwarding 2000     128.3

---- vcs1 ----
Root ID:
  stp-priority    4096
  root-port       vcs1p1
  root-path-cost  2000

  Interface  Role       State      Cost     Pri.Nbr 
  ---------- ---------- ---------- -------- -------
  vcs1p1     Root       Forwarding 2000     128.1
  vcs1p2     Alternate  Discarding 2000     128.2
"""

STP_SHOW = """---- vcs8 ----
Root ID:
  stp-priority  32768
  root-port       vcs8p1

  Interface  Role       State      Cost  Pri.Nbr 
  ---------- ---------- ---------- ----- -------
  vcs8p1     root       learning   2     128.1
  vcs8p2     alternate  blocking   2     128.2
"""


def test_parse_port_table():
    assert parse_port_table(RSTP_SHOW) == [
        ("vcs0p1", "Designated", "Forwarding"), ("vcs0p2", "Designated", "Discarding"),
        ("vcs0p3", "Designated", "Forwarding"), ("vcs1p1", "Root", "Forwarding"),
        ("vcs1p2", "Alternate", "Discarding")]
    assert parse_port_table(STP_SHOW) == [("vcs8p1", "root", "learning"),
                                          ("vcs8p2", "alternate", "blocking")]


class FakeLab:
    def __init__(self, plan, outputs):
        self.plan, self.outputs = plan, outputs

    def sh(self, args, check=True):
        return self.outputs[args[-1]]


def _section(text: str, bridge: str) -> str:
    return next(s for s in re.split(r"^---- ", text, flags=re.M) if s.startswith(bridge))


def test_rstp_converged_only_when_every_port_is_final(plan):
    # vcs0p2 proposes to vcs1p2, an alternate port: OVS never answers, and the cable carries
    # nothing either way, so that is settled; the same port facing a designated one is not
    blocked = FakeLab(plan, {"vcs0": _section(RSTP_SHOW, "vcs0"), "vcs1": _section(RSTP_SHOW, "vcs1")})
    assert Rstp().converged(blocked) == (True, "")
    facing = _section(RSTP_SHOW, "vcs1").replace("Alternate  Discarding", "Designated Discarding")
    moving = FakeLab(plan, {"vcs0": _section(RSTP_SHOW, "vcs0"), "vcs1": facing})
    done, detail = Rstp().converged(moving)
    assert not done and detail == "tor-a:vcs0p2 Designated Discarding, tor-b:vcs1p2 Designated Discarding"
    settled = FakeLab(plan, {"vcs0": _section(RSTP_SHOW, "vcs0").replace("Designated Discarding", "Designated Forwarding"),
                             "vcs1": _section(RSTP_SHOW, "vcs1")})
    assert Rstp().converged(settled) == (True, "")


def test_stp_converged(plan):
    learning = FakeLab(plan, {"vcs0": STP_SHOW, "vcs1": STP_SHOW.replace("learning", "forwarding")})
    done, detail = Stp().converged(learning)
    assert not done and "learning" in detail
    all_blocking = FakeLab(plan, {"vcs0": STP_SHOW.replace("learning", "blocking"),
                                  "vcs1": STP_SHOW.replace("learning", "forwarding")})
    assert not Stp().converged(all_blocking)[0]
    settled = FakeLab(plan, {b: STP_SHOW.replace("learning", "forwarding") for b in ("vcs0", "vcs1")})
    assert Stp().converged(settled) == (True, "")


def test_bond_is_a_port_for_mechanisms(plan):
    tor_a_ports = plan.bridge("tor-a").ovs_ports()
    assert not any(isinstance(p, Bond) for p in tor_a_ports)
    assert Rstp().port_options(plan.bridge("esx1"), plan.bridge("esx1").bonds[0]) == []


# ---- clean: what it picks, with ovs-vsctl / ip faked ----

class FakeSystem:
    """Answers clean()'s ovs-vsctl and ip calls and records what it was asked to delete."""

    def __init__(self):
        self.bridges = {"vcs0": {"vclab-name": "tor-a", "vclab-run": "r1"},
                        "vcs1": {"vclab-name": "tor-b", "vclab-run": "r2"},
                        "vcq-br": {},  # another helper's rig: no vclab-name
                        "br0": {"vclab-name": "x"}}  # not our prefix
        self.ifaces = {"vcs0": ["vcs0p1", "vcs0p2"], "vcs1": ["vcs1p1"]}
        self.links = {"eth0", "vcs0", "vcs1", "vcs0p1", "vcs0p2", "vcs1p1", "vcq-br", "vcq-ap", "vcd-a"}
        self.deleted_bridges: list[str] = []
        self.deleted_links: list[str] = []
        self.deleted_netns: list[str] = []

    def run(self, args, stdin=None):
        import subprocess
        out = ""
        if "list" in args and "bridge" in args:
            rows = [[name, ["map", sorted(ids.items())]] for name, ids in self.bridges.items()]
            out = json.dumps({"data": rows, "headings": ["name", "external_ids"]})
        elif "list-ifaces" in args:
            out = "\n".join(self.ifaces.get(args[-1], []))
        elif "list-br" in args:
            out = "\n".join(self.bridges)
        elif "del-br" in args:
            for i, a in enumerate(args):
                if a == "del-br":
                    self.deleted_bridges.append(args[i + 1])
                    self.bridges.pop(args[i + 1], None)
                    self.links.discard(args[i + 1])
        elif args[:2] == ["ip", "-force"]:
            for line in stdin.splitlines():
                name = line.split()[-1]
                self.deleted_links.append(name)
                self.links.discard(name)
        elif args[:3] == ["ip", "netns", "list"]:
            out = "vcx1 (id: 3)\nsomeone-else\n"
        elif args[:3] == ["ip", "netns", "del"]:
            self.deleted_netns.append(args[3])
        return subprocess.CompletedProcess(args, 0, out, "")


@pytest.fixture
def fake(monkeypatch):
    import vclab.lab.clean as clean_mod
    system = FakeSystem()
    monkeypatch.setattr(clean_mod, "_run", system.run)
    monkeypatch.setattr(clean_mod.os, "listdir", lambda path: sorted(system.links))
    monkeypatch.setattr(clean_mod, "end_recorded", lambda d: [])
    return system


def test_clean_one_run_touches_only_that_run(fake, tmp_path):
    from vclab.lab.clean import clean
    removed = clean(run_id="r1", state_dir=tmp_path)
    assert fake.deleted_bridges == ["vcs0"]
    assert sorted(fake.deleted_links) == ["vcs0p1", "vcs0p2"]
    assert fake.deleted_netns == []
    assert "bridge vcs0 (tor-a)" in removed and "link vcs0p1" in removed


def test_clean_all_spares_bridges_that_are_not_vclabs(fake, tmp_path):
    from vclab.lab.clean import clean
    removed = clean(state_dir=tmp_path)
    assert sorted(fake.deleted_bridges) == ["vcs0", "vcs1"]
    # every vc link except the device of a bridge that stays (vcq-br); never eth0
    assert sorted(fake.deleted_links) == ["vcd-a", "vcq-ap", "vcs0p1", "vcs0p2", "vcs1p1"]
    assert "vcq-br" in fake.links and "eth0" in fake.links
    assert fake.deleted_netns == ["vcx1"]
    assert "netns vcx1" in removed


def test_ipv6_off_for_every_named_port():
    assert ipv6_off_commands([]) == []
    assert ipv6_off_commands(["vcfs0p2", "vcfs0p1"]) == [
        ["sysctl", "-q", "-e", "-w", "net/ipv6/conf/vcfs0p1/disable_ipv6=1",
         "net/ipv6/conf/vcfs0p2/disable_ipv6=1"]]


LAG = ROOT / "topologies" / "isl-lag.yaml"


def test_lag_cables_are_one_lacp_bond_on_each_switch():
    plan = build_plan(load_cluster(LAG), "vcf")
    for switch in ("tor-a", "tor-b"):
        bridge = plan.bridge(switch)
        (bond,) = [b for b in bridge.bonds if b.role == "isl"]
        assert bond.link == "isl" and bond.mode == "lacp"
        assert bond.members == tuple(p.name for p in bridge.ports if p.role == "isl")
        assert bond.peer == ({"tor-a", "tor-b"} - {switch}).pop()
    cmd = next(c for c in ovs_commands(plan) if "vcfs0" in c)
    at = cmd.index("add-bond")
    assert cmd[at:at + 5] == ["add-bond", "vcfs0", "vcfs0b1", "vcfs0p1", "vcfs0p2"]
    assert "other_config:lb-output-action=true" in cmd
    # one port to a spanning tree: the two cables are no loop
    assert find_loop(plan) is None
    assert find_loop(build_plan(load_cluster(DEFAULT), "vcf")) is not None


def test_lag_is_refused_where_it_cannot_be_built():
    from vclab.fabric.linux_stp import LinuxStp
    from vclab.fabric.sdn import Sdn
    plan = build_plan(load_cluster(LAG), "vcf")
    with pytest.raises(VclabError, match="inter-switch LAG isl: OpenFlow rules cannot output"):
        Sdn().check(plan)
    with pytest.raises(VclabError, match="inter-switch LAG isl"):
        LinuxStp().check(plan)
    NoProtection().check(plan)  # loop-free once bundled


@pytest.mark.parametrize("links, where, says", [
    ("[{between: [tor-a, tor-b], lag: x}, [tor-a, tor-b]]", "links.0.lag", "only this cable"),
    ("[{between: [tor-a, tor-b], lag: x}, {between: [tor-a, tor-c], lag: x}, [tor-b, tor-c]]",
     "links.1.lag", "joins tor-a and tor-c"),
    ("[{between: [tor-a, tor-b], lag: x, cost: 10}, {between: [tor-b, tor-a], lag: x, cost: 20}]",
     "links.1.cost", "take one cost: 10"),
])
def test_lag_mistakes_are_named(links, where, says):
    text = DEFAULT.read_text().replace(
        "switches:\n", "switches:\n  tor-c: {}\n", 1)
    start = text.index("links:")
    end = text.index("hypervisors:")
    text = text[:start] + f"links: {links}\n" + text[end:]
    with pytest.raises(ConfigError) as err:
        cluster_from_text(text, "lag.yaml")
    assert where in str(err.value) and says in str(err.value)
