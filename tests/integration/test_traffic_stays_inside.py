"""Traffic stays inside: no vclab process sends to an address outside the lab's namespaces or
loopback, during a real `vclab run` (every kind of workload, link and silent faults, the sdn
controller) and a real `vclab up` (reachability and isolation pings).

The real CLI runs under `strace -f -y --seccomp-bpf`: every process it starts is followed, and
every connect/sendto/sendmsg/sendmmsg destination is read with the network namespace its
sender was in (tests/rigs/egress.py). Each must be loopback, or a cluster subnet sent from inside a
namespace. While it runs, every namespace under it is looked into: none has a default route
(in any routing table), and every IPv4 route of its main table stays inside the cluster's
subnets.

Root only. Lab prefix `vcy` and a state directory of its own.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rigs.egress import ROOT, STRACE_SYSCALLS, exposed, leaks, parse_trace
from vclab.topology.loader import load_cluster
from vclab.topology.plan import build_plan

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "topologies" / "default.yaml"
PREFIX = "vcy"
VCLAB = str(Path(sys.executable).with_name("vclab"))
ROOT_NS = os.readlink("/proc/self/ns/net")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed"),
    pytest.mark.skipif(shutil.which("ovs-vsctl") is None or subprocess.run(
        ["ovs-vsctl", "--timeout=3", "show"], capture_output=True).returncode != 0,
        reason="Open vSwitch is not running"),
]

# Every workload kind, a cable failure and a silent loss on the default cluster (its VMs made
# small, so the vMotion is over in seconds); probes every 10 ms rather than 1 ms, since each
# send stops the sender for strace (at 1 ms the iSCSI login starves and times out).
EXPERIMENT = """
experiment: traffic-inside
topology: cluster.yaml
mechanisms: [sdn]
repetitions: 1
warmup: 1s
duration: 6s
workloads:
  - probe: {from: esx1, to: esx2, network: vmotion, every: 10ms}
  - probe: {from: esx1, to: array1, network: storage-b, every: 10ms}
  - probe: {from: esx2, to: vcenter, network: management, every: 10ms}
  - probe: {from: web1, to: web2, network: vm-web, every: 10ms}
  - heartbeats: {isolation_address: vcenter}
  - vmotion: {vm: web1, to: esx3, at: 1500ms}
  - iscsi: {hosts: [esx1, esx2], lun: datastore1, pattern: random-4k, mix: 70/30}
  - iperf3: {from: esx3, to: esx2, network: vm-web, rate: 50Mbit}
