"""What `vclab run` ends on: one verdict line per fault x traffic class, then three lines
(verdict counts, the worst noise floor, the report), all within 100 columns. Pure.

    link esx1.vmnic0 down@6s vmotion    outage      clear   sdn by 12.3 ms over rstp
    ...
    verdicts: C clear of R rows (W wins, T ties, U unclear)
    noise floor: p95 X ms worst (network N, mechanism M)
    report: PATH

R counts every row of `vclab compare` that has a contest, not only the lines above it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vclab.results.compare import Comparison, Row, format_number, format_value
from vclab.results.stats import percentile
from vclab.workloads.registry import METRICS, metric_info

WIDTH = 100
WHOLE_RUN = "whole run"


def headline_rows(c: Comparison) -> list[Row]:
    """Per (fault, traffic class), the row a reader looks at first: the first metric in the
    table's order that has a contest. Faults in the order they happened; whole-run rows last."""
    order = {name: i for i, name in enumerate(METRICS)}
    fault_order: dict[str, int] = {}
    for r in c.rows:
        if r.fault:
            fault_order.setdefault(r.fault, len(fault_order))
    best: dict[tuple[str, str], Row] = {}
    for r in c.rows:
        if r.verdict.kind == "none":
            continue
        key = (r.fault, r.traffic_class)
        if key not in best or order.get(r.metric, len(order)) < order.get(best[key].metric, len(order)):
            best[key] = r
    return sorted(best.values(), key=lambda r: (r.fault == "", fault_order.get(r.fault, 0),
                                                r.traffic_class))


def _short(metric: str) -> str:
    """The name a summary line shows for the metric that heads it: short, as the metric declares."""
    return metric_info(metric).short or metric


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def outcome_text(row: Row, mechanisms: list[str]) -> tuple[str, str]:
    """(clear | tie | unclear, winner and margin) for one summary line."""
    v = row.verdict
    if v.kind == "win":
        return "clear", f"{v.best} by {format_value(v.by, row.unit)} over {v.runner_up}"
    if v.kind == "tie":
        who = "all" if set(v.tied) >= {m for m, s in row.cells.items() if s.n} else ", ".join(v.tied)
        return "tie", f"{who} within ±{format_value(v.margin, row.unit)}"
    return "unclear", f"{v.ahead + ' ahead' if v.ahead else 'level so far'}; ~{v.more} more reps"


def verdict_lines(c: Comparison, width: int = WIDTH) -> list[str]:
    rows = headline_rows(c)
    if not rows:
        return []
    fw = min(28, max(len(r.fault or WHOLE_RUN) for r in rows))
    cw = min(12, max(len(r.traffic_class or "-") for r in rows))
    mw = max(len(_short(r.metric)) for r in rows)
    out = []
    for r in rows:
        status, text = outcome_text(r, c.mechanisms)
        line = (f"{_fit(r.fault or WHOLE_RUN, fw):<{fw}} {_fit(r.traffic_class or '-', cw):<{cw}} "
                f"{_short(r.metric)[:mw]:<{mw}} {status:<7} {text}")
        out.append(_fit(line, width))
    return out


def counts_line(c: Comparison) -> str:
    n = c.counts()
    return (f"verdicts: {n['clear']} clear of {n['rows']} rows ({n['wins']} wins, {n['ties']} ties, "
            f"{n['unclear']} unclear)")


@dataclass(frozen=True)
class Floor:
    p95: float
    network: str
    mechanism: str


def worst_noise_floor(c: Comparison, values: dict[tuple[str, str, str], dict[str, list[float]]]) -> Floor | None:
    """The largest p95 over repetitions of any (network, mechanism) noise floor."""
    floors = [Floor(percentile(v, 95), key[1], mech) for key, by_mech in values.items()
              if key[0] == "noise_floor_ms" for mech, v in by_mech.items() if v]
    return max(floors, key=lambda f: f.p95, default=None)


def floor_line(floor: Floor | None) -> str:
    if floor is None:
        return "noise floor: not measured (no quiet stretch before the first scheduled event)"
    return (f"noise floor: p95 {format_number(floor.p95)} ms worst "
            f"(network {floor.network}, mechanism {floor.mechanism})")


def summary_lines(c: Comparison, values: dict[tuple[str, str, str], dict[str, list[float]]],
                  report: str | None, width: int = WIDTH) -> list[str]:
    lines = verdict_lines(c, width) + [counts_line(c), floor_line(worst_noise_floor(c, values))]
    if report is not None:
        lines.append(f"report: {report}")
    return lines


def progress_line(elapsed_s: float, text: str) -> str:
    """A progress line for logs (stdout not a terminal): elapsed time first, so a CI log reads
    as a timeline."""
    m, s = divmod(int(elapsed_s), 60)
    return f"[{m:02d}:{s:02d}] {text}"


def lines_fit(lines: Iterable[str], width: int = WIDTH) -> bool:
    return all(len(line) <= width for line in lines)
