"""Typed commands: what runs is the argument list the tests already check; where and how it
runs comes from the command's fields (placement by devices, a carrier by ioctl)."""

from pathlib import Path

from vclab.experiments.faults import port_config_commands, silent_commands
from vclab.experiments.spec import Fault
from vclab.experiments.cabling import PlanCabling
from vclab.experiments.faults import plan as fault_plan
from vclab.lab.placement import Server, place, server_for
from vclab.topology.commands import LinkState, Ofctl, Tc, Vsctl
from vclab.topology.loader import load_cluster
from vclab.topology.plan import build_plan
from vclab.topology.render import build_commands, tc_commands

DEFAULT = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"


def test_a_command_is_its_argument_list_with_fields():
    down = LinkState("vcs0p1", up=False)
    assert down == ["ip", "link", "set", "dev", "vcs0p1", "down"]
    assert (down.dev, down.up, down.devices) == ("vcs0p1", False, ("vcs0p1",))
    tc = Tc("qdisc", "replace", "vcs0p1", "root", "handle", "5:", "htb")
    assert tc == ["tc", "qdisc", "replace", "dev", "vcs0p1", "root", "handle", "5:", "htb"]
    assert tc.batch_line == "qdisc replace dev vcs0p1 root handle 5: htb"
    assert Ofctl("mod-port", "vcv0", "vcv0p2", "no-forward").bridge == "vcv0"


def test_a_cable_fault_is_link_states_on_both_ends():
    plan = build_plan(load_cluster(DEFAULT))
    cabling = PlanCabling(plan)
    apply, undo = fault_plan(Fault(at=0, link="esx1.vmnic0", action="down"), cabling)
    assert all(isinstance(c, LinkState) and not c.up for c in apply)
    assert {c.dev for c in apply} == set(cabling.link_ends("esx1.vmnic0"))
    assert all(isinstance(c, Tc) for c in silent_commands("vcs0p1"))
    assert all(isinstance(c, Ofctl) for c in port_config_commands("vcv0", "vcv0p1", False))


def test_the_build_routes_by_fields():
    plan = build_plan(load_cluster(DEFAULT))
    p = place(plan, [Server("a", "10.0.0.1"), Server("b", "10.0.0.2")])
    for server in ("a", "b"):
        for cmd in build_commands(plan, bridges=p.bridges_on(server, plan)):
            assert isinstance(cmd, Vsctl) and cmd.devices
            assert {p.devices[d] for d in cmd.devices if d in p.devices} == {server}
            assert server_for(cmd, p) == server
    for cmd in tc_commands(plan):
        assert server_for(cmd, p) == p.devices[cmd.dev]


def test_the_executor_sends_a_fault_where_its_cable_is():
    from vclab.lab.executor import Executor

    plan = build_plan(load_cluster(DEFAULT))
    p = place(plan, [Server("a", "10.0.0.1"), Server("b", "10.0.0.2")])
    ex = Executor(p, ssh_user="lab")
    for v in plan.cables():
        for end in (v.a, v.b):
            where = ex.server(LinkState(end.ifname, up=False))
            assert where is not None and where.name == p.devices[end.ifname]
    assert Executor().server(LinkState("vcs0p1", up=False)) is None  # one machine: here


def test_every_command_that_names_the_plan_routes_by_its_fields():
    """Placement reads a command's fields only: the linux-stp build and a VM's move are typed,
    and a plain argument list is a question about this machine, however its words read."""
    from vclab.fabric.linux_stp import LinuxStp
    from vclab.workloads.vmotion.migration import moved_plan, move_commands

    plan = build_plan(load_cluster(DEFAULT))
    p = place(plan, [Server("a", "10.0.0.1"), Server("b", "10.0.0.2")])
    for cmd in LinuxStp(vlan_filtering=True).commands(plan):
        assert cmd.devices and server_for(cmd, p) == p.nodes[cmd.devices[-1]]
    vm = next(h for h in plan.hosts if h.role == "vm")
    to = next(h.name for h in plan.hosts if h.role == "hypervisor" and h.vswitch != vm.vswitch
              and p.nodes[h.vswitch] == p.nodes[vm.vswitch])
    (move,) = move_commands(plan, moved_plan(plan, vm.name, to), vm.name)
    assert server_for(move, p) == p.nodes[vm.vswitch]
    assert server_for(["ovs-appctl", "rstp/show", "vcs0"], p) is None
