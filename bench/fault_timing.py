"""Does a whole-switch failure reach the fabric at one instant? Measured where it matters: when
each switch's Open vSwitch reports its ports down, not when vclab's commands returned.

    sudo .venv/bin/python bench/fault_timing.py [--reps N] [--no-load] [--results DIR]

The default cluster (topologies/default.yaml) fails tor-a and recovers it, run by vclab's
experiment runner (labs named `vcf...`) under RSTP and under the SDN controller. Every bridge
of the lab has an OpenFlow listener (`ovs-ofctl monitor BRIDGE 128 --timestamp`: a nonzero
miss length is what makes Open vSwitch send a service connection its asynchronous messages)
that logs each OFPT_PORT_STATUS with the time ovs-vswitchd sent it (ms resolution). A switch
fault sets the switch's own end of each of its cables down, which takes both ends' carrier (a
neighbour's port stays administratively up, as a real one would); each end's bridge must report
that port LINK_DOWN: X is the time from the fault's applied instant (as the runner recorded
it) to the last of those reports, the worst over the repetitions. Run once on a quiet lab
(probes only) and once under the default experiment's load (its workloads: iperf3, iSCSI,
the vMotion, heartbeats, probes). Target (issue 16): X <= 50 ms in both.

Prints, per condition, exactly
    switch fail: ports seen down within X ms (N ports)
    switch recover: ports seen up within X ms (N ports)
    switch recover: ports seen live (may forward) within X ms (N ports)
(`N of M ports` when some port was never reported). "up" is the carrier; "live" is when the
port may forward: with BFD on (sdn's inter-switch cables) that waits for the BFD session.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vclab.experiments.cabling import PlanCabling  # noqa: E402
from vclab.experiments.loader import LoadedExperiment, load_experiment  # noqa: E402
from vclab.experiments.runner import Runner  # noqa: E402
from vclab.experiments.spec import Experiment  # noqa: E402
from vclab.results.store import ResultStore  # noqa: E402
from vclab.topology.loader import load_cluster  # noqa: E402
from vclab.topology.plan import build_plan  # noqa: E402

DEFAULT = ROOT / "experiments" / "default.yaml"
TOPOLOGY = ROOT / "topologies" / "default.yaml"
PREFIX = "vcf"
SWITCH = "tor-a"
FAIL_AT_MS, RECOVER_AT_MS, DURATION_MS = 8000.0, 12000.0, 15000.0
STATUS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}): OFPT_PORT_STATUS .*?: MOD: \d+\(([^)]+)\)")


def port_events(log: str) -> list[tuple[int, str, str]]:
    """(ns since the epoch, port name, state) of each port-status message in one
    `ovs-ofctl monitor --timestamp` log. The state line follows the header line: LINK_DOWN
    while the carrier is off; LIVE once the port may forward (with BFD on, only when BFD is up)."""
    out, lines = [], log.splitlines()
    for i, line in enumerate(lines):
        m = STATUS.match(line)
        if not m:
            continue
        state = next((x for x in lines[i + 1:i + 6] if x.strip().startswith("state:")), "")
        stamp = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=dt.timezone.utc)
        out.append((int(stamp.timestamp() * 1e9), m.group(2), state.split(":", 1)[-1].strip()))
    return out


def seen_within(events: list[tuple[int, str, str]], ports: list[str], applied_ns: int,
                want: str, until_ns: int, slack_ms: float = 1.0) -> tuple[float | None, int]:
    """(ms from applied_ns to the last of `ports` reported `want` (down: carrier off; up:
    carrier on; live: may forward), how many were). A report up to `slack_ms` before
    applied_ns counts: applied_ns is taken after the last command, and the stamps are in ms."""
    match = {"down": lambda s: "LINK_DOWN" in s, "up": lambda s: "LINK_DOWN" not in s,
             "live": lambda s: "LIVE" in s.split()}[want]
    first: dict[str, int] = {}
    for t, port, state in sorted(events):
        if port in ports and match(state) and applied_ns - slack_ms * 1e6 <= t < until_ns and port not in first:
            first[port] = t
    if not first:
        return None, 0
    return max(0.0, (max(first.values()) - applied_ns) / 1e6), len(first)


class Monitors:
    """One OpenFlow listener per bridge of the lab, started once the lab is built."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self) -> None:
        bridges = [b for b in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                                             text=True).stdout.split() if b.startswith(PREFIX)]
        for b in bridges:
            log = self.workdir / f"{b}.{len(self.logs)}.log"
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                ["ovs-ofctl", "-O", "OpenFlow13", "monitor", b, "128", "--timestamp"],
                stdout=log.open("w"), stderr=subprocess.STDOUT))

    def stop(self) -> list[tuple[int, str, bool]]:
        for p in self.procs:  # ours, by PID
            if p.poll() is None:
                p.terminate()
            p.wait(timeout=5)
        self.procs = []
        events = [e for log in self.logs for e in port_events(log.read_text(errors="replace"))]
        self.logs = []
        return events


