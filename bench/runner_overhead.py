#!/usr/bin/env python3
"""Runner overhead: an experiment's wall time against the sum of its scheduled phases.

The scheduled time of a repetition is what the experiment asks for (warm-up + duration); the
rest is vclab's own: building and converging the cluster, starting and collecting workloads,
tearing down and storing. Runs the default cluster with probes and one link failure, per
mechanism, and prints where the time went and, as its last line, `runner/scheduled <ratio>`.

    .venv/bin/python bench/runner_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vclab.experiments.loader import load_experiment  # noqa: E402
from vclab.experiments.runner import Runner  # noqa: E402

EXPERIMENT = """
experiment: runner-overhead
topology: {topology}
mechanisms: {mechanisms}
repetitions: {repetitions}
warmup: 1s
duration: 6s
workloads:
  - probe: {{from: esx1, to: esx2, network: vmotion}}
  - probe: {{from: esx1, to: array1, network: storage-b}}
faults:
  - {{at: 2s, link: tor-a/tor-b#1, action: down}}
  - {{at: 4s, link: tor-a/tor-b#1, action: up}}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="rstp only, one repetition")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("runner_overhead: needs root (it builds clusters)", file=sys.stderr)
        return 2
    mechanisms = "[rstp]" if args.quick else "[rstp, sdn, stp]"
    reps = 1 if args.quick else 2
    phases: list[tuple[float, str, int, str]] = []

    def progress(mechanism: str, index: int, phase: str) -> None:
        # "faults" starts the schedule, "fault: NAME" marks each one: one phase for both
        name = phase.split(":")[0]
        phases.append((time.monotonic(), mechanism, index, "faults" if name == "fault" else name))

    with tempfile.TemporaryDirectory(prefix="vclab-overhead-") as tmp:
        exp = Path(tmp) / "exp.yaml"
        exp.write_text(EXPERIMENT.format(topology=ROOT / "topologies/default.yaml",
                                         mechanisms=mechanisms, repetitions=reps))
        loaded = load_experiment(exp)
        started = time.monotonic()
        summary = Runner(loaded, Path(tmp) / "res", lab_prefix="vco", progress=progress).run()
        wall = time.monotonic() - started
    e = loaded.experiment
    scheduled = (e.warmup + e.duration) / 1e3 * len(e.mechanisms) * reps
    # time spent in each phase, summed over repetitions: from one progress call to the next
    spent: dict[str, float] = {}
    for (t, m, i, phase), nxt in zip(phases, phases[1:] + [(started + wall, "", 0, "")]):
        spent[phase] = spent.get(phase, 0.0) + nxt[0] - t
    print(f"{'phase':<28}{'seconds':>9}")
    labels = {"building": "build + converge", "starting workloads": "start + warm-up",
              "faults": "fault schedule", "collecting": "collect + teardown + store"}
    for phase, seconds in spent.items():
        if phase in labels:
            print(f"{labels[phase]:<28}{seconds:>9.1f}")
    print(f"{'wall time':<28}{wall:>9.1f}")
    print(f"{'scheduled':<28}{scheduled:>9.1f}   ({len(e.mechanisms)} mechanisms x {reps} "
          f"repetitions x (warm-up + duration))")
    print(f"repetitions ok {summary.ok}, failed {summary.failed}; load {os.getloadavg()[0]:.1f}")
    print(f"runner/scheduled {wall / scheduled:.2f}")
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
