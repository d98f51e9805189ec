"""vclab's command line: check | schema | doctor | up | run | compare | report | plots | clean.

Bad input prints file:line:column: field: problem and exits 2; a failure the user can act on
(missing tool, unconverged fabric) exits 1; nothing prints a traceback unless --debug."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vclab.errors import ConfigError, VclabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Emulate a virtualized cluster's network and measure failover time.")
# emoji off: `:name:` in a user's value must print as typed, not as a picture
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)
PROBLEMS_SHOWN = 100
PREFIX_HELP = ("name prefix of every bridge, link and namespace built (starts with vc): two labs "
               "side by side need different ones; `vclab clean --prefix` removes one's leftovers")


def friendly(fn):
    """Turn vclab's own errors into messages and exit codes; Ctrl-C exits 130 quietly."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            # A generated file can hold thousands of the same mistake: the first ones show it.
            for problem in e.problems[:PROBLEMS_SHOWN]:
                err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
            if len(e.problems) > PROBLEMS_SHOWN:
                last = e.problems[PROBLEMS_SHOWN]
                err.print(f"{last.file}:{last.line or 1}: ... and {len(e.problems) - PROBLEMS_SHOWN} "
                          "more problems", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except VclabError as e:
            err.print(f"vclab: {e}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:
            err.print("vclab: interrupted; everything this run created was removed")
            raise typer.Exit(130)

    return wrapper


CHECK_EXIT = ("Exit status: 0 valid (warnings and notes only inform); 2 the file is wrong (each "
              "problem printed as FILE:LINE:COLUMN: FIELD: what is wrong) or the analysis found "
              "an error, such as a hypervisor missing a network its VMs use (`up` and `run` "
              "would build a cluster that cannot do its job); 1 with --strict when the analysis "
              "found warnings.")


@app.command(help="Validate a cluster or experiment file and analyse the cluster (single points "
                  "of failure, missing networks): everything `up` and `run` would refuse, "
                  "refused here. Nothing is built.\n\n" + CHECK_EXIT)
@friendly
def check(file: Path = typer.Argument(..., help="cluster or experiment YAML"),
          strict: bool = typer.Option(False, help="exit 1 on warnings too (errors always exit 2; "
                                                  "notes only inform)")):
    from vclab.topology.analysis import analyse
    from vclab.topology.loader import check_buildable
    from vclab.topology.spec import Cluster, semantic_problems
    from vclab.yamlfile import load_yaml, position, read_text, validate

    text = read_text(file)  # once: a FIFO or a file being rewritten is read one time only
    data = load_yaml(file, text)
    if isinstance(data, dict) and "experiment" in data:
        # An experiment file: validated with its cluster, nothing built.
        from vclab.experiments.faults import expand_schedule
        from vclab.experiments.loader import load_experiment

        loaded = load_experiment(file, text)
        e = loaded.experiment
        out.print(f"{file}: experiment {e.experiment!r} is valid: {len(e.mechanisms)} mechanisms "
                  f"({', '.join(m.label for m in e.mechanisms)}) x {e.repetitions} repetitions, "
                  f"{len(e.workloads)} workloads, {len(expand_schedule(e, loaded.cluster))} faults; "
                  f"cluster {loaded.cluster.cluster!r}", highlight=False, soft_wrap=True)
        cluster_file = loaded.experiment.cluster_path(loaded.path)
        cluster = loaded.cluster
        if cluster_file is not None:
            file, data = cluster_file, load_yaml(cluster_file, loaded.cluster_text)
        else:
            data = data.get("topology")
    else:
        cluster = validate(Cluster, data, str(file), semantic_problems)
        check_buildable(cluster, data, str(file))  # the file's own mechanism, as `up` runs it
    findings = analyse(cluster)
    out.print(f"{file}: cluster {cluster.cluster!r} is valid: {len(cluster.switches)} switches, "
              f"{len(cluster.hypervisors)} hypervisors, {len(cluster.storage)} storage arrays, "
              f"{len(cluster.management)} management servers, {len(cluster.vms)} VMs, "
              f"{len(cluster.networks)} networks", highlight=False, soft_wrap=True)
    if not findings:
        out.print("analysis: no findings")
        return
    colour = {"error": "red", "warning": "yellow", "note": "cyan"}
    for f in findings:
        line, col = position(data, tuple(f.path)) if getattr(f, "path", None) else (None, None)
        where = f"{file}:{line}:{col}" if line else str(file)
        # Errors go where bad input goes (stderr, exit 2); warnings and notes inform on stdout.
        (err if f.severity == "error" else out).print(
            f"{escape(where)}: [{colour.get(f.severity, 'white')}]{f.severity}[/] {f.code} "
            f"[bold]{escape(f.subject)}[/]: {escape(f.message)}", highlight=False, soft_wrap=True)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "note")}
    out.print(", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items()))
    if counts["error"]:
        raise typer.Exit(2)
    if strict and counts["warning"]:
        raise typer.Exit(1)


@app.command()
@friendly
def schema(output: Optional[Path] = typer.Option(None, "-o", "--output", help="write here"),
           kind: str = typer.Option("cluster", help="cluster or experiment")):
    """Print the JSON schema of cluster or experiment files, for editors that check YAML as it
    is typed."""
    if kind == "cluster":
        from vclab.topology.spec import Cluster as model
    elif kind == "experiment":
        from vclab.experiments.spec import Experiment as model
    else:
        raise typer.BadParameter(f"{kind!r}: write cluster or experiment", param_hint="--kind")
    text = json.dumps(model.model_json_schema(), indent=2)
    if output:
        output.write_text(text + "\n")
        out.print(f"wrote {output}")
    else:
        print(text)


@app.command()
@friendly
def doctor(as_json: bool = typer.Option(False, "--json", help="machine-readable")):
    """What this kernel and userland offer, and what each missing piece means for experiments."""
    from vclab.doctor import best_datapath, probe_all

    caps = probe_all()
    if as_json:
        print(json.dumps({"capabilities": [c.as_dict() for c in caps],
                          "datapath": best_datapath(caps)}, indent=2))
        return
    table = Table(title="vclab doctor")
    for col in ("capability", "", "detail", "without it"):
        table.add_column(col, overflow="fold")
    for c in caps:
        table.add_row(c.name, "[green]yes[/]" if c.available else "[red]no[/]", c.detail,
                      "" if c.available else c.missing_means)
    out.print(table)
    out.print(f"datapath the build uses: [bold]{best_datapath(caps)}[/]")


def _matrix_table(network: str, matrix: dict) -> Table:
    members = sorted({a for a, _ in matrix} | {b for _, b in matrix})
    table = Table(title=f"reachability on {network}", title_justify="left")
    table.add_column("from \\ to")
    for m in members:
        table.add_column(m, justify="center")
    for a in members:
        cells = []
        for b in members:
            if a == b:
                cells.append("·")
            else:
                cells.append("[green]ok[/]" if matrix.get((a, b)) else "[red]FAIL[/]")
        table.add_row(a, *cells)
    return table


@app.command()
@friendly
def up(file: Path = typer.Argument(..., help="cluster YAML"),
       mechanism: Optional[str] = typer.Option(None, help="loop protection: overrides the file's"),
       cli: bool = typer.Option(False, "--cli", help="leave the Mininet CLI open after the checks"),
       prefix: str = typer.Option("vc", help=PREFIX_HELP),
       servers: Optional[str] = typer.Option(
           None, help="cluster mode: spread the cluster over these servers (a,b or "
                      "localhost=ADDR,b=ADDR; ssh + passwordless sudo to each)"),
       pin: List[str] = typer.Option(
           [], help="with --servers: put a switch or server on a server (tor-a=b); repeatable")):
    """Build the cluster, check reachability on every network and VLAN isolation, tear down."""
    from vclab.lab.lab import Lab
    from vclab.topology.loader import load_cluster
    from vclab.lab.placement import describe

    cluster = load_cluster(file)
    pins = {}
    for item in pin:
        node, sep, server = item.partition("=")
        if not sep or not node or not server:
            raise VclabError(f"--pin {item!r}: write NODE=SERVER, e.g. tor-a=b")
        pins[node.strip()] = server.strip()
    if pins and not servers:
        raise VclabError("--pin needs --servers")
    with Lab(cluster, mechanism=mechanism, cli=False, prefix=prefix, servers=servers,
             pins=pins) as lab:
        out.print(f"built {cluster.cluster!r} in {lab.build_seconds:.1f} s on the "
                  f"[bold]{lab.datapath}[/] datapath, fabric: {lab.mechanism}")
        if lab.placement is not None:
            for line in describe(lab.placement, lab.plan):
                out.print(f"  {line}")
        matrices = lab.reachability()
        failures = 0
        for network, matrix in matrices.items():
            out.print(_matrix_table(network, matrix))
            failures += sum(1 for ok in matrix.values() if not ok)
        iso = lab.isolation()
        table = Table(title="isolation (a VM-network host must not reach management)", title_justify="left")
        for col in ("host", "network", "reached"):
            table.add_column(col)
        leaks = 0
        for host, network, reached in iso:
            leaks += bool(reached)
            table.add_row(host, network, "[red]YES: leak[/]" if reached else "[green]no[/]")
        out.print(table)
        if cli:
            lab.interact()
    if failures or leaks:
        err.print(f"vclab: {failures} unreachable pairs, {leaks} isolation leaks")
        raise typer.Exit(1)
    out.print("every network reaches every member; management is isolated")


def _budget_seconds(text: str) -> float:
    """"10m", "90s", "1h", "600" (seconds) -> seconds; BadParameter names the option."""
    import re

    from vclab.units import parse_ms

    t = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(h|m)", t)
    try:
        if m:
            seconds = float(m[1]) * (3600 if m[2] == "h" else 60)
        elif re.fullmatch(r"\d+(?:\.\d+)?", t):
            seconds = float(t)
        else:
            seconds = parse_ms(t) / 1e3
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise typer.BadParameter(f"{text!r}: write a time such as 10m, 600s or 1h", param_hint="--budget")
    return seconds


@app.command()
@friendly
def run(experiment: Path = typer.Argument(..., help="experiment YAML"),
        results: Optional[Path] = typer.Option(None, help="results directory (default: results/NAME)"),
        resume: bool = typer.Option(False, "--resume", help="continue the last interrupted run"),
        repetitions: Optional[int] = typer.Option(
            None, help="run exactly this many rounds (each mechanism once per round), no budget"),
        budget: Optional[str] = typer.Option(
            None, help="add rounds until every verdict is clear or this much time is spent "
                       "(10m, 600s, 1h; default 10m, sized for the main job); the file's "
                       "repetitions are the least number of rounds"),
        report_too: bool = typer.Option(True, "--report/--no-report", help="write the HTML report at the end"),
        shard: str = typer.Option("1/1", help="run only shard I of N (I/N) of the repetitions; `vclab merge` joins them"),
        prefix: str = typer.Option("vc", help=PREFIX_HELP),
        scale: str = typer.Option("auto", help="time scale 1/K: auto (from this machine's measured "
                                               "capacity per path), K or 1/K; rates, memory, disks "
                                               "and dirty rates run K times smaller, timers as they are")):
    """Run an experiment: mechanisms interleaved round by round, faults on schedule, results
    stored; ends on one verdict line per fault and traffic class (the full table: `vclab compare`)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vclab.experiments.loader import load_experiment
    from vclab.experiments.runner import DEFAULT_BUDGET_S, Runner
    from vclab.results.summary import progress_line

    try:
        i, n = (int(x) for x in shard.split("/"))
        if not 1 <= i <= n:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"{shard!r}: write I/N with 1 <= I <= N, e.g. 2/4", param_hint="--shard")
    if repetitions is not None and budget is not None:
        raise typer.BadParameter("give --repetitions (a fixed count) or --budget, not both",
                                 param_hint="--budget")
    if budget is not None and n > 1:
        raise typer.BadParameter("a budget decides rounds on one machine; shards run a fixed "
                                 "count (--repetitions)", param_hint="--budget")
    from vclab.experiments.scale import parse_scale

    try:
        k = parse_scale(scale)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--scale") from None
    loaded = load_experiment(experiment)
    e = loaded.experiment
    reps = repetitions or e.repetitions
    budget_s = None if (repetitions is not None or n > 1) else (
        _budget_seconds(budget) if budget is not None else DEFAULT_BUDGET_S)
    results = results or Path("results") / e.experiment
    per_round = len(e.mechanisms)
    total = len(range(i - 1, per_round * reps, n))
    started = time.monotonic()
    # A terminal gets a live bar; a log (CI, a pipe) gets one plain line per step instead,
    # because a bar drawn to a file shows nothing until the end.
    live = out.is_terminal
    plan = (f"{reps} rounds" if budget_s is None else
            f"at least {reps} rounds, more while a verdict is unclear, within {budget_s / 60:g} min")
    out.print(f"{e.experiment}: {per_round} mechanisms ({', '.join(m.label for m in e.mechanisms)}), "
              f"{plan}", highlight=False, soft_wrap=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, disable=not live) as bar:
        task = bar.add_task(e.experiment, total=total)

        def progress(mechanism: str, index: int, phase: str) -> None:
            if not mechanism:  # the runner's word on a whole round
                say(phase)
                return
            of = f"/{reps}" if budget_s is None else ""
            bar.update(task, description=f"{mechanism} {index}{of}: {phase}")
            if phase in ("ok", "partial", "failed"):
                if budget_s is not None and bar.tasks[0].completed + 1 >= bar.tasks[0].total:
                    bar.update(task, total=bar.tasks[0].total + per_round)
                bar.advance(task)
                if phase != "ok":
                    bar.console.print(f"[red]{mechanism} repetition {index} {phase}[/] "
                                      f"(`vclab compare` says why)")
            if not live and (phase in ("building", "ok", "partial", "failed")):
                say(f"{mechanism} repetition {index}{of}: {phase}")

        def say(text: str) -> None:
            if live:
                bar.console.print(text, highlight=False)
            else:
                print(progress_line(time.monotonic() - started, text), flush=True)

        summary = Runner(loaded, results, resume=resume, repetitions=reps, progress=progress,
                         shard=(i, n), lab_prefix=None if prefix == "vc" else prefix,
                         budget_s=budget_s, scale="auto" if k is None else k).run()
    stop = f"; stopped: {summary.stopped_because}" if summary.stopped_because else ""
    out.print(f"{summary.ok} repetitions ok, {summary.failed} failed, {summary.partial} partial in "
              f"{summary.rounds} rounds, {summary.seconds:.0f} s{stop}; results in {summary.results}",
              highlight=False, soft_wrap=True)
    if summary.interrupted:
        err.print("vclab: interrupted; finished repetitions are kept: `vclab run --resume` continues")
        raise typer.Exit(130)
    from vclab.results.cli import report_cmd, summary_cmd

    path = report_cmd(summary.results, None, summary.run_id) if report_too else None
    summary_cmd(summary.results, summary.run_id, out, report=path)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
@friendly
def compare(results: Path = typer.Argument(..., help="a results directory (or its results.db)"),
            fmt: str = typer.Option("table", "--format", help="table, csv or json"),
            run: Optional[int] = typer.Option(None, help="run id (default: the latest)")):
    """Compare mechanisms: a row per metric and traffic class, the winner per row."""
    from vclab.results.cli import compare_cmd

    compare_cmd(results, fmt, run, out)


@app.command()
@friendly
def report(results: Path = typer.Argument(..., help="a results directory (or its results.db)"),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file to write"),
           run: Optional[int] = typer.Option(None, help="run id (default: the latest)")):
    """Write one self-contained HTML report: experiment, environment, tables, plots, findings."""
    from vclab.results.cli import report_cmd

    path = report_cmd(results, output, run)
    out.print(f"report: {path}", highlight=False)


@app.command()
@friendly
def plots(results: Path = typer.Argument(..., help="a results directory (or its results.db)"),
          outdir: Optional[Path] = typer.Option(None, "-o", "--outdir", help="where the PNGs go"),
          run: Optional[int] = typer.Option(None, help="run id (default: the latest)")):
    """Re-draw every plot of a run from the results store."""
    from vclab.results.cli import plots_cmd

    for path in plots_cmd(results, outdir, run):
        out.print(str(path), highlight=False)


@app.command()
@friendly
def merge(shards: list[Path] = typer.Argument(..., help="results directories of the shards"),
          into: Path = typer.Option(..., "--into", help="results directory to merge into")):
    """Join the shards of one experiment (`vclab run --shard I/N` on several machines)."""
    from vclab.results.merge import merge as do_merge

    run_id, copied = do_merge(shards, into)
    out.print(f"merged {copied} repetitions from {len(shards)} shards into run {run_id} of {into}",
              highlight=False)


@app.command()
@friendly
def clean(prefix: str = typer.Option("vc", help="only objects named with this prefix (a lab "
                                                "built with --prefix); processes: those recorded "
                                                "in VCLAB_STATE_DIR (default /run/vclab)")):
    """Remove every namespace, veth, bridge and process vclab created (its own prefix only)."""
    from vclab.lab.clean import clean as do_clean

    removed = do_clean(prefix=prefix)
    if removed:
        for item in removed:
            out.print(f"removed {item}", highlight=False)
    else:
        out.print("nothing to clean")


def main() -> None:  # pragma: no cover
    """The `vclab` command. It owns SIGINT, SIGTERM and SIGHUP from its first line, not from when
    a run's runner starts: a run started from a script's background job inherits SIGINT ignored,
    and a `kill -INT` in its first second (imports, capability probes, opening the store) was
    dropped and the run went on to its end (test_chaos_every_process_kind, seed 431179)."""
    from vclab.lab.signals import interrupts

    try:
        with interrupts.interruptible():
            app()
    except KeyboardInterrupt:
        sys.exit(130)