faults:
  - {at: 3s, link: esx1.vmnic0, action: down}
  - {at: 4s, link: esx1.vmnic0, action: up}
  - {at: 4500ms, link: tor-a/tor-b#1, action: silent}
  - {at: 5s, link: tor-a/tor-b#1, action: restore}
"""


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = collections.defaultdict(list)
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                raw = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            out[int(raw[raw.rindex(")") + 2:].split()[1])].append(int(name))
    return out


def _descendants(root: int) -> list[int]:
    children, found, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class NamespaceWatch(threading.Thread):
    """Every second, each network namespace a process under `root` is in (other than the
    root one): its default routes (any table, IPv4 and IPv6) and its main-table IPv4 routes."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.defaults: dict[str, set[str]] = collections.defaultdict(set)
        self.routes: dict[str, set[str]] = collections.defaultdict(set)
        self.looks = 0

    @staticmethod
    def _ip(pid: int, *args: str) -> list[dict]:
        p = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-j", *args],
                           capture_output=True, text=True)
        return json.loads(p.stdout or "[]") if p.returncode == 0 else []

    def run(self) -> None:
        while not self.stop.wait(1.0):
            seen: dict[str, int] = {}
            for pid in _descendants(self.root):
                try:
                    ns = os.readlink(f"/proc/{pid}/ns/net")
                except OSError:
                    continue
                if ns != ROOT_NS:
                    seen.setdefault(ns, pid)
            for ns, pid in seen.items():
                for family in ("-4", "-6"):
                    for r in self._ip(pid, family, "route", "show", "table", "all"):
                        if r.get("dst") == "default":
                            self.defaults[ns].add(f"{family} {r}")
                for r in self._ip(pid, "-4", "route", "show", "table", "main"):
                    self.routes[ns].add(r.get("dst", "?"))
                self.looks += 1


def traced(tmp_path: Path, name: str, args: list[str], timeout: float):
    """Run the real CLI under strace; returns (process, sends, binds, namespace watch)."""
    trace = tmp_path / f"{name}.strace"
    env = {**os.environ, "VCLAB_STATE_DIR": str(tmp_path / "state")}
    started = time.monotonic()
    with (tmp_path / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(["strace", "-f", "-y", "--seccomp-bpf", "-e",
                                 f"trace={STRACE_SYSCALLS}", "-o", str(trace), VCLAB, *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        watch = NamespaceWatch(proc.pid)
        watch.start()
        try:
            proc.wait(timeout)
        finally:
            watch.stop.set()
            watch.join()
            if proc.poll() is None:  # too slow: Ctrl-C vclab (strace's child), then strace
                for pid in _children().get(proc.pid, []):
                    os.kill(pid, signal.SIGINT)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                subprocess.run([VCLAB, "clean", "--prefix", PREFIX], env=env, capture_output=True)
    sends, binds = parse_trace(trace.read_text(errors="replace"), ROOT_NS)
    print(f"\n{name}: {time.monotonic() - started:.0f} s under strace, exit {proc.returncode}, "
          f"{trace.stat().st_size / 1e6:.0f} MB of trace")
    return proc, (tmp_path / f"{name}.log").read_text(), sends, binds, watch


def check_inside(name: str, sends, binds, watch, hosts: int, subnets: list[str]) -> None:
    by_ns = collections.Counter(s.netns for s in sends)
    loopback = sum(1 for s in sends if s.family != "packet" and ipaddress.ip_address(s.address).is_loopback)
    destinations = sorted({s.address for s in sends}, key=lambda a: (len(a), a))
    print(f"{name}: {len(sends)} sends to {len(destinations)} destinations from {len(by_ns)} "
          f"namespaces ({by_ns.get(ROOT, 0)} from the root one, {loopback} to loopback); "
          f"{len(binds)} binds; {len(watch.routes)} namespaces looked into {watch.looks} times")
    print(f"  destinations: {', '.join(destinations)}")
    bad = leaks(sends, subnets, lab_links=PREFIX)
    assert not bad, "\n".join(f"{s}: {why}" for s, why in bad[:30])
    assert exposed(binds) == [], [str(b) for b in exposed(binds)]
    # Every host namespace was seen, none with a default route, none routing beyond the lab.
    assert len(watch.routes) == hosts, sorted(watch.routes)
    assert not any(watch.defaults.values()), dict(watch.defaults)
    nets = [ipaddress.ip_network(s) for s in subnets]
    for ns, dsts in watch.routes.items():
        outside = [d for d in dsts if not any(ipaddress.ip_network(d).subnet_of(n) for n in nets)]
        assert not outside, f"{ns} routes {outside}"
    # A real measurement: every host sent, from its own namespace.
    assert len([ns for ns in by_ns if ns != ROOT]) == hosts, by_ns


@pytest.fixture(scope="module")
def lab_plan():
    plan = build_plan(load_cluster(TOPOLOGY), PREFIX)
    return plan, [str(n.subnet) for n in plan.networks.values()], len(plan.hosts)


def test_run_sends_only_inside_the_lab(tmp_path, lab_plan):
    plan, subnets, hosts = lab_plan
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPERIMENT)
    (tmp_path / "cluster.yaml").write_text(TOPOLOGY.read_text().replace("memory: 256MiB", "memory: 32MiB"))
    proc, log, sends, binds, watch = traced(
        tmp_path, "run", ["run", str(exp), "--results", str(tmp_path / "res"), "--prefix", PREFIX,
                          "--no-report"], timeout=240)
    assert proc.returncode == 0, log[-3000:]
    assert "1 repetitions ok, 0 failed" in log, log[-3000:]
    check_inside("vclab run", sends, binds, watch, hosts, subnets)
    ports = {(s.syscall, s.port) for s in sends}
    # the iSCSI initiators logged in to both portals, iperf3 and the vMotion stream connected
    assert ("connect", 3260) in ports, sorted(ports)
    assert sum(1 for s in sends if s.syscall == "connect") >= 4


def test_up_sends_only_inside_the_lab(tmp_path, lab_plan):
    plan, subnets, hosts = lab_plan
    proc, log, sends, binds, watch = traced(
        tmp_path, "up", ["up", str(TOPOLOGY), "--prefix", PREFIX], timeout=180)
    assert proc.returncode == 0, log[-3000:]
    check_inside("vclab up", sends, binds, watch, hosts, subnets)
    # the reachability matrix pinged every member of every network from inside
    members = {ip for net in plan.networks.values() for _, ip in net.members}
    assert members <= {s.address for s in sends}, members - {s.address for s in sends}


def test_the_audit_sees_a_way_out(tmp_path):
    """The control: the same strace audit on a process that does what vclab must not. Nothing
    is sent: a UDP connect only picks a route, and the send to a documentation address is made
    from a fresh namespace with no route at all (ENETUNREACH)."""
    script = ("import socket, subprocess, sys\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('10.20.0.9', 9))\n"
              "subprocess.run(['unshare', '-n', sys.executable, '-c', "
              "\"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\\n"
              "try: s.sendto(b'x', ('192.0.2.1', 9))\\nexcept OSError: pass\"])\n")
    trace = tmp_path / "control.strace"
    subprocess.run(["strace", "-f", "-y", "--seccomp-bpf", "-e", f"trace={STRACE_SYSCALLS}",
                    "-o", str(trace), sys.executable, "-c", script], check=True, timeout=60)
    sends, _ = parse_trace(trace.read_text(), ROOT_NS)
    found = {(s.address, s.netns == ROOT, why) for s, why in leaks(sends, ["10.20.0.0/24"])}
    assert found == {("10.20.0.9", True, "a lab address, but sent from the root namespace"),
                     ("192.0.2.1", False, "outside the lab's subnets and loopback")}, found
