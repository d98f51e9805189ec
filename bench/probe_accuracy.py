"""How accurately does the probe measure an outage? Black-hole a path for known times and compare.

    .venv/bin/python bench/probe_accuracy.py --quick      # ~30 s
    .venv/bin/python bench/probe_accuracy.py --load 2     # with both cores kept busy

Two namespaces vcq-a, vcq-b on the netdev OVS bridge vcq-br (the tests use vcp-*). A baseline
run with no fault gives the noise floor. Then, for each length, two black holes (the same
helpers as tests/integration/test_probe.py, from tests/rigs/netns.py):

  kernel    vcq-ap's MTU shrunk by ioctl: its edges are exact, so this is the probe's own
            error (a->b direction, dropped in a's sendto)
  openflow  a drop rule above NORMAL: a switch-side silent loss; adds OVS's lag in applying
            it. Repeated when OVS itself stalled near an edge (other users of the shared
            switch reconfiguring it).

Either is repeated when the path was already broken when the fault came, or when the host
stalled the probe's senders at an edge (the error bar then measures the host); still
disturbed after 3 tries: counted as void.

Needs root and Open vSwitch. Exit status 1 if any trial missed its tolerance.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from vclab.lab.procs import ProcessTracker
from vclab.workloads.probe.workload import quiet_trial

# The black holes and the rig are test tooling (tests/rigs), not part of vclab itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from rigs.netns import BlackHole, MtuBlackHole, SwitchWatch, rig  # noqa: E402

PREFIX = "vcq"
console = Console()


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM behaves like Ctrl-C, so the `finally` blocks remove the rig and the agents.
    raise KeyboardInterrupt


def main(
    quick: Annotated[bool, typer.Option(help="fewer repetitions and a short baseline")] = False,
    lengths: Annotated[str, typer.Option(help="black-hole lengths in ms, comma-separated")] = "10,50,200,1000",
    reps: Annotated[int, typer.Option(help="repetitions per length and fault (default 5; --quick 2)")] = 0,
    baseline_s: Annotated[float, typer.Option(help="fault-free run for the noise floor (default 10; --quick 3)")] = 0.0,
    faults: Annotated[str, typer.Option(help="kernel, openflow or both")] = "kernel,openflow",
    interval_ms: Annotated[float, typer.Option(help="probe interval")] = 1.0,
    load: Annotated[int, typer.Option(help="busy-loop processes to run beside the probe")] = 0,
) -> None:
    if os.geteuid() != 0:
        console.print("[red]needs root (namespaces and Open vSwitch)[/red]")
        raise typer.Exit(2)
    holds = [float(x) for x in lengths.split(",") if x.strip()]
    kinds = [k.strip() for k in faults.split(",") if k.strip()]
    if not set(kinds) <= {"kernel", "openflow"}:
        console.print(f"[red]--faults: kernel and/or openflow, not {faults!r}[/red]")
        raise typer.Exit(2)
    reps = reps or (2 if quick else 5)
    baseline_s = baseline_s or (3.0 if quick else 10.0)
    before_s, after_s = (0.3, 0.2) if quick else (1.0, 0.3)
    signal.signal(signal.SIGTERM, _interrupt)
    tracker = ProcessTracker(run_id=f"{PREFIX}-bench-{os.getpid()}")
    trials: dict[tuple[str, float], list[dict]] = {(k, h): [] for k in kinds for h in holds}
    try:
        for _ in range(load):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            tracker.track(busy.pid, "busy-loop")
        with rig(PREFIX) as r:
            a, b = r.nodes
            ends = ((a, a.ip), (b, b.ip))
            make = {
                "kernel": lambda: MtuBlackHole(r.ports[a.name]).connect(),
                "openflow": lambda: BlackHole(r.bridge).connect(),
            }
            console.print(f"baseline: {baseline_s:g} s without a fault, then "
                          f"{len(trials) * reps} black holes ...")
            base = quiet_trial(*ends, tracker, before_s=baseline_s, after_s=0.0,
                               interval_ms=interval_ms, make_witness=lambda: SwitchWatch(r.bridge))
            for _ in range(reps):
                for kind, hold in trials:
                    trials[(kind, hold)].append(quiet_trial(
                        *ends, tracker, make[kind], hold, before_s=before_s, after_s=after_s,
                        interval_ms=interval_ms, make_witness=lambda: SwitchWatch(r.bridge)))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: cleaned up[/yellow]")
        raise typer.Exit(130)
    finally:
        tracker.end_all()
    ok = report(base, trials, interval_ms, load)
    raise typer.Exit(0 if ok else 1)


def measured(kind: str, trial: dict) -> dict:
    """The gap nearest the fault, judged: for the kernel hole in its exact direction (a->b),
    for the OpenFlow one in the worse direction."""
    if kind == "kernel":
        d = trial["a_to_b"]
        gap = d["fault_gap"] or {"outage_ms": 0.0, "error_ms": d["outage_error_ms"],
                                 "loss_outage_ms": 0.0}
        return dict(d, outage_ms=gap["outage_ms"], outage_error_ms=gap["error_ms"],
                    loss_outage_ms=gap["loss_outage_ms"])
    return dict(trial, outage_ms=trial["fault_outage_ms"],
                outage_error_ms=trial["fault_outage_error_ms"],
                loss_outage_ms=trial["fault_loss_outage_ms"])


def report(base: dict, trials: dict[tuple[str, float], list[dict]], interval_ms: float,
           load: int) -> bool:
    ab, ba = base["a_to_b"], base["b_to_a"]
    console.print(
        f"noise floor {base['own_noise_floor_ms']:.1f} ms (no fault, "
        f"{base['noise_floor_window_ms'] / 1e3:.1f} s, {ab['lost'] + ba['lost']} of "
        f"{ab['expected'] + ba['expected']} probes lost ({base['probe_drops']} by the probe's own "
        f"sockets), interval {interval_ms:g} ms, "
        f"{load} busy loops, {base['attempts']} tries); a naive receive-gap probe would say "
        f"{base['naive_noise_floor_ms']:.1f} ms; probes held without loss up to "
        f"{base['noise_delay_spike_ms']:.1f} ms; RTT median {base['rtt']['median_ms'] or 0:.3f} ms",
        highlight=False,
    )
    table = Table(title="probe accuracy (ms): black hole of known length", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True, show_edge=False)
    # void: runs the shared switch or the host disturbed (after 3 tries); real: the black hole by its own
    # timestamps; outage: the probe's gap method; loss: lost probes x interval; error:
    # outage - real (mean, worst run); ±tol: the worst run's error bars added up (probe
    # ±1 interval, the fault's timestamps, OVS's lag)
    for col in ("fault", "ms", "runs", "void", "real", "outage", "loss", "error", "worst", "±tol",
                "ok"):
        table.add_column(col, justify="right", no_wrap=True)
    lines, all_ok = [], True
    mean = statistics.fmean
    for (kind, hold), runs in trials.items():
        good = [t for t in runs if not t["disturbed"]]
        void = len(runs) - len(good)
        if not good:
            table.add_row(kind, f"{hold:g}", "0", str(void), *["-"] * 7)
            lines.append(f"{kind} {hold:g} ms black hole: every run void (the shared switch "
                         f"or the host stalled near an edge each time)")
            continue
        m = [measured(kind, t) for t in good]
        errors = [x["error_ms"] for x in m]
        worst_run = max(m, key=lambda x: abs(x["error_ms"]))
        worst = worst_run["error_ms"]
        ok = all(x["within_tolerance"] for x in m)
        all_ok &= ok
        table.add_row(
            kind, f"{hold:g}", str(len(good)), str(void),
            f"{mean(t['fault_ms'] for t in good):.2f}",
            f"{mean(x['outage_ms'] for x in m):.2f}",
            f"{mean(x['loss_outage_ms'] for x in m):.1f}",
            f"{mean(errors):+.2f}", f"{worst:+.2f}",
            f"{worst_run['tolerance_ms']:.1f}",  # the worst run's own error bar
            "yes" if ok else "[red]NO[/red]",
        )
        lines.append(
            f"{kind} {hold:g} ms black hole: measured outage {mean(x['outage_ms'] for x in m):.1f} ms "
            f"(loss-derived {mean(x['loss_outage_ms'] for x in m):.1f} ms), "
            f"error {mean(errors):+.1f} ms (worst {worst:+.1f} ms, {len(good)} runs), "
            f"noise floor {max(t['own_noise_floor_ms'] for t in good):.1f} ms"
        )
    console.print(table)
    for line in lines:
        console.print(line, highlight=False)
    return all_ok


if __name__ == "__main__":
    typer.run(main)
