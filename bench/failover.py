"""Outage of a 1 ms UDP probe through a failure and through its repair, per mechanism.

    sudo .venv/bin/python bench/failover.py [--quick] [--reps N] [--results DIR] [--only M ...]

One experiment per mechanism on topologies/default.yaml, run by vclab's experiment runner
(labs named `vcg...`): the probe goes esx1 -> array1 on storage-b, which crosses the first
inter-switch cable tor-a/tor-b#1 (esx1's team prefers vmnic0 on tor-a, the array's storage-b
portal is on tor-b; RSTP/STP's root port on tor-b and the controller's first choice are both
that cable). Faults on it: carrier loss (link down, then up) and silent loss (every frame
dropped, carrier kept, then restored); uplink rows: esx1.vmnic0 down and up, then silent and
restored, with the topology's active-backup team (rstp, sdn) and each other team mode under
rstp (LACP on a copy of the cluster whose teams end on one switch; each NIC in turn, the worse
of the two counts, as a hashing team carries a flow on one NIC), and sdn+bfd-nics (BFD on
every server NIC, off by default). The table gives median and
max over the repetitions, each median against rstp's for the same fault (`x rstp`), the probe's
noise floor without a fault, and last the two ratios sdn/rstp of the median outages and the
worst sdn/rstp ratio over the rows where both mechanisms have an outage (`worst-row`).
`--load`: the same rows with the default experiment's background workloads running beside the
probe (its other probes, HA heartbeats, iSCSI and iperf3; not its vMotion, a one-off event). The
rstp+isl-lag rows run topologies/isl-lag.yaml (the two cables one LACP LAG): each fault hits
each cable in turn, and the worse of the two counts. `--quick`: 2 repetitions, and STP / Linux STP skip
silent loss (it takes max-age plus two forward delays, ~15 s each, to heal).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vclab.experiments.loader import LoadedExperiment  # noqa: E402
from vclab.experiments.runner import Runner  # noqa: E402
from vclab.experiments.spec import Experiment, MechanismChoice  # noqa: E402
from vclab.results.store import ResultStore  # noqa: E402
from vclab.topology.loader import load_cluster  # noqa: E402

TOPOLOGY = ROOT / "topologies" / "default.yaml"
DEFAULT_EXPERIMENT = ROOT / "experiments" / "default.yaml"
LAG_TOPOLOGY = ROOT / "topologies" / "isl-lag.yaml"  # the same, its two cables one LAG
ISL = "tor-a/tor-b#1"
ISL2 = "tor-a/tor-b#2"
NIC = "esx1.vmnic0"
NIC2 = "esx1.vmnic1"
SILENT_UPLINK_HOLD = 5.0  # s: longer than LACP's 3 s, so a team that never notices shows as such
PROBE = {"probe": {"from": "esx1", "to": "array1", "network": "storage-b", "every": 1.0}}
PROBE_NAME = "probe esx1>array1 storage-b"  # its workload name in the results

# Fault kinds as the table names them: (target, action) -> row label.
LABELS = {(ISL, "down"): "carrier loss", (ISL, "up"): "carrier restore",
          (ISL, "silent"): "silent loss", (ISL, "restore"): "silent restore",
          (NIC, "down"): "uplink down", (NIC, "up"): "uplink up",
          (NIC, "silent"): "uplink silent", (NIC, "restore"): "uplink restore"}
# A LAG carries a flow on one cable: its rows fail each cable in turn and keep, per
# repetition, the worse of the two (the cable the probe's flow was on).
LABELS.update({(ISL2, action): LABELS[(ISL, action)] for action in ("down", "up", "silent", "restore")})
LABELS.update({(NIC2, action): LABELS[(NIC, action)] for action in ("down", "up", "silent", "restore")})
TEAMS = ("balance-slb", "lacp")  # the topology's own active-backup team is the rstp row's


def schedule(steps: list[tuple[str, str, float]]) -> tuple[list[dict], float]:
    """[(target, action, seconds to wait after it)] -> faults (from 1 s on) and the duration."""
    faults, t = [], 1000.0
    for target, action, hold in steps:
        faults.append({"link": target, "action": action, "at": t})
        t += hold * 1000
    return faults, t


def plans(quick: bool) -> list[tuple[object, list[tuple[str, str, float]]]]:
    """(mechanism, fault steps) per row group. Holds are what each mechanism needs to heal
    (with room for a loaded machine): RSTP ~15 ms on carrier, 3 hellos (6 s) on silence; STP
    2 x forward delay (8 s) on carrier, max-age + 8 s on silence; sdn BFD 3 x 50 ms."""
    carrier = lambda hold: [(ISL, "down", hold), (ISL, "up", hold)]  # noqa: E731
    silent = lambda hold: [(ISL, "silent", hold), (ISL, "restore", hold)]  # noqa: E731
    uplink = [(NIC, "down", 2.0), (NIC, "up", 2.0)]
    # A team that only watches carrier never sees a silent NIC: the hold is then the outage
    # (reported as such); LACP fast needs 3 missed PDUs at 1 s, BFD 3 x 50 ms.
    uplink_silent = [(NIC, "silent", SILENT_UPLINK_HOLD), (NIC, "restore", 2.0)]
    stp_steps = carrier(13.0) + ([] if quick else silent(20.0))
    # LACP fast notices a silent member after 3 missed PDUs (3 s) and takes it back after
    # about as long. Each kind of fault hits each cable in turn, back to back: a fault moves
    # the flow to the other cable, where the same fault then finds it.
    lag = ([(cable, action, hold) for cable in (ISL, ISL2) for action, hold in (("down", 1.5), ("up", 2.0))]
           + [(cable, action, hold) for cable in (ISL, ISL2) for action, hold in (("silent", 5.0), ("restore", 4.0))])
    return [
        ("rstp", carrier(2.0) + silent(10.0)[:1] + [(ISL, "restore", 4.0)] + uplink
         + uplink_silent),
        # After a carrier repair BFD needs up to ~2 s to be up again at full rate (a session
        # that is down sends once a second, RFC 5880 6.8.3): a silent fault any sooner is
        # detected at the slow rate (1.5 s, not 150 ms) and measures the schedule.
        ("sdn", [(ISL, "down", 1.5), (ISL, "up", 4.0)] + silent(1.5) + uplink + uplink_silent),
        # a hashing team puts the probe's flow on one NIC: each NIC in turn (as for the LAG),
        # the worse counts
        *[({"fabric": "rstp", "team": team},
           [(nic, a, hold) for steps in (uplink, uplink_silent) for nic in (NIC, NIC2)
            for _, a, hold in steps]) for team in TEAMS],
        ({"fabric": "sdn", "bfd_nics": True}, uplink + uplink_silent),
        ("stp", stp_steps),
        ("linux-stp", stp_steps),
        ("rstp+isl-lag", lag),
    ]


def lacp_topology(results: Path) -> Path:
    """The default cluster with every server's two NICs on tor-a: a LACP team ends on one
    switch (vclab refuses one across two, which would need MLAG)."""
    path = results / "default-lacp.yaml"
    single = TOPOLOGY.read_text()
    for nics in ("{vmnic0: tor-a, vmnic1: tor-b}", "{eth0: tor-a, eth1: tor-b}"):
        if nics not in single:
            raise SystemExit(f"{TOPOLOGY}: no NICs {nics}, where the LACP row expects them")
        single = single.replace(nics, nics.replace("tor-b", "tor-a"))
    path.write_text(single)
    from vclab.experiments.loader import mechanism_problems
    e = Experiment.model_validate({"experiment": "lacp", "topology": str(path),
                                   "mechanisms": [{"fabric": "rstp", "team": "lacp"}],
                                   "duration": 1000.0, "workloads": [PROBE]})
    problems = mechanism_problems(e, load_cluster(path))
    if problems:
        raise SystemExit(f"{path}: {problems}")
    return path


def background_load() -> list[dict]:
    """The default experiment's workloads, less its vMotion and any probe the bench runs
    itself: the load every row of `--load` runs under."""
    import yaml

    doc = yaml.safe_load(DEFAULT_EXPERIMENT.read_text())
    own = PROBE["probe"]
    out = []
    for w in doc.get("workloads", []):
        (kind, body), = w.items()
        if kind == "vmotion":
            continue
        if kind == "probe" and all(body.get(k) == own[k] for k in ("from", "to", "network")):
            continue
        out.append(w)
    return out


def run(results: Path, reps: int, quick: bool, only: list[str] | None,
        load: bool = False) -> list[tuple[str, int]]:
    runs = []
    extra = background_load() if load else []
    for mechanism, steps in plans(quick):
        label = mechanism if isinstance(mechanism, str) else MechanismChoice.model_validate(mechanism).label
        if only and label not in only:
            continue
        topology = lacp_topology(results) if label.endswith("+lacp") else TOPOLOGY
        if label.endswith("+isl-lag"):
            topology, mechanism = LAG_TOPOLOGY, label.split("+")[0]
        cluster = load_cluster(topology)
        faults, duration = schedule(steps)
        name = "failover-" + label.replace("+", "-")
        e = Experiment.model_validate({
            "experiment": name, "topology": str(topology), "mechanisms": [mechanism],
            "repetitions": reps, "warmup": 1500.0, "settle": 500.0, "duration": duration,
            "workloads": [PROBE] + extra, "faults": faults})
        loaded = LoadedExperiment(e, cluster, topology, e.model_dump_json(by_alias=True),
                                  topology.read_text())

        def progress(mech: str, index: int, phase: str) -> None:
            if not phase.startswith("fault"):
                print(f"  {mech} #{index}: {phase}", file=sys.stderr, flush=True)
        started = time.monotonic()
        summary = Runner(loaded, results, progress=progress, lab_prefix="vcg").run()
        print(f"{label}: {summary.ok} ok, {summary.failed} failed in "
              f"{time.monotonic() - started:.0f} s (load {os.getloadavg()[0]:.1f})",
              file=sys.stderr, flush=True)
        runs.append((label, summary.run_id))
        if summary.interrupted:
            break
    return runs


def table(results: Path, runs: list[tuple[str, int]]) -> list[str]:
    """One row per (mechanism, fault kind); `x rstp` is the median against rstp's median for
    the same fault kind in this run (the team rows against rstp's own active-backup team)."""
    store = ResultStore(results)
    lines = [f"{'mechanism':<20} {'fault':<16} {'n':>2} {'median ms':>10} {'max ms':>10} "
             f"{'x rstp':>7}"]
    medians: dict[tuple[str, str], float] = {}
    floors: list[float] = []
    failures = []
    rows_out: list[tuple[str, str, list[float]]] = []
    for label, run_id in runs:
        # Only the bench's own probe: under --load the other workloads have rows too.
        rows = [r for r in store.metric_rows(run_id) if r.workload == PROBE_NAME]
        failures += [f"{label} #{r.index}: {r.reason}" for r in store.repetitions(run_id)
                     if r.status != "ok"]
        floors += [r.value for r in rows if r.name == "noise_floor_ms" and r.status == "ok"]
        per_rep: dict[str, dict[int, float]] = {}
        for r in rows:
            if r.name != "outage_ms" or r.status != "ok":
                continue
            target_action = r.fault.split("@")[0].split(" ", 1)[1].rsplit(" ", 1)
            kind = LABELS.get((target_action[0], target_action[1]), r.fault)
            reps = per_rep.setdefault(kind, {})
            reps[r.index] = max(reps.get(r.index, 0.0), r.value)
        by_fault = {kind: list(reps.values()) for kind, reps in per_rep.items()}
        for kind in dict.fromkeys(k for k in LABELS.values() if k in by_fault):
            medians[(label, kind)] = statistics.median(by_fault[kind])
            rows_out.append((label, kind, by_fault[kind]))
    store.close()
    for label, kind, values in rows_out:
        median, rstp = medians[(label, kind)], medians.get(("rstp", kind))
        ratio = f"{median / rstp:7.2f}" if rstp else f"{'-':>7}"
        note = ""
        if kind == "uplink silent" and median >= 0.95 * SILENT_UPLINK_HOLD * 1000:
            note = "  not detected: lasts until the restore"
        lines.append(f"{label:<20} {kind:<16} {len(values):>2} {median:>10.1f} "
                     f"{max(values):>10.1f} {ratio}{note}")
    if any(label.endswith(("+balance-slb", "+lacp")) for label, _, _ in rows_out):
        lines.append("(balance-slb and lacp put each flow on one NIC: each uplink fault hits "
                     "vmnic0, then vmnic1, and the worse of the two counts)")
    if any(label.endswith("+isl-lag") for label, _, _ in rows_out):
        lines.append("(isl-lag: the two inter-switch cables as one LACP LAG, no spanning-tree "
                     "block; each fault hits each cable in turn, the worse of the two counts)")
    if floors:
        lines.append(f"{'noise floor':<20} {'no fault':<16} {len(floors):>2} "
                     f"{statistics.median(floors):>10.1f} {max(floors):>10.1f}")
    lines += [f"failed: {f}" for f in failures]
    for kind, key in (("carrier-loss", "carrier loss"), ("silent-loss", "silent loss")):
        sdn, rstp = medians.get(("sdn", key)), medians.get(("rstp", key))
        ratio = f"{sdn / rstp:.3f}" if sdn is not None and rstp else "n/a"
        lines.append(f"sdn/rstp {kind} {ratio}")
    lines.append(f"sdn/rstp worst-row {worst_row(medians)}")
    return lines


def worst_row(medians: dict[tuple[str, str], float]) -> str:
    """The largest sdn/rstp median ratio over the fault kinds where both have an outage
    (a 0 ms median on either side is no contest: nothing to divide)."""
    ratios = [sdn / medians[("rstp", kind)] for (label, kind), sdn in medians.items()
              if label == "sdn" and sdn > 0 and medians.get(("rstp", kind), 0) > 0]
    return f"{max(ratios):.3f}" if ratios else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions, no STP silent loss")
    parser.add_argument("--reps", type=int, help="repetitions (default 5, --quick 2)")
    parser.add_argument("--results", type=Path, help="results directory (default: a temp dir)")
    parser.add_argument("--only", nargs="*", help="mechanism labels to run (e.g. sdn rstp)")
    parser.add_argument("--load", action="store_true",
                        help="run every row under the default experiment's background load")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/failover.py builds clusters: run it as root", file=sys.stderr)
        return 2
    reps = args.reps or (2 if args.quick else 5)
    results = args.results or Path(tempfile.mkdtemp(prefix="vclab-failover-"))
    results.mkdir(parents=True, exist_ok=True)
    print(f"results in {results}; {reps} repetitions; load {os.getloadavg()[0]:.1f}",
          file=sys.stderr, flush=True)
    runs = run(results, reps, args.quick, args.only, args.load)
    if args.quick:
        print("quick: stp and linux-stp silent loss skipped (~15 s each to heal)")
    print(f"probe esx1 -> array1 (storage-b) every 1 ms; ISL {ISL}, uplink {NIC}; "
          f"load average {os.getloadavg()[0]:.1f}"
          + ("; under the default experiment's background load" if args.load else ""))
    for line in table(results, runs):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
