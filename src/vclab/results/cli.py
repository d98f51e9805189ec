"""What `vclab compare` and `vclab report` do, as plain functions the typer app calls."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from vclab.errors import VclabError
from vclab.results.compare import compare, render_table, to_csv, to_json
from vclab.results.store import ResultStore, db_path

FORMATS = ("table", "csv", "json")


def _open(results: Path) -> ResultStore:
    if not db_path(results).exists():
        raise VclabError(f"{results}: no results here (expected {db_path(results)}); "
                         f"`vclab run` writes them")
    return ResultStore(results, create=False)


def compare_cmd(results: Path, fmt: str = "table", run_id: int | None = None,
                console: Console | None = None) -> str:
    """Print the comparison of the latest (or given) run as a table, CSV or JSON; return the
    CSV/JSON text (empty for the table)."""
    if fmt not in FORMATS:
        raise VclabError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    with _open(results) as store:
        c = compare(store, run_id)
    if fmt == "csv":
        text = to_csv(c)
    elif fmt == "json":
        text = to_json(c)
    else:
        con = console or Console()
        con.print(render_table(c))
        for rep in c.excluded:
            con.print(f"[red]left out:[/] {rep.mechanism} repetition {rep.index} {rep.status}: "
                      f"{rep.reason or 'no reason recorded'}", highlight=False)
        return ""
    print(text, end="" if text.endswith("\n") else "\n")
    return text


def summary_cmd(results: Path, run_id: int | None = None, console: Console | None = None,
                report: Path | None = None) -> list[str]:
    """Print the verdict summary `vclab run` ends on; return its lines."""
    from vclab.results.summary import summary_lines

    with _open(results) as store:
        c = compare(store, run_id)
    lines = summary_lines(c, c.values, None if report is None else str(report))
    con = console or Console()
    for line in lines:
        con.print(line, highlight=False, markup=False, soft_wrap=True)
    return lines


def report_cmd(results: Path, output: Path | None = None, run_id: int | None = None) -> Path:
    """Write the self-contained HTML report (default: report.html beside the store)."""
    from vclab.results.report import write_report

    with _open(results) as store:
        return write_report(store, output or store.path.parent / "report.html", run_id)


def plots_cmd(results: Path, outdir: Path | None = None, run_id: int | None = None) -> list[Path]:
    """Write every plot as a PNG file (default: plots/ beside the store)."""
    from vclab.results.plots import write_plots

    with _open(results) as store:
        run = store.run(run_id)
        return write_plots(store, run.id, outdir or store.path.parent / "plots")
