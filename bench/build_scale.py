"""Build and tear-down time of a cluster of N hypervisors: vclab against plain Mininet, same run.

    sudo .venv/bin/python bench/build_scale.py --quick          # N = 4, 8, one repetition
    sudo .venv/bin/python bench/build_scale.py                  # N = 4, 8, 16, 32, 64, two each
    sudo .venv/bin/python bench/build_scale.py --sizes 16 --profile   # where vclab's time goes

The cluster is generated in Python: 2 top-of-rack switches joined by two cables, N hypervisors
with two teamed NICs (one per switch), one storage array with a portal on each switch, one
management server, the default networks (topologies/default.yaml's). vclab builds it with
`Lab(cluster, prefix="vcb").start()` (its real path: Mininet hosts, every bridge with its VLANs,
bonds and RSTP in one ovs-vsctl transaction, addresses, then the wait until RSTP has converged,
shown apart) and `.stop()`. Plain Mininet builds the same graph from the same plan (prefix `vcz`:
the same bridges, veths and hosts; `OVSSwitch` on the same datapath, Mininet's default
fail_mode=secure with no controller, so the looped graph forwards nothing) with `Mininet(topo)`,
`start()` and `stop()`: no VLANs, bonds, loop protection or addresses beyond Mininet's own.

Per N: times (median over the repetitions), `vclab/mininet <ratio>` of build + tear-down with
and without the convergence wait, and memory per hypervisor (MemAvailable drop while the
cluster is up, PSS of the node shells, ovs-vswitchd RSS growth, each divided by N; the RSS is a
high-water mark, so the side built second in a repetition only shows growth beyond the first's
peak, and MemAvailable moves with everything else on the machine). Last, a straight-line fit of
time against N (per-hypervisor slope, R^2): linear means a flat ms/hv column and R^2 near 1.
The convergence wait is RSTP on the second inter-switch cable: every port is point-to-point (OVS's
default) or an edge port, so the rest settles in tens of ms, but OVS's alternate ports never send
the agreement a designated port's proposal asks for (rstp-state-machines.c, ALTERNATE_PORT,
compares fdWhile with forwardDelay(), which is the hello time under RSTP, instead of FwdDelay),
so the designated end of that cable forwards only when its edge-detection delay (3 s) runs out.
Whether it gets that far depends on the order OVS brings the ports up: 0.1 s or ~3 s at any N,
hidden behind the rest of the build from N = 32 on, so it dominates small N.

Every process either side starts is tracked and ended by PID; everything is removed in
`finally`, by the exact names the plans list (Mininet's cleanup is never called). Needs root
and Open vSwitch.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mininet.link import Link  # noqa: E402
from mininet.log import setLogLevel  # noqa: E402
from mininet.net import Mininet  # noqa: E402
from mininet.node import Host, OVSSwitch  # noqa: E402
from mininet.topo import Topo  # noqa: E402

from vclab.lab.procs import ProcessTracker  # noqa: E402
from vclab.lab.lab import Lab  # noqa: E402
from vclab.topology.loader import load_cluster  # noqa: E402
from vclab.topology.plan import BuildPlan, build_plan  # noqa: E402
from vclab.topology.spec import Cluster, semantic_problems  # noqa: E402

LAB_PREFIX = "vcb"
PLAIN_PREFIX = "vcz"
QUICK_SIZES = (4, 8)
FULL_SIZES = (4, 8, 16, 32, 64)
TARGET = 1.2


def cluster_of(n: int) -> Cluster:
    """2 ToR switches, n hypervisors with a 2-NIC team, 1 array, 1 management server."""
    networks = load_cluster(ROOT / "topologies" / "default.yaml").networks
    every = list(networks)
    cluster = Cluster.model_validate({
        "cluster": f"scale{n}",
        "mechanism": "rstp",
        "networks": {name: net.model_dump(exclude_none=True) | {"subnet": str(net.subnet)}
                     for name, net in networks.items()},
        "switches": {"tor-a": {"priority": 4096}, "tor-b": {"priority": 8192}},
        "links": [["tor-a", "tor-b"], ["tor-a", "tor-b"]],
        "hypervisors": {f"esx{i}": {"nics": {"vmnic0": "tor-a", "vmnic1": "tor-b"},
                                    "team": {"mode": "active-backup"}, "networks": every}
                        for i in range(1, n + 1)},
        "storage": {"array1": {"portals": {"storage-a": "tor-a", "storage-b": "tor-b"},
                               "luns": {"datastore1": "256MiB"}}},
        "management": {"vcenter": {"nics": {"eth0": "tor-a", "eth1": "tor-b"},
                                   "networks": ["management"]}},
    })
    problems = semantic_problems(cluster)
    assert not problems, problems
    return cluster


# ---- measurements -----------------------------------------------------------------------------

def mem_available() -> int:
    """Bytes, from /proc/meminfo."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def ovs_rss() -> int:
    """ovs-vswitchd's resident set, in bytes (0 if it cannot be read)."""
    for pidfile in ("/run/openvswitch/ovs-vswitchd.pid", "/var/run/openvswitch/ovs-vswitchd.pid"):
        try:
            pid = Path(pidfile).read_text().strip()
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


