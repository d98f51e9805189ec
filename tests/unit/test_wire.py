"""Wired cables for AF_XDP ports (topology/wire.py): the commands, checked without root. The
lab's own build with them is tests/integration/test_wire.py."""

from pathlib import Path

from vclab.lab.executor import Executor
from vclab.topology.commands import Tc
from vclab.topology.loader import load_cluster
from vclab.topology.plan import build_plan
from vclab.topology.render import build_commands
from vclab.topology.wire import redirect_commands, sink_name, splice_commands, wire_name

DEFAULT = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"


def test_each_cable_becomes_two_pairs_through_the_wire_namespace():
    plan = build_plan(load_cluster(DEFAULT))
    wire = wire_name("vc")
    cmds = [" ".join(c) for c in splice_commands(plan, wire, sink_name("vc"))]
    assert cmds[0] == "ip netns add vcwire"
    assert "ip -n vcwire link add vcsink0 type ifb" in cmds  # left down: a silent fault's drop
    for v in plan.cables():
        a, b = v.a.ifname, v.b.ifname
        # B's old pair end goes into the wire (named B there, peer of root A) ...
        assert f"ip link set {b} netns {wire}" in cmds
        # ... and root B is made anew, with its MAC, peered with a wire-side A
        assert f"ip link add {b} address {v.b.mac} type veth peer name {a} netns {wire}" in cmds
        assert f"ip netns exec {wire} ethtool -K {a} txvlan off" in cmds
    assert not any(" ".join(c).startswith("ip link") and h.name in c
                   for c in splice_commands(plan, wire, "s") for h in plan.hosts)


def test_what_arrives_on_one_side_leaves_on_the_other():
    plan = build_plan(load_cluster(DEFAULT))
    cable = plan.cables()[0]
    a, b = cable.a.ifname, cable.b.ifname
    lines = [c.batch_line for c in redirect_commands(plan)]
    # frames OVS sends out A arrive on the wire-side B and leave by the wire-side A (whose
    # egress is where `tc dev A` shapes A's direction, as before)
    assert f"qdisc replace dev {b} ingress" in lines
    assert any(line.startswith(f"filter replace dev {b} parent ffff:")
               and line.endswith(f"mirred egress redirect dev {a}") for line in lines)
    assert any(line.startswith(f"filter replace dev {a} parent ffff:")
               and line.endswith(f"mirred egress redirect dev {b}") for line in lines)
    assert len(lines) == 4 * len(plan.cables())


def test_afxdp_ports_poll_every_queue_and_tc_follows_the_wire():
    plan = build_plan(load_cluster(DEFAULT))
    (merged,) = build_commands(plan, "netdev", ports="afxdp", queues=2)
    n_ports = sum(1 for b in plan.bridges for p in b.ports)
    assert merged.count("type=afxdp") == n_ports
    assert merged.count("options:n_rxq=2") == n_ports
    assert "type=afxdp" not in build_commands(plan, "netdev")[0]
    ex = Executor()
    ex.tc_netns["vcs0p1"] = "vcwire"
    assert ex.tc_args(Tc("class", "show", "vcs0p1", stats=True)) == [
        "tc", "-n", "vcwire", "-s", "class", "show", "dev", "vcs0p1"]
    assert ex.tc_args(Tc("qdisc", "show", "vcv0p1")) == ["tc", "qdisc", "show", "dev", "vcv0p1"]
