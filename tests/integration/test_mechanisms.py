"""Every redundancy mechanism on the shipped redundant topology, for real (root, OVS).

For each: the fabric converges, every network reaches fully, there is no broadcast storm (the
physical ports' receive counters grow slowly with no traffic: BPDUs, BFD, LACP only), a cable
down stops one path and traffic resumes on the other, and once it is back up the fabric
settles again and every network reaches fully. Labs are named `vcf...` (this file's prefix).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from vclab.experiments.runner import cluster_for
from vclab.experiments.spec import MechanismChoice
from vclab.lab.lab import Lab
from vclab.topology.loader import load_cluster

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"
SINGLE = ROOT / "topologies" / "single-switch.yaml"
LAG = ROOT / "topologies" / "isl-lag.yaml"
PREFIX = "vcf"
ISL = "tor-a/tor-b#1"  # carries esx1 -> array1 on storage-b (esx1 prefers tor-a, the portal is on tor-b)
NIC = "esx1.vmnic0"
STORM_PPS = 300  # per port, idle: BPDUs ~1/s, BFD 20/s at 50 ms, LACP fast 1/s; a storm is 10^4+

CASES = [  # id, topology, mechanism, team, cable to fail, seconds traffic may take to resume
    pytest.param("rstp", DEFAULT, "rstp", None, ISL, 5.0, id="rstp"),
    pytest.param("sdn", DEFAULT, "sdn", None, ISL, 5.0, id="sdn"),
    pytest.param("rstp+active-backup", DEFAULT, "rstp", "active-backup", NIC, 5.0,
                 id="rstp+active-backup"),
    pytest.param("rstp+balance-slb", DEFAULT, "rstp", "balance-slb", NIC, 5.0,
                 id="rstp+balance-slb"),
    pytest.param("rstp+lacp", SINGLE, "rstp", "lacp", NIC, 5.0, id="rstp+lacp"),
    pytest.param("rstp+isl-lag", LAG, "rstp", None, ISL, 5.0, id="rstp+isl-lag"),
    pytest.param("linux-stp", DEFAULT, "linux-stp", None, ISL, 20.0, id="linux-stp",
                 marks=pytest.mark.slow),
    pytest.param("stp", DEFAULT, "stp", None, ISL, 20.0, id="stp", marks=pytest.mark.slow),
]


@pytest.fixture(autouse=True)
def _needs_root_and_ovs():
    if os.geteuid() != 0 or not shutil.which("ovs-vsctl") or subprocess.run(
            ["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode:
        pytest.skip("needs root and a running Open vSwitch")


def physical_ports(lab: Lab) -> list[str]:
    return [p.name for b in lab.plan.physical for p in b.ports]


def rx_packets(names: list[str]) -> dict[str, int]:
    return {n: int(Path(f"/sys/class/net/{n}/statistics/rx_packets").read_text()) for n in names}


def wait_converged(lab: Lab, timeout: float) -> float:
    started = time.monotonic()
    settled = 0
    while time.monotonic() - started < timeout:
        settled = settled + 1 if lab.mechanism.converged(lab)[0] else 0
        if settled >= 2:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{lab.mechanism.name} did not settle again: {lab.mechanism.converged(lab)[1]}")


def resume_seconds(lab: Lab, timeout: float) -> float | None:
    """Seconds until esx1 reaches array1 on storage-b again (one 50 ms-spaced ping at a time)."""
    target = lab.plan.host("array1").interface("storage-b").ip
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if lab.host_sh("esx1", ["ping", "-n", "-q", "-c", "1", "-W", "0.2", target],
                       check=False).find(" 1 received") >= 0:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def failures(lab: Lab) -> list:
    return [(n, pair) for n, m in lab.reachability().items() for pair, ok in m.items() if not ok]


@pytest.mark.parametrize("name,topology,mechanism,team,cable,resume", CASES)
def test_mechanism(name, topology, mechanism, team, cable, resume, tmp_path):
    cluster = cluster_for(load_cluster(topology), MechanismChoice(fabric=mechanism, team=team))
    with Lab(cluster, mechanism=mechanism, prefix=PREFIX, state_dir=tmp_path / "state",
             workdir=tmp_path) as lab:
        print(f"\n{name}: built in {lab.build_seconds:.1f} s, settled in "
              f"{lab.converge_seconds:.1f} s (load {os.getloadavg()[0]:.1f})")
        assert failures(lab) == []

        ports = physical_ports(lab)
        before = rx_packets(ports)
        time.sleep(2.0)
        rate = {n: (v - before[n]) / 2.0 for n, v in rx_packets(ports).items()}
        busiest = max(rate, key=rate.get)
        print(f"idle receive rate: busiest port {busiest} {rate[busiest]:.0f} packets/s")
        assert rate[busiest] < STORM_PPS, "a loop: frames keep circling with no traffic"

        ends = lab.plan.veths
        a, b = next((v.a.ifname, v.b.ifname) for v in ends if v.name == cable)
        try:
            for end in (a, b):
                lab.sh(["ip", "link", "set", "dev", end, "down"])
            took = resume_seconds(lab, resume + 5)
            print(f"{cable} down: esx1 -> array1 (storage-b) back after "
                  f"{'never' if took is None else f'{took * 1000:.0f} ms'}")
            assert took is not None and took < resume
        finally:
            for end in (a, b):
                lab.sh(["ip", "link", "set", "dev", end, "up"], check=False)
        if mechanism in ("stp", "linux-stp"):
            # The restored cable's first BPDUs (1 s hello) start listening and learning on it;
            # before they arrive every port still looks settled.
            time.sleep(2.5)
        settled = wait_converged(lab, lab.mechanism.timeout or 30.0)
        print(f"{cable} up: settled again in {settled:.1f} s")
        # Linux STP keeps a MAC learned on the port that is now blocking until it ages out
        # (forward delay during the topology change): whole again, but not at once.
        started = time.monotonic()
        missing = failures(lab)
        while missing and time.monotonic() - started < resume:
            time.sleep(1.0)
            missing = failures(lab)
        print(f"whole again {time.monotonic() - started:.1f} s after settling")
        assert missing == [], f"not whole again after {cable} came back: {missing}"


def test_sdn_controller_kill_and_restart_keeps_forwarding(tmp_path):
    with Lab(load_cluster(DEFAULT), mechanism="sdn", prefix=PREFIX,
             state_dir=tmp_path / "state", workdir=tmp_path) as lab:
        lab.controller_action("kill")
        assert not lab.mechanism.controller_alive(lab)
        assert resume_seconds(lab, 5.0) is not None, "switches forward on their rules alone"
        lab.controller_action("restart")
        settled = wait_converged(lab, 20.0)
        log = (tmp_path / "controller.log").read_text()
        print(f"\ncontroller restarted, fabric resynced in {settled:.1f} s")
        assert log.count("switch tor-a (dpid") >= 2
        assert failures(lab) == []


def test_sdn_silent_nic_is_left_by_the_team(tmp_path):
    """A server NIC that drops everything while its carrier stays up: BFD on both ends of the
    cable (the server's vswitch and the switch port) takes it out of the team and out of the
    groups, in ~3 x 50 ms, where a carrier-watching team would never leave it."""
    from vclab.experiments.faults import restore_commands, run_commands, silent_commands, \
        sink_commands, sink_name

    from vclab.fabric.sdn import Sdn

    with Lab(load_cluster(DEFAULT), mechanism=Sdn(bfd_nics=True), prefix=PREFIX,
             state_dir=tmp_path / "state", workdir=tmp_path) as lab:
        a, b = next((v.a.ifname, v.b.ifname) for v in lab.plan.veths if v.name == NIC)
        sink = sink_name(PREFIX)
        run_commands(sink_commands(sink))
        try:
            run_commands([c for end in (a, b) for c in silent_commands(end, sink)])
            took = resume_seconds(lab, 5.0)
            print(f"\n{NIC} silent: esx1 -> array1 (storage-b) back after "
                  f"{'never' if took is None else f'{took * 1000:.0f} ms'} "
                  f"(load {os.getloadavg()[0]:.1f})")
            assert took is not None and took < 2.0
        finally:
            run_commands([c for end in (a, b) for c in restore_commands(end)], check=False)
            run_commands([["ip", "link", "del", sink]], check=False)
        wait_converged(lab, 30.0)
        started = time.monotonic()
        missing = failures(lab)
        while missing and time.monotonic() - started < 10.0:  # a BFD false alarm on a busy host
            time.sleep(1.0)
            missing = failures(lab)
        assert missing == [], "whole again once the NIC works"


def test_isl_lag_moves_the_flow_inside_the_datapath(tmp_path):
    """The two inter-switch cables as one LACP LAG under RSTP: the cable carrying esx1 ->
    array1 goes down and the bond's own member table moves the flow (lb-output-action), with
    no spanning-tree change or revalidation round (RSTP alone: 4-8 ms on this datapath)."""
    from vclab.lab.ioctl import link_updown
    from vclab.workloads.probe.workload import Endpoint, Probe

    with Lab(load_cluster(LAG), mechanism="rstp", prefix=PREFIX, state_dir=tmp_path / "state",
             workdir=tmp_path) as lab:
        for switch in ("tor-a", "tor-b"):
            bond = next(b for b in lab.plan.bridge(switch).bonds if b.role == "isl")
            shown = lab.sh(["ovs-appctl", "bond/show", bond.name])
            assert "bond_mode: balance-tcp" in shown and "lb_output action: enabled" in shown
        cables = [v for v in lab.plan.veths if v.name.startswith("tor-a/tor-b#")]

        def sent() -> dict[str, int]:
            return {v.name: sum(int(Path(f"/sys/class/net/{e.ifname}/statistics/tx_packets")
                                    .read_text()) for e in (v.a, v.b)) for v in cables}

        def ip(host: str) -> str:
            return lab.plan.host(host).interface("storage-b").ip

        probe = Probe(Endpoint(lab.node("esx1"), ip("esx1")),
                      Endpoint(lab.node("array1"), ip("array1")), lab.tracker,
                      workdir=tmp_path / "probe")
        probe.check()
        try:
            probe.start()
            time.sleep(1.0)
            before = sent()
            time.sleep(0.5)
            after = sent()
            carrying = max(cables, key=lambda v: after[v.name] - before[v.name])
            fault_ns = time.time_ns()
            for end in (carrying.a, carrying.b):
                link_updown(end.ifname, False)
            time.sleep(1.0)
            for end in (carrying.a, carrying.b):
                link_updown(end.ifname, True)
            time.sleep(1.0)
            probe.stop()
            result = Probe.parse(probe.collect(), fault_ns)
        finally:
            probe.stop()
        print(f"\n{carrying.name} (the probe's cable) down: outage {result['fault_outage_ms']:.1f} ms"
              f" (frames per cable in 0.5 s: { {k: after[k] - before[k] for k in after} })")
        assert after[carrying.name] - before[carrying.name] > 300  # it did carry the probe
        assert result["fault_outage_ms"] < 30.0
