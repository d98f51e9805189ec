"""Run `vclab check` on one sample of each hostile-input family (issue 17) under /usr/bin/time -v
and print a table: exit status, wall seconds, max RSS, and the first line printed.

    .venv/bin/python tests/data/hostile/measure.py [--vclab .venv/bin/vclab]

The samples are the YAML files next to this script plus a few made here, in a temporary
directory, because git cannot hold them or they are big: a FIFO, a directory, a symlink loop,
/dev/zero, /proc/meminfo, a 0.66 MB file of 11,000 networks, a 10 MB value, and 2,000 networks
that all share one subnet (under the size limit, so the overlap check itself is timed).
Target: each rc 2 in under 2 s and 200 MB."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def made_here(tmp: Path) -> list[Path]:
    fifo = tmp / "fifo.yaml"
    os.mkfifo(fifo)
    directory = tmp / "directory.yaml"
    directory.mkdir()
    loop = tmp / "loop.yaml"
    os.symlink("loop2.yaml", loop)
    os.symlink("loop.yaml", tmp / "loop2.yaml")
    big = tmp / "networks-12000.yaml"
    lines = ["cluster: big", "switches: {tor-a: {}}", "networks:"]
    lines += [f"  n{i}: {{vlan: {i % 4094 + 1}, subnet: 10.{i // 256 % 256}.{i % 256}.0/24, kind: vm}}"
              for i in range(12000)]
    big.write_text("\n".join(lines) + "\n")
    value = tmp / "value-10mb.yaml"
    value.write_text("cluster: " + "a" * 10_000_000 + "\n")
    same = tmp / "networks-1000-one-subnet.yaml"
    lines = ["cluster: big", "switches: {tor-a: {}}", "networks:"]
    lines += [f"  n{i}: {{vlan: {i + 1}, subnet: 10.0.0.0/16, kind: vm}}" for i in range(1000)]
    same.write_text("\n".join(lines) + "\n")
    return [fifo, directory, loop, Path("/dev/zero"), Path("/proc/meminfo"), big, value, same]


def measure(vclab: str, path: Path, cwd: Path) -> tuple[int, float, int, str]:
    try:
        p = subprocess.run(["/usr/bin/time", "-v", vclab, "check", str(path)], cwd=cwd,
                           capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return -1, 30.0, 0, "(killed after 30 s)"
    stats = p.stderr
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", stats)
    seconds = (int(wall[1] or 0) * 3600 + int(wall[2]) * 60 + float(wall[3])) if wall else float("nan")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stats)
    printed = [line for line in stats.split("\n\tCommand being timed")[0].splitlines() if line.strip()]
    printed = printed or [line for line in p.stdout.splitlines() if line.strip()]
    status = re.search(r"Exit status: (\d+)", stats)
    return int(status[1]) if status else p.returncode, seconds, int(rss[1]) // 1024 if rss else 0, \
        (printed[0] if printed else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vclab", default=str(ROOT / ".venv" / "bin" / "vclab"))
    parser.add_argument("--width", type=int, default=150, help="cut printed lines to this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vclab-hostile-") as tmp:
        samples = [(p, HERE) for p in sorted(HERE.glob("*.yaml")) if not p.is_symlink()]
        samples += [(p, Path(tmp)) for p in made_here(Path(tmp))]
        print(f"{'sample':34} {'rc':>3} {'s':>5} {'MB':>4}  first line printed")
        worst = (0.0, 0)
        bad = 0
        for path, cwd in samples:
            rc, seconds, mb, line = measure(args.vclab, path.name if cwd == HERE else path, cwd)
            worst = (max(worst[0], seconds), max(worst[1], mb))
            bad += rc != 2 or seconds >= 2 or mb >= 200
            print(f"{path.name:34} {rc:>3} {seconds:5.2f} {mb:>4}  {line[:args.width]}")
        print(f"{len(samples)} samples, {bad} outside the target (rc 2, < 2 s, < 200 MB); "
              f"slowest {worst[0]:.2f} s, largest {worst[1]} MB")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