def pss(pids: list[int]) -> int:
    """Proportional set size of these processes, in bytes (shared pages split fairly)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def present(plan: BuildPlan) -> list[str]:
    """The plan's bridges and root-namespace links that exist right now."""
    bridges = set(subprocess.run(["ovs-vsctl", "--timeout=10", "list-br"], capture_output=True,
                                 text=True).stdout.split())
    links = set(os.listdir("/sys/class/net"))
    return ([b.name for b in plan.bridges if b.name in bridges | links]
            + [n for n in plan.root_links() if n in links])


@dataclass
class Sample:
    build: float  # seconds, from start() until the cluster is ready (vclab: includes converge)
    teardown: float
    converge: float = 0.0  # vclab: the RSTP convergence wait, part of build
    mem: int = 0  # MemAvailable drop while up, bytes
    ovs: int = 0  # ovs-vswitchd RSS growth while up, bytes
    shells: int = 0  # PSS of the nodes' shells, bytes


# ---- vclab ------------------------------------------------------------------------------------

def run_vclab(cluster: Cluster, tag: str, profile: cProfile.Profile | None = None) -> Sample:
    lab = Lab(cluster, prefix=LAB_PREFIX, run_id=f"{LAB_PREFIX}-{tag}-{os.getpid()}")
    leftover = present(lab.plan)
    if leftover:
        raise SystemExit(f"{', '.join(leftover[:5])} already exist: not ours, not touched")
    mem0, ovs0 = mem_available(), ovs_rss()
    try:
        started = time.monotonic()
        if profile:
            profile.enable()
        try:
            lab.start()
        finally:
            if profile:
                profile.disable()
        build = time.monotonic() - started
        mem, ovs = mem0 - mem_available(), ovs_rss() - ovs0
        shells = pss([n.pid for n in (*lab.net.hosts, *lab.net.switches)])
        started = time.monotonic()
        lab.stop()
        teardown = time.monotonic() - started
    finally:
        lab.stop()  # a no-op after a clean stop
    left = present(lab.plan)
    if left:
        print(f"  vclab left {', '.join(left[:5])}", file=sys.stderr)
    return Sample(build, teardown, lab.converge_seconds, mem, ovs, shells)


# ---- plain Mininet ----------------------------------------------------------------------------

class _Tracked:
    """Records every process a node starts (its shell first), so it can be ended by PID."""

    def _popen(self, cmd, **params):
        popen = super()._popen(cmd, **params)
        self.params["tracker"].track(popen.pid, f"{self.name}: plain mininet")
        return popen


class PlainHost(_Tracked, Host):
    pass


class PlainSwitch(_Tracked, OVSSwitch):
    pass


class PlanTopo(Topo):
    """The plan's graph as a Mininet Topo: its hosts, bridges and veths, nothing else."""

    def build(self, plan: BuildPlan, tracker: ProcessTracker) -> None:
        ofport = {(p.bridge, p.name): p.ofport for b in plan.bridges for p in b.ports}
        for host in plan.hosts:
            self.addHost(host.name, tracker=tracker)
        for bridge in plan.bridges:
            self.addSwitch(bridge.name, dpid=bridge.dpid, tracker=tracker)
        for veth in plan.veths:
            self.addLink(veth.a.node, veth.b.node, intfName1=veth.a.ifname,
                         intfName2=veth.b.ifname, addr1=veth.a.mac, addr2=veth.b.mac,
                         port1=ofport.get((veth.a.node, veth.a.ifname)),
                         port2=ofport.get((veth.b.node, veth.b.ifname)))


