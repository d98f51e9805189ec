"""The sdn and linux-stp mechanisms as generated data: no root, no switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from vclab.fabric.controller import model
from vclab.errors import VclabError
from vclab.fabric.linux_stp import LinuxStp, judge
from vclab.fabric.mechanisms import Rstp, Stp
from vclab.fabric.registry import get_mechanism
from vclab.fabric.sdn import Sdn, bfd_sessions, fabric_spec
from vclab.topology.loader import load_cluster
from vclab.topology.plan import build_plan
from vclab.topology.render import ovs_commands

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = load_cluster(ROOT / "topologies" / "default.yaml")
SINGLE = load_cluster(ROOT / "topologies" / "single-switch.yaml")


@pytest.fixture(scope="module")
def plan():
    return build_plan(DEFAULT, "vcf")


def test_fabric_spec_from_the_default_cluster(plan):
    spec = fabric_spec(plan, DEFAULT)
    assert [(s.name, s.dpid) for s in spec.switches] == [("tor-a", 1), ("tor-b", 2)]
    assert [(lk.name, lk.a, lk.a_port, lk.b, lk.b_port, lk.a_ifname) for lk in spec.links] == [
        ("tor-a/tor-b#1", "tor-a", 1, "tor-b", 1, "vcfs0p1"),
        ("tor-a/tor-b#2", "tor-a", 2, "tor-b", 2, "vcfs0p2")]
    by_name = {a.server: a for a in spec.attachments}
    # The array's portals are separate attachments: each carries its own VLAN only.
    assert by_name["array1.storage-b"].uplinks == (model.Uplink("tor-b", 4, "vcfs1p4"),)
    assert by_name["array1.storage-b"].vlans == (31,)
    esx1 = by_name["esx1"]
    assert [u.switch for u in esx1.uplinks] == ["tor-a", "tor-b"]  # vmnic0 is the primary
    # The hypervisor's MACs include its VM's (web1 on vm-web).
    web1 = plan.host("web1").interface("vm-web").mac
    assert web1 in esx1.macs[100] and len(esx1.macs[100]) == 2
    shares = {n.name: (n.share, n.dscp) for n in spec.networks}
    assert shares["vmotion"] == (30.0, 10) and shares["storage-a"][0] == 20.0
    assert len({n.dscp for n in spec.networks}) == len(spec.networks)
    assert spec.options.link_mbps == 1000.0 and not spec.options.use_set_queue
    assert fabric_spec(plan, DEFAULT, "system").options.use_set_queue
    model.validate(spec)  # and it survives the controller's JSON round trip
    assert model.loads(model.dumps(spec)) == spec


def test_fabric_spec_follows_the_team_primary():
    text = (ROOT / "topologies" / "default.yaml").read_text().replace(
        "team: {mode: active-backup}", "team: {mode: active-backup, primary: vmnic1}")
    from vclab.topology.loader import cluster_from_text
    cluster = cluster_from_text(text)
    spec = fabric_spec(build_plan(cluster, "vcf"), cluster)
    esx1 = next(a for a in spec.attachments if a.server == "esx1")
    assert [u.switch for u in esx1.uplinks] == ["tor-b", "tor-a"]


def test_sdn_bridges_are_secure_openflow13_with_a_controller_and_bfd(plan):
    sdn = Sdn(port=6999, bfd_ms=20)
    cmds = ovs_commands(plan, "netdev", sdn)
    tor_a = cmds[0]
    assert "fail_mode=secure" in tor_a and "fail_mode=standalone" not in tor_a
    assert "protocols=OpenFlow13" in tor_a and "controller=@vcctlvcfs0" in tor_a
    i = tor_a.index("--id=@vcctlvcfs0")
    assert tor_a[i + 1:i + 3] == ["create", "controller"]
    assert 'target="tcp:127.0.0.1:6999"' in tor_a and "connection_mode=out-of-band" in tor_a
    # BFD on both inter-switch cables, and not on the server ports.
    j = tor_a.index("vcfs0p1", tor_a.index("interface"))
    assert tor_a[j + 4:j + 7] == ["bfd:enable=true", "bfd:min_tx=20", "bfd:min_rx=20"]
    assert tor_a.count("bfd:enable=true") == 2
    vswitch = cmds[2]
    assert "fail_mode=standalone" in vswitch and "controller" not in " ".join(vswitch)
    # with bfd_nics the server NICs run BFD too, on both ends
    uplink = next(p for p in plan.bridge("esx1").ports if p.role == "uplink")
    downlink = next(p for p in plan.bridge("tor-a").ports if p.role == "downlink")
    assert "bfd:enable=true" in Sdn(bfd_nics=True).interface_options(plan.bridge("esx1"), uplink)
    assert "bfd:enable=true" in Sdn(bfd_nics=True).interface_options(plan.bridge("tor-a"), downlink)
    assert Sdn().interface_options(plan.bridge("esx1"), uplink) == []


def test_sdn_refuses_lacp_teams():
    with pytest.raises(VclabError, match="LACP"):
        Sdn().check(build_plan(SINGLE, "vcf"))


def test_linux_stp_makes_kernel_bridges_with_the_spec_priorities(plan):
    mech = LinuxStp(vlan_filtering=False)
    cmds = ovs_commands(plan, "netdev", mech)
    made = [c for c in cmds if c[:3] == ["ip", "link", "add"]]
    assert [c[3] for c in made] == ["vcfs0", "vcfs1"]
    assert made[0][made[0].index("priority") + 1] == "4096"
    assert made[0][made[0].index("forward_delay") + 1] == "400"  # centiseconds
    assert made[0][made[0].index("address") + 1] == plan.bridge("tor-a").hwaddr
    assert not any(c[:4] == ["ovs-vsctl", "--timeout=30", "add-br", "vcfs0"] for c in cmds)
    # Down while ports join, up last: every port starts in listening.
    tor_a = [c for c in cmds if "vcfs0" in c]
    assert tor_a[-1] == ["ip", "link", "set", "dev", "vcfs0", "up"]
    assert ["ip", "link", "set", "dev", "vcfs0p5", "master", "vcfs0"] in cmds
    assert not any(c[0] == "bridge" for c in cmds)
    filtered = LinuxStp(vlan_filtering=True).commands(plan)
    assert ["bridge", "vlan", "add", "dev", "vcfs0p1", "vid", "31"] in filtered
    with pytest.raises(VclabError, match="LACP"):
        mech.check(build_plan(SINGLE, "vcf"))
    assert LinuxStp().timeout == 2 * 4 + 6 + 10


def test_linux_stp_judge():
    assert judge({"tor-a": {"p1": 3, "p2": 4}, "tor-b": {"p1": 3}}) == (True, "")
    done, moving = judge({"tor-a": {"p1": 1, "p2": 3}})
    assert not done and "tor-a:p1 listening" in moving
    assert not judge({"tor-a": {"p1": 4, "p2": 4}})[0]  # the moment before listening


def test_stp_defaults_are_the_tuned_timers():
    opts = Stp().bridge_options(build_plan(DEFAULT, "vcf").bridge("tor-a"))
    assert {"other_config:stp-hello-time=1", "other_config:stp-max-age=6",
            "other_config:stp-forward-delay=4"} <= set(opts)
    assert Stp().timeout == 24.0


def test_every_named_mechanism_exists():
    for name in ("none", "stp", "rstp", "linux-stp", "sdn"):
        assert get_mechanism(name).name == name
    with pytest.raises(VclabError, match="controller"):
        Rstp().action(None, "kill")


def test_bfd_sessions_from_one_listing():
    listing = ('{"data":[["vcs0p1",["map",[["diagnostic","No Diagnostic"],["flap_count","3"],'
               '["forwarding","true"],["state","up"]]]],["vcv0p1",["map",[]]]],'
               '"headings":["name","bfd_status"]}')
    sessions = bfd_sessions(listing)
    assert sessions["vcs0p1"]["state"] == "up" and sessions["vcs0p1"]["flap_count"] == "3"
    assert sessions["vcv0p1"] == {}
    assert bfd_sessions("") == {} and bfd_sessions("ovs-vsctl: no db") == {}
