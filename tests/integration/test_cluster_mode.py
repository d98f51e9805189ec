"""Cluster mode, with the pieces that run on one machine (no sshd here, none started):

- `servers=["localhost"]`: the default cluster built through Mininet's cluster edition
  (`MininetCluster`, `RemoteHost`, `RemoteOVSSwitch`), full reachability and isolation;
- two servers on one machine: the placement splits the default cluster over `localhost` and a
  twin, and every cable between them is a VXLAN tunnel as on two machines. The twin's commands
  run here (not over ssh) and each server's tunnel ends are made in a namespace of its own that
  stands for its underlay network, then moved beside the bridges (a VXLAN device keeps its
  socket in the namespace it was made in), so the two ends of a tunnel do not share one UDP
  socket. Underlay traffic stays between those two namespaces.

Names: prefix `vcw` (bridges vcws0, ...; underlay namespaces vcwul / vcwut).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"
PREFIX = "vcw"


def _ovs_running() -> bool:
    return shutil.which("ovs-vsctl") is not None and subprocess.run(
        ["ovs-vsctl", "--timeout=3", "show"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not _ovs_running(), reason="Open vSwitch is not running"),
]

mininet = pytest.importorskip("mininet")

from vclab.lab.clean import leftovers  # noqa: E402
from vclab.lab.procs import alive  # noqa: E402
from vclab.lab.lab import Lab  # noqa: E402
from vclab.topology.loader import load_cluster  # noqa: E402
from vclab.lab.placement import TUNNEL_MTU, TunnelEnd, tunnel_commands  # noqa: E402


def full_matrix(lab) -> int:
    """Pairs checked; fails on any unreachable pair."""
    matrices = lab.reachability()
    failed = [(n, pair) for n, m in matrices.items() for pair, ok in m.items() if not ok]
    assert not failed, failed
    return sum(len(m) for m in matrices.values())


def test_localhost_builds_through_mininets_cluster_edition(tmp_path):
    from mininet.examples.cluster import MininetCluster, RemoteHost, RemoteOVSSwitch

    lab = Lab(load_cluster(DEFAULT), prefix=PREFIX, state_dir=tmp_path, servers=["localhost"])
    with lab:
        assert isinstance(lab.net, MininetCluster)
        assert all(isinstance(h, RemoteHost) and h.server == "localhost" for h in lab.net.hosts)
        assert all(isinstance(s, RemoteOVSSwitch) for s in lab.net.switches)
        assert lab.placement.tunnels == ()
        pairs = full_matrix(lab)
        assert not any(reached for _, _, reached in lab.isolation())
        print(f"\nlocalhost cluster mode: built in {lab.build_seconds:.2f} s, {pairs} pairs reach")
    assert leftovers(lab.plan) == []
    assert not any(alive(t.pid, t.started) for t in lab.tracker.tracked)


def tcp_bits_per_second(lab, src: str, dst: str, network: str, seconds: int = 2) -> float:
    """iperf3 TCP from src to dst over `network`, received bits/s."""
    import json
    import time

    ip = lab.plan.host(dst).interface(network).ip
    server = lab.node(dst).popen(["iperf3", "-s", "-1", "-B", ip], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        client = lab.node(src).popen(["iperf3", "-c", ip, "-t", str(seconds), "-J"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, _ = client.communicate(timeout=seconds + 30)
        lab.tracker.end(client.pid)
        return json.loads(out)["end"]["sum_received"]["bits_per_second"]
    finally:
        lab.tracker.end(server.pid)


UNDERLAY = {"localhost": ("vcwul", "192.168.250.1"), "vcwtwin": ("vcwut", "192.168.250.2")}


class TwinLab(Lab):
    """Two servers on this machine: the twin's commands run here instead of over ssh, and
    each server's tunnel ends are made in its underlay namespace."""

    def _server(self, args, server):
        return None  # every server is this machine

    def _node_params(self, name):
        params = super()._node_params(name)
        params["server"] = "localhost"  # Mininet would ssh to any other name
        return params

    def _make_tunnel_end(self, end: TunnelEnd, vni: int) -> None:
        ns = UNDERLAY[end.server][0]
        add, up = tunnel_commands(end, vni)
        self.sh(["ip", "-n", ns, *add[1:]])
        self.sh(["ip", "-n", ns, "link", "set", end.ifname, "netns", "1"])
        self.sh(up)