def run_plain(cluster: Cluster, datapath: str, tag: str) -> Sample:
    plan = build_plan(cluster, PLAIN_PREFIX)
    leftover = present(plan)
    if leftover:
        raise SystemExit(f"{', '.join(leftover[:5])} already exist: not ours, not touched")
    tracker = ProcessTracker(f"{PLAIN_PREFIX}-{tag}-{os.getpid()}")
    topo = PlanTopo(plan=plan, tracker=tracker)
    switch = partial(PlainSwitch, datapath="user" if datapath == "netdev" else "kernel")
    net = None
    mem0, ovs0 = mem_available(), ovs_rss()
    try:
        started = time.monotonic()
        net = Mininet(topo=topo, switch=switch, host=PlainHost, link=Link, controller=None,
                      waitConnected=False, autoSetMacs=False)
        net.start()
        build = time.monotonic() - started
        mem, ovs = mem0 - mem_available(), ovs_rss() - ovs0
        shells = pss([n.pid for n in (*net.hosts, *net.switches)])
        started = time.monotonic()
        net.stop()
        teardown = time.monotonic() - started
        net = None
        return Sample(build, teardown, 0.0, mem, ovs, shells)
    finally:
        if net is not None:  # a failed build or stop: what is left goes by name and PID
            try:
                net.stop()
            except Exception as e:  # keep cleaning
                print(f"  plain mininet stop failed: {e}", file=sys.stderr)
        tracker.end_all(grace=1.0)
        left = present(plan)
        bridges = [b.name for b in plan.bridges if b.name in left]
        if bridges:
            subprocess.run(["ovs-vsctl", "--timeout=30", *[a for b in bridges for a in
                            ("--", "--if-exists", "del-br", b)]], capture_output=True)
        links = [n for n in present(plan) if n not in bridges]
        if links:
            subprocess.run(["ip", "-force", "-batch", "-"], capture_output=True, text=True,
                           input="".join(f"link del {n}\n" for n in links))
        if left:
            print(f"  plain mininet left {', '.join(left[:5])} (removed)", file=sys.stderr)


# ---- report -----------------------------------------------------------------------------------

def median(samples: list[Sample], key: str) -> float:
    return statistics.median(getattr(s, key) for s in samples)


def fit(ns: list[int], ts: list[float]) -> tuple[float, float, float]:
    """(intercept, slope per hypervisor, R^2) of a least-squares line."""
    if len(ns) < 2:
        return ts[0], 0.0, 1.0
    slope, intercept = statistics.linear_regression(ns, ts)
    mean = statistics.fmean(ts)
    total = sum((t - mean) ** 2 for t in ts) or 1e-12
    resid = sum((t - intercept - slope * n) ** 2 for n, t in zip(ns, ts))
    return intercept, slope, 1 - resid / total


def mib(value: float) -> str:
    return f"{value / 2**20:.1f}"


