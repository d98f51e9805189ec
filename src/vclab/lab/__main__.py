"""`python -m vclab.lab FILE`: build a cluster, check it, tear it down."""

from __future__ import annotations

import argparse
import sys
import time

from vclab import PREFIX
from vclab.lab.lab import Lab
from vclab.topology.loader import load_cluster


def main(argv: list[str] | None = None) -> int:
    """`python -m vclab.lab FILE [--mechanism M] [--hold S] [--prefix P] [--run-id R]`:
    build, check reachability and isolation, tear down (exit 1 if a check failed)."""
    parser = argparse.ArgumentParser(prog="python -m vclab.lab")
    parser.add_argument("file")
    parser.add_argument("--mechanism")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds to keep it up")
    parser.add_argument("--prefix", default=PREFIX)
    parser.add_argument("--run-id")
    args = parser.parse_args(argv)
    cluster = load_cluster(args.file)
    with Lab(cluster, mechanism=args.mechanism, prefix=args.prefix, run_id=args.run_id) as lab:
        print(f"built {cluster.cluster} in {lab.build_seconds:.2f} s on {lab.datapath}, "
              f"{lab.mechanism.name} settled in {lab.converge_seconds:.2f} s", flush=True)
        matrices = lab.reachability()
        failed = [(n, pair) for n, m in matrices.items() for pair, ok in m.items() if not ok]
        leaks = [entry for entry in lab.isolation() if entry[2]]
        print(f"reachability: {sum(len(m) for m in matrices.values()) - len(failed)} pairs ok, "
              f"{len(failed)} failed {failed}; isolation leaks: {leaks}", flush=True)
        if args.hold:
            time.sleep(args.hold)
    return 1 if failed or leaks else 0


if __name__ == "__main__":
    sys.exit(main())