def experiment(load: bool, mechanism: str, reps: int) -> LoadedExperiment:
    base = load_experiment(DEFAULT)
    probes = [w.model_dump(by_alias=True, exclude_none=True) for w in base.experiment.workloads
              if w.kind == "probe"]
    workloads = ([w.model_dump(by_alias=True, exclude_none=True) for w in base.experiment.workloads]
                 if load else probes)
    faults = [{"switch": SWITCH, "action": "fail", "at": FAIL_AT_MS},
              {"switch": SWITCH, "action": "recover", "at": RECOVER_AT_MS}]
    e = Experiment.model_validate({
        "experiment": f"fault-timing-{mechanism}-{'load' if load else 'quiet'}",
        "topology": str(TOPOLOGY), "mechanisms": [mechanism], "repetitions": reps,
        "warmup": 2000.0, "duration": DURATION_MS, "workloads": workloads, "faults": faults})
    return LoadedExperiment(e, load_cluster(TOPOLOGY), TOPOLOGY, e.model_dump_json(by_alias=True),
                            TOPOLOGY.read_text())


def measure(results: Path, load: bool, mechanism: str, reps: int) -> list[tuple[str, float | None, int, int]]:
    """[(action, ms, ports seen, ports expected)] per repetition and fault."""
    loaded = experiment(load, mechanism, reps)
    monitors = Monitors(results)
    out: list[tuple[str, float | None, int, int]] = []
    events: dict[int, list] = {}

    def progress(mech: str, index: int, phase: str) -> None:
        if phase == "starting workloads":
            monitors.start()
        elif phase in ("ok", "failed", "partial") or phase.startswith(("ok", "failed", "partial")):
            events[index] = monitors.stop()
        if not phase.startswith("fault"):
            print(f"  {mech} #{index}: {phase}", file=sys.stderr, flush=True)

    summary = Runner(loaded, results, progress=progress, lab_prefix=PREFIX,
                     repetitions=reps).run()
    monitors.stop()
    store = ResultStore(results)
    # A fault sets one end of each cable down where that takes both ends' carrier (faults.plan):
    # each switch must still see its own end go, so every end is watched.
    cabling = PlanCabling(build_plan(loaded.cluster, PREFIX))
    cable_ends = [e for link in cabling.switch_links(SWITCH) for e in cabling.link_ends(link)]
    for rep in store.repetitions(summary.run_id):
        faults = sorted(store.faults(rep.id), key=lambda f: f.applied_ns)
        for i, f in enumerate(faults):
            ports = cable_ends  # both ends of every cable of the switch, whichever were set down
            until = faults[i + 1].applied_ns if i + 1 < len(faults) else rep.finished_ns
            for want in (("up", "live") if f.action == "recover" else ("down",)):
                slack = f.detail.get("uncertainty_ms", 0.0) + 1.0
                ms, seen = seen_within(events.get(rep.index, []), ports, f.applied_ns, want, until, slack)
                out.append((f.action if want != "live" else "live", ms, seen, len(ports)))
    store.close()
    return out


def lines(rows: list[tuple[str, float | None, int, int]]) -> list[str]:
    text = []
    for action, verb, state in (("fail", "fail", "down"), ("recover", "recover", "up"),
                                ("live", "recover", "live (may forward)")):
        mine = [r for r in rows if r[0] == action]
        if not mine:
            continue
        worst = max((r[1] for r in mine if r[1] is not None), default=None)
        seen, expected = min(r[2] for r in mine), max(r[3] for r in mine)
        count = f"{seen} ports" if seen == expected else f"{seen} of {expected} ports"
        x = f"{worst:.0f}" if worst is not None else "n/a"
        text.append(f"switch {verb}: ports seen {state} within {x} ms ({count})")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per mechanism (default 3)")
    parser.add_argument("--no-load", action="store_true", help="only the quiet lab")
    parser.add_argument("--load-only", action="store_true", help="only under the default load")
    parser.add_argument("--mechanisms", nargs="*", default=["rstp", "sdn"])
    parser.add_argument("--results", type=Path, help="results directory (default: a temp dir)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/fault_timing.py builds clusters: run it as root", file=sys.stderr)
        return 2
    results = args.results or Path(tempfile.mkdtemp(prefix="vclab-fault-timing-"))
    results.mkdir(parents=True, exist_ok=True)
    conditions = [c for c in (False, True) if not (c and args.no_load) and not (not c and args.load_only)]
    print(f"results in {results}; load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    report = []
    for load in conditions:
        rows = []
        for mechanism in args.mechanisms:
            started = time.monotonic()
            mine = measure(results / f"{mechanism}-{'load' if load else 'quiet'}", load, mechanism, args.reps)
            rows += mine
            report.append(f"# {mechanism}, {'under the default load' if load else 'quiet'}: "
                          + ", ".join(f"{a} {ms if ms is None else round(ms)} ms ({s}/{n})" for a, ms, s, n in mine)
                          + f"  [{time.monotonic() - started:.0f} s]")
        report.append(f"load: {'the default experiment workloads' if load else 'none (probes only)'}; "
                      f"{args.reps} repetitions x {', '.join(args.mechanisms)}; switch {SWITCH}")
        report += lines(rows)
    print(f"load average {os.getloadavg()[0]:.1f}")
    for line in report:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
