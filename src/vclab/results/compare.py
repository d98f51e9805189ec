"""`vclab compare`: one row per (metric, traffic class[, fault]), one column per mechanism.

A cell summarizes the repetitions that finished ok (and the "partial" ones, except in the rows
of the workload whose outcome failed). When several workloads measure the same metric on the
same network in one repetition (two probes on storage-a), that repetition counts with its
worst value: the cluster had that outage. Each row's verdict comes from the paired differences
per round (`verdicts.decide`): a win, a tie inside the equivalence margin, or unclear with
about how many more repetitions would settle it; `clear` is true for a win or a tie.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.table import Table

from vclab.results.model import WORKLOAD_FAILED, MetricRow, RepetitionInfo, RunInfo
from vclab.results.stats import Summary, summarize
from vclab.results.store import ResultStore
from vclab.results.verdicts import Verdict, decide
from vclab.workloads.registry import METRICS, Direction, metric_info


@dataclass
class Row:
    metric: str
    label: str
    traffic_class: str
    fault: str
    unit: str
    direction: Direction
    cells: dict[str, Summary]  # mechanism -> summary over its ok repetitions
    winners: list[str] = field(default_factory=list)  # several on a tie; empty: no contest
    verdict: Verdict = field(default_factory=lambda: Verdict("none"))

    @property
    def clear(self) -> bool:
        """A win or a tie: the paired intervals settle the row."""
        return self.verdict.clear


Key = tuple[str, str, str]  # (metric, traffic class, fault)
Failed = dict[int, set[tuple[str, str]]]  # repetition id -> (kind, traffic class) whose outcome failed


@dataclass
class Comparison:
    run: RunInfo
    mechanisms: list[str]
    rows: list[Row]
    excluded: list[RepetitionInfo]  # failed or interrupted: not in any cell
    confidence: float = 0.95
    partial: list[RepetitionInfo] = field(default_factory=list)  # in every row but their failed workload's
    failed_workloads: dict[int, list[dict]] = field(default_factory=dict)  # repetition id -> what failed
    values: dict[Key, dict[str, list[float]]] = field(default_factory=dict)  # per_repetition() of the run

    @property
    def ci_text(self) -> str:
        return f"CI: {self.confidence:.0%} t interval of the mean"

    def counts(self) -> dict[str, int]:
        """Rows with a contest: clear (wins + ties) and unclear."""
        kinds = [r.verdict.kind for r in self.rows if r.verdict.kind != "none"]
        return {"rows": len(kinds), "clear": kinds.count("win") + kinds.count("tie"),
                "wins": kinds.count("win"), "ties": kinds.count("tie"),
                "unclear": kinds.count("unclear")}


def _worst(values: list[float], direction: Direction) -> float:
    return min(values) if direction == "higher" else max(values)




def per_round(rows: Iterable[MetricRow], failed: Failed | None = None) -> dict[Key, dict[str, dict[int, float]]]:
    """Pure: (metric, class, fault) -> mechanism -> round index -> the round's worst value.

    Ok repetitions count everywhere; a "partial" one everywhere except in the rows its failed
    workload takes part in (there it would count with the other workloads' values only)."""
    failed = failed or {}
    rows = [r for r in rows if r.status in ("ok", "partial")]
    takes_part: dict[Key, set[tuple[str, str]]] = defaultdict(set)
    for r in rows:
        takes_part[(r.name, r.traffic_class, r.fault)].add((r.kind, r.traffic_class))
    grouped: dict[Key, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        key = (r.name, r.traffic_class, r.fault)
        if r.status == "partial" and failed.get(r.repetition_id, set()) & takes_part[key]:
            continue
        grouped[key][r.mechanism][r.index].append(r.value)
    return {key: {mech: {i: _worst(v, metric_info(key[0]).direction) for i, v in sorted(reps.items())}
                  for mech, reps in by_mech.items()}
            for key, by_mech in grouped.items()}


def per_repetition(rows: Iterable[MetricRow], failed: Failed | None = None) -> dict[Key, dict[str, list[float]]]:
    """Pure: (metric, class, fault) -> mechanism -> one value per counted repetition (its worst)."""
    return {key: {mech: list(v.values()) for mech, v in by_mech.items()}
            for key, by_mech in per_round(rows, failed).items()}


def build_rows(rows: Iterable[MetricRow], mechanisms: list[str], confidence: float = 0.95,
               failed: Failed | None = None) -> list[Row]:
    """Pure: metric rows -> comparison rows with verdicts (ok and partial repetitions count)."""
    rows = [r for r in rows if r.status in ("ok", "partial")]
    units: dict[Key, str] = {}
    fault_order: dict[str, int] = {}
    for r in rows:
        units.setdefault((r.name, r.traffic_class, r.fault), r.unit)
        fault_order.setdefault(r.fault, len(fault_order))
    values = per_round(rows, failed)
    order = {name: i for i, name in enumerate(METRICS)}
    keys = sorted(values, key=lambda k: (order.get(k[0], len(order)), k[0], k[1], fault_order[k[2]]))
    out = []
    for key in keys:
        info = metric_info(key[0])
        by_mech = values[key]
        cells = {m: summarize(list(by_mech.get(m, {}).values()), confidence) for m in mechanisms}
        verdict = decide({m: by_mech.get(m, {}) for m in mechanisms}, info.direction, units[key])
        row = Row(key[0], info.label, key[1], key[2], units[key], info.direction, cells,
                  verdict=verdict)
        row.winners = _winners(row)
        out.append(row)
    return out


def _winners(row: Row) -> list[str]:
    """A win's winner, a tie's mechanisms; when unclear, the best median (several if equal)."""
    v = row.verdict
    if v.kind == "win":
        return [v.best]
    if v.kind == "tie":
        return list(v.tied)
    if v.kind == "none":
        return []
    scored = {m: s for m, s in row.cells.items() if s.n > 0}
    sign = 1 if row.direction == "lower" else -1
    best = min(sign * s.median for s in scored.values())
    return [m for m, s in scored.items() if abs(sign * s.median - best) <= 1e-9 * max(1.0, abs(best))]


def failed_workloads(store: ResultStore, reps: Iterable[RepetitionInfo]) -> dict[int, list[dict]]:
    """Repetition id -> the workloads whose outcome failed in it ("partial" repetitions)."""
    return {r.id: [{"workload": e.workload, **e.detail} for e in store.events(r.id, kind=WORKLOAD_FAILED)]
            for r in reps if r.status == "partial"}


def compare(store: ResultStore, run_id: int | None = None, confidence: float = 0.95) -> Comparison:
    run = store.run(run_id)
    reps = store.repetitions(run.id)
    mechanisms = store.mechanisms(run.id)
    failed = failed_workloads(store, reps)
    keys = {rid: {(d.get("kind", ""), d.get("traffic_class", "")) for d in details}
            for rid, details in failed.items()}
    metric_rows = store.metric_rows(run.id)
    return Comparison(run, mechanisms, build_rows(metric_rows, mechanisms, confidence, keys),
                      [r for r in reps if r.status not in ("ok", "partial")], confidence,
                      [r for r in reps if r.status == "partial"], failed,
                      per_repetition(metric_rows, keys))


# ---- formatting ----

def scale_for(value: float, unit: str) -> tuple[float, str]:
    """(divisor, unit label) a person reads best for this value: ms or s, Mbit/s or Gbit/s."""
    if unit == "ms":
        return (1e3, "s") if abs(value) >= 1000 else (1.0, "ms")
    if unit == "bit/s":
        for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= scale:
                return scale, f"{prefix}bit/s"
    return 1.0, unit


def format_number(x: float) -> str:
    if float(x).is_integer() or abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def format_value(value: float | None, unit: str) -> str:
    """3 significant digits in the unit a person reads: 15.2 ms, 1.93 s, 9.41 Gbit/s, 3."""
    if value is None:
        return "-"
    div, label = scale_for(value, unit)
    text = format_number(value / div)
    return f"{text} {label}" if label else text


def format_cell(s: Summary, unit: str) -> tuple[str, str, str]:
    """(median with unit, "p95 .., max ..", "CI ..-.. (n=..)"), the last two in the median's unit
    so a cell reads at a glance: 10.5 s / p95 10.8, max 10.8 / CI 7.11-13.9 (n=2)."""
    if s.n == 0:
        return "-", "", ""
    div, _ = scale_for(s.median, unit)
    num = lambda v: format_number(v / div)  # noqa: E731
    spread = f"p95 {num(s.p95)}, max {num(s.max)}"
    if s.ci_low is None:
        ci = f"n={s.n}: no CI"
    else:
        # Every metric here is a duration, count or rate: the interval cannot go below zero.
        ci = f"CI {num(max(0.0, s.ci_low))}-{num(s.ci_high)} (n={s.n})"
    return format_value(s.median, unit), spread, ci


def verdict_text(row: Row) -> str:
    """"sdn wins by 12.3 ms over rstp", "tie: sdn, rstp (margin 2 ms)", "unclear (sdn ahead),
    about 3 more repetitions needed"; "" when there is no contest."""
    v = row.verdict
    if v.kind == "none":
        return "" if row.direction is None else "no contest"
    margin = format_value(v.margin, row.unit)
    if v.kind == "win":
        return f"{v.best} wins by {format_value(v.by, row.unit)} over {v.runner_up}"
    if v.kind == "tie":
        return f"tie: {', '.join(v.tied)} (margin {margin})"
    lead = f"{v.ahead} ahead" if v.ahead else "level so far"
    return f"unclear ({lead}), about {v.more} more repetitions needed"


def winner_text(row: Row) -> str:
    return verdict_text(row)


def row_title(row: Row) -> str:
    where = row.traffic_class or "-"
    return f"{where} @ {row.fault}" if row.fault else where


def render_table(c: Comparison) -> Table:
    """The comparison as a rich table: median, then p95/max and n in each cell; the verdict."""
    table = Table(title=f"{c.run.experiment} (run {c.run.id}): median, p95 and max over repetitions; "
                        f"{VERDICT_TEXT}", title_justify="left", show_lines=True)
    table.add_column("metric")
    table.add_column("network")
    for m in c.mechanisms:
        table.add_column(m, justify="right")
    table.add_column("verdict")
    for row in c.rows:
        cells = []
        for m in c.mechanisms:
            med, spread, ci = format_cell(row.cells[m], row.unit)
            ci = f"n={row.cells[m].n}" if row.cells[m].n else ""
            style = "bold green" if m in row.winners and len(row.winners) == 1 else ""
            first = f"[{style}]{med}[/]" if style else med
            cells.append("\n".join(x for x in (first, f"[dim]{spread}[/]" if spread else "",
                                               f"[dim]{ci}[/]" if ci else "") if x))
        table.add_row(row.label, row_title(row), *cells, verdict_text(row))
    return table


VERDICT_TEXT = ("verdicts from the paired differences per round: 95 % Hodges-Lehmann interval "
                "(exact from 6 rounds, Student's t from 3 to 5); a tie lies inside the equivalence margin")


def verdict_record(row: Row) -> dict:
    v = row.verdict
    return {"verdict": v.kind, "verdict_text": verdict_text(row), "margin": v.margin,
            "by": v.by, "runner_up": v.runner_up, "more_repetitions": v.more,
            "pairs": {m: {"n": p.n, "estimate": p.estimate, "low": p.low, "high": p.high,
                          "method": p.method}
                      for m, p in v.pairs.items()}}


def to_records(c: Comparison) -> list[dict]:
    """Long form: one record per (row, mechanism), what a script or pandas wants."""
    out = []
    for row in c.rows:
        for mech, s in row.cells.items():
            out.append({"metric": row.metric, "label": row.label, "traffic_class": row.traffic_class,
                        "fault": row.fault, "unit": row.unit, "direction": row.direction or "",
                        "mechanism": mech, **s.as_dict(), "winner": mech in row.winners,
                        "clear_winner": row.clear and mech in row.winners,
                        "verdict": row.verdict.kind, "margin": row.verdict.margin})
    return out


def to_csv(c: Comparison) -> str:
    records = to_records(c)
    buf = io.StringIO()
    fields = list(records[0]) if records else ["metric", "traffic_class", "fault", "mechanism"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def to_json(c: Comparison) -> str:
    return json.dumps({
        "run": {"id": c.run.id, "experiment": c.run.experiment, "status": c.run.status},
        "mechanisms": c.mechanisms,
        "rows": [{"metric": r.metric, "label": r.label, "traffic_class": r.traffic_class,
                  "fault": r.fault, "unit": r.unit, "direction": r.direction,
                  "winners": r.winners, "clear": r.clear, **verdict_record(r),
                  "cells": {m: s.as_dict() for m, s in r.cells.items()}} for r in c.rows],
        "verdicts": c.counts(),
        "excluded": [{"mechanism": r.mechanism, "index": r.index, "status": r.status,
                      "reason": r.reason} for r in c.excluded],
        "partial": [{"mechanism": r.mechanism, "index": r.index, "reason": r.reason,
                     "failed": c.failed_workloads.get(r.id, [])} for r in c.partial],
    }, indent=2)