@pytest.fixture
def underlay():
    """Two namespaces joined by a veth: the servers' network that the tunnels cross."""
    (a, ip_a), (b, ip_b) = UNDERLAY.values()
    subprocess.run(["ip", "netns", "add", a], check=True)
    try:
        subprocess.run(["ip", "netns", "add", b], check=True)
        for cmd in (["ip", "link", "add", "vcwu0", "netns", a, "type", "veth", "peer", "name",
                     "vcwu1", "netns", b],
                    ["ip", "-n", a, "addr", "add", f"{ip_a}/30", "dev", "vcwu0"],
                    ["ip", "-n", b, "addr", "add", f"{ip_b}/30", "dev", "vcwu1"],
                    ["ip", "-n", a, "link", "set", "vcwu0", "up"],
                    ["ip", "-n", b, "link", "set", "vcwu1", "up"]):
            subprocess.run(cmd, check=True)
        yield f"localhost={ip_a},vcwtwin={ip_b}"
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_two_servers_joined_by_vxlan_tunnels(tmp_path, underlay):
    lab = TwinLab(load_cluster(DEFAULT), prefix=PREFIX, state_dir=tmp_path, servers=underlay)
    with lab:
        p = lab.placement
        assert set(p.load()) == {"localhost", "vcwtwin"} and min(p.load().values()) >= 5
        assert p.nodes[lab.plan.bridge("tor-a").name] != p.nodes[lab.plan.bridge("tor-b").name]
        kinds = {t.cable: lab.sh(["ip", "-d", "link", "show", t.a.ifname]) for t in p.tunnels}
        assert len(kinds) >= 5 and all("vxlan id" in k for k in kinds.values())
        # RSTP runs over the tunnels: the two inter-switch cables cross, one forwards
        rstp = lab.sh(["ovs-appctl", "rstp/show", lab.plan.bridge("tor-b").name])
        assert "Root" in rstp and ("Alternate" in rstp or "Backup" in rstp)
        pairs = full_matrix(lab)
        assert not any(reached for _, _, reached in lab.isolation())
        # the hosts' MTU is what the tunnel carries: a full 1450-byte frame crosses, not more
        esx2 = lab.plan.host("esx2").interface("vmotion").ip
        fits = ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", str(TUNNEL_MTU - 28), esx2]
        too_big = [*fits[:-2], str(TUNNEL_MTU - 27), esx2]
        assert lab.node("esx1").popen(fits).wait() == 0
        assert lab.node("esx1").popen(too_big, stderr=subprocess.DEVNULL).wait() != 0
        # TCP across the tunnel: web1 (esx1) and web2 (esx2) are on different servers
        assert p.nodes["web1"] != p.nodes["web2"]
        bps = tcp_bits_per_second(lab, "web1", "web2", "vm-web")
        crossing = [t.cable for t in p.tunnels]
        print(f"\ntwo servers: built in {lab.build_seconds:.2f} s (RSTP settled in "
              f"{lab.converge_seconds:.2f} s), {len(crossing)} cables as VXLAN tunnels, "
              f"{pairs} pairs reach, TCP web1 -> web2 {bps / 1e6:.0f} Mbit/s; "
              + "; ".join(f"{k} {v} nodes" for k, v in p.load().items()))
        assert bps > 20e6  # it flows (the userspace datapath on 2 busy cores varies a lot)
    assert leftovers(lab.plan) == []