def report(results: dict[int, tuple[list[Sample], list[Sample]]], datapath: str) -> bool:
    ns = sorted(results)
    reps = len(results[ns[0]][0])
    print(f"\nseconds, median of {reps}, {datapath} datapath; ms/hv = build time per hypervisor")
    print(f"{'N':>3} | {'vclab build':>11} {'converge':>8} {'teardown':>8} {'ms/hv':>6} | "
          f"{'mininet build':>13} {'teardown':>8} {'ms/hv':>6} | {'ratio':>5} {'w/o conv':>8}")
    rows, missed = [], []
    for n in ns:
        v, m = results[n]
        vb, vc, vt = median(v, "build"), median(v, "converge"), median(v, "teardown")
        mb, mt = median(m, "build"), median(m, "teardown")
        ratio = (vb + vt) / (mb + mt)
        if ratio > TARGET:
            missed.append(f"N={n} ({ratio:.2f})")
        rows.append((n, vb, vc, vt, mb, mt))
        print(f"{n:>3} | {vb:>11.2f} {vc:>8.2f} {vt:>8.2f} {vb / n * 1000:>6.0f} | {mb:>13.2f} "
              f"{mt:>8.2f} {mb / n * 1000:>6.0f} | {ratio:>5.2f} {(vb - vc + vt) / (mb + mt):>8.2f}")
    print("\nMiB per hypervisor while up: MemAvailable drop, node shells' PSS, ovs-vswitchd RSS growth")
    print(f"{'N':>3} | {'vclab mem':>9} {'shells':>6} {'ovs':>5} | {'mininet mem':>11} {'shells':>6} {'ovs':>5}")
    for n in ns:
        v, m = results[n]
        print(f"{n:>3} | {mib(median(v, 'mem') / n):>9} {mib(median(v, 'shells') / n):>6} "
              f"{mib(median(v, 'ovs') / n):>5} | {mib(median(m, 'mem') / n):>11} "
              f"{mib(median(m, 'shells') / n):>6} {mib(median(m, 'ovs') / n):>5}")
    print()
    for n, vb, vc, vt, mb, mt in rows:
        print(f"N={n}: vclab/mininet {(vb + vt) / (mb + mt):.2f} "
              f"(build {vb / mb:.2f}, without the convergence wait {(vb - vc) / mb:.2f}, "
              f"teardown {vt / mt:.2f})")
    print()
    for label, index in (("vclab build", 1), ("vclab converge", 2), ("vclab teardown", 3),
                         ("mininet build", 4), ("mininet teardown", 5)):
        a, b, r2 = fit(ns, [row[index] for row in rows])
        print(f"{label:>16}: {a:6.2f} s + {b * 1000:6.1f} ms per hypervisor (R^2 {r2:.3f})")
    if len(ns) >= 2:
        mem_fit = fit(ns, [median(results[n][0], "mem") for n in ns])
        print(f"memory per added hypervisor (vclab, slope of the MemAvailable fit): {mib(mem_fit[1])} MiB")
    print(f"\ntarget vclab/mininet <= {TARGET}: "
          + (f"missed at {', '.join(missed)}" if missed else "met at every N"))
    return not missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 4, 8; one repetition (~2 min)")
    parser.add_argument("--sizes", type=int, nargs="+", help="hypervisor counts (default 4..64)")
    parser.add_argument("--reps", type=int, help="repetitions per N (default 2, --quick 1)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile vclab's build at the largest N and print where time goes")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/build_scale.py builds clusters: run it as root", file=sys.stderr)
        return 2
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    reps = args.reps or (1 if args.quick else 2)
    setLogLevel("error")
    Mininet.init()  # once per process (limits, sysctls): paid by neither side's timing
    print(f"build scale: N in {list(sizes)}, {reps} repetition(s); {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; labs {LAB_PREFIX}*, plain graph {PLAIN_PREFIX}*", flush=True)
    results: dict[int, tuple[list[Sample], list[Sample]]] = {}
    datapath = "system" if _kernel_datapath() else "netdev"  # as Lab chooses
    for n in sizes:
        cluster = cluster_of(n)
        results[n] = ([], [])
        for rep in range(reps):
            # Alternate who goes first: OVS and the page cache warm up for the second.
            order = ("vclab", "mininet") if rep % 2 == 0 else ("mininet", "vclab")
            for side in order:
                if side == "vclab":
                    sample = run_vclab(cluster, f"{n}-{rep}")
                    results[n][0].append(sample)
                else:
                    sample = run_plain(cluster, datapath, f"{n}-{rep}")
                    results[n][1].append(sample)
                print(f"  N={n} #{rep + 1} {side:>7}: build {sample.build:6.2f} s"
                      f"{f' (converge {sample.converge:.2f})' if side == 'vclab' else ''}, "
                      f"teardown {sample.teardown:6.2f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    ok = report(results, datapath)
    if args.profile:
        n = max(sizes)
        profile = cProfile.Profile()
        run_vclab(cluster_of(n), f"{n}-profile", profile)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
        print(f"\nwhere vclab's build time goes at N={n} (cProfile, cumulative):")
        print(out.getvalue())
    return 0 if ok else 1


def _kernel_datapath() -> bool:
    from vclab.doctor import PROBES

    probe = next(p for name, p, _ in PROBES if name == "ovs-kernel-datapath")
    return probe()[0]


if __name__ == "__main__":
    sys.exit(main())
