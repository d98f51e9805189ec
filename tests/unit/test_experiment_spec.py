"""Experiment files: validated whole and against their cluster, errors naming file:line:field."""

from pathlib import Path

import pytest

from vclab.errors import ConfigError
from vclab.experiments.faults import expand_schedule, plan, single_failures
from vclab.experiments.loader import load_experiment
from vclab.experiments.spec import Fault

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(f"experiment: t\ntopology: {ROOT / 'topologies/default.yaml'}\n" + body)
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    return [str(p) for p in e.value.problems]


REFUSED = {"missing-vmotion.yaml"}  # shipped to show the refusal


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "experiments").glob("*.yaml") if p.name not in REFUSED))
def test_shipped_experiments_load(path):
    loaded = load_experiment(path)
    assert loaded.experiment.mechanisms


def test_migration_to_a_host_without_vmotion_is_refused_with_the_reason():
    path = ROOT / "experiments" / "missing-vmotion.yaml"
    (msg,) = problems(path)
    assert msg.startswith(f"{path}:10:25: workloads.0.vmotion.to: web1 cannot migrate to esx3: "
                          "the destination esx3 is not on the vMotion network")


def test_unknown_mechanism_lists_allowed(tmp_path):
    p = write(tmp_path, "mechanisms: [sdn, rsttp]\n")
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:3:19: mechanisms.1:")
    assert "'rstp'" in msg and "'sdn'" in msg


def test_references_checked_against_cluster(tmp_path):
    p = write(tmp_path, "mechanisms: [rstp]\nworkloads:\n"
                        "  - probe: {from: esx1, to: web1, network: vmotion}\n"
                        "  - vmotion: {vm: web9, to: esx2}\n"
                        "faults:\n  - {at: 1s, link: esx1.vmnic7, action: down}\n")
    msgs = problems(p)
    assert msgs[0].startswith(f"{p}:5:25: workloads.0.probe.to: 'web1' is not on network 'vmotion'")
    assert msgs[1].startswith(f"{p}:6:15: workloads.1.vmotion.vm: unknown VM 'web9'")
    assert msgs[2].startswith(f"{p}:8:14: faults.0.link: unknown link 'esx1.vmnic7'")


def test_fault_needs_one_target_and_a_fitting_action(tmp_path):
    p = write(tmp_path, "mechanisms: [rstp]\nfaults:\n"
                        "  - {at: 1s, link: tor-a/tor-b#1, action: fail}\n"
                        "  - {at: 1s, switch: tor-a, link: tor-a/tor-b#1, action: fail}\n")
    msgs = problems(p)
    assert msgs[0].startswith(f"{p}:5:5: faults.0: a link fault's action is one of down")
    assert msgs[1].startswith(f"{p}:6:5: faults.1: a fault names exactly one of")


def test_missing_cluster_file_named(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("experiment: t\ntopology: nowhere.yaml\nmechanisms: [rstp]\n")
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:2:1: topology: no cluster file at")


class FakeCabling:
    def link_ends(self, link):
        return (f"{link}-a", f"{link}-b")

    def switch_links(self, switch):
        return ["l1", "l2"]

    def management_links(self, host):
        return ["m1"]


def test_link_down_takes_both_ends_down_and_undoes():
    apply, undo = plan(Fault(at=0, link="l1", action="down"), FakeCabling())
    assert apply == [["ip", "link", "set", "dev", "l1-a", "down"], ["ip", "link", "set", "dev", "l1-b", "down"]]
    assert undo == [["ip", "link", "set", "dev", "l1-a", "up"], ["ip", "link", "set", "dev", "l1-b", "up"]]


def test_silent_one_way_drops_at_one_end_only():
    apply, undo = plan(Fault(at=0, link="l1", action="silent", direction="forward"), FakeCabling())
    assert {c[4] for c in apply} == {"l1-a"}
    assert any("mirred" in c for c in apply)
    assert undo == [["tc", "qdisc", "del", "dev", "l1-a", "clsact"]]


def test_switch_failure_cuts_every_cable():
    apply, _ = plan(Fault(at=0, switch="s", action="fail"), FakeCabling())
    assert [c[4] for c in apply] == ["l1-a", "l1-b", "l2-a", "l2-b"]


class SharedCarrier(FakeCabling):
    carrier_shared = True  # one veth pair per cable: closing one end drops both carriers

    def end_on(self, link, switch):
        return f"{link}-b"


def test_with_shared_carrier_a_cut_closes_one_end_and_a_dead_switch_its_own():
    """One close per cable: both carriers go at its end, and the fault is one close long."""
    apply, undo = plan(Fault(at=0, link="l1", action="down"), SharedCarrier())
    assert apply == [["ip", "link", "set", "dev", "l1-a", "down"]]
    assert apply[0].peer == "l1-b"  # asked for its carrier at once: its loss is published now
    assert undo == [["ip", "link", "set", "dev", "l1-a", "up"], ["ip", "link", "set", "dev", "l1-b", "up"]]
    apply, undo = plan(Fault(at=0, switch="s", action="fail"), SharedCarrier())
    assert [c[4] for c in apply] == ["l1-b", "l2-b"] and [c.peer for c in apply] == ["l1-a", "l2-a"]
    assert [c[4] for c in undo] == ["l1-a", "l1-b", "l2-a", "l2-b"]


def test_a_built_plans_switch_end_is_the_switchs():
    from vclab.experiments.cabling import PlanCabling
    from vclab.topology.loader import load_cluster
    from vclab.topology.plan import build_plan

    plan_ = build_plan(load_cluster(ROOT / "topologies/default.yaml"))
    cabling = PlanCabling(plan_)
    assert cabling.carrier_shared is False  # a bare plan does not say how it was built
    tor_a = plan_.bridge("tor-a").name
    for link in cabling.switch_links("tor-a"):
        end = cabling.end_on(link, "tor-a")
        assert end in cabling.link_ends(link) and end.startswith(tor_a)


def test_flap_and_sweep_expand(tmp_path):
    p = write(tmp_path, "mechanisms: [rstp]\nduration: 60s\nfaults:\n"
                        "  - {at: 1s, link: tor-a/tor-b#1, action: flap, period: 200ms, count: 3}\n"
                        "  - {sweep: single-failures, at: 10s, hold: 1s}\n")
    loaded = load_experiment(p)
    flat = expand_schedule(loaded.experiment, loaded.cluster)
    flaps = [f for f in flat if f.at < 10_000]
    assert [(f.at, f.action) for f in flaps] == [(1000, "down"), (1100, "up"), (1200, "down"),
                                                  (1300, "up"), (1400, "down"), (1500, "up")]
    sweep = [f for f in flat if f.at >= 10_000]
    assert len(sweep) == 2 * len(single_failures(loaded.cluster))
    # 2 switches, 2 links, 8 server NICs, 2 portals in the default cluster
    assert len(single_failures(loaded.cluster)) == 14


def test_mechanisms_checked_on_the_cluster_they_would_run(tmp_path):
    p = write(tmp_path, "mechanisms: [none, {fabric: rstp, team: lacp}, sdn]\n")
    msgs = problems(p)
    assert msgs[0].startswith(f"{p}:3:14: mechanisms.0: none: mechanism 'none' would leave the loop")
    assert msgs[1].startswith(f"{p}:3:20: mechanisms.1: rstp+lacp: hypervisors.esx1.team.mode: "
                              "LACP across independent switches needs MLAG")
    assert not any("mechanisms.2" in m for m in msgs)  # sdn with active-backup teams is fine


def test_bfd_nics_is_an_sdn_option(tmp_path):
    p = write(tmp_path, "mechanisms: [{fabric: rstp, bfd_nics: true}]\n")
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:3:14: mechanisms.0:") and "bfd_nics is the sdn controller's" in msg
    p = write(tmp_path, "mechanisms: [sdn, {fabric: sdn, bfd_nics: true}]\n")
    plain, with_bfd = load_experiment(p).experiment.mechanisms
    assert (plain.label, with_bfd.label) == ("sdn", "sdn+bfd-nics")
    assert not plain.mechanism().bfd_nics and with_bfd.mechanism().bfd_nics


def test_vclab_check_validates_an_experiment_without_building(tmp_path):
    from typer.testing import CliRunner

    from vclab.cli import app

    ok = CliRunner().invoke(app, ["check", str(ROOT / "experiments" / "default.yaml")])
    assert ok.exit_code == 0 and "experiment 'uplink-and-switch-failure' is valid" in ok.output
    refused = CliRunner().invoke(app, ["check", str(ROOT / "experiments" / "missing-vmotion.yaml")])
    assert refused.exit_code == 2 and "web1 cannot migrate to esx3" in refused.output
