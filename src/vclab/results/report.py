"""`vclab report`: one self-contained HTML file (inline CSS, PNGs embedded as base64) with the
findings in plain words, the comparison, the plots, every repetition, the environment and the
experiment as written. It references nothing outside itself, so it can be mailed or archived.

The findings come from small rules over the comparison (`findings()`, pure): each rule says one
thing a cluster operator would act on, with the numbers behind it.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from vclab.errors import ConfigError
from vclab.results.compare import (
    Comparison,
    Row,
    compare,
    format_cell,
    format_value,
    per_repetition,
    row_title,
    verdict_text,
    winner_text,
)
from vclab.results.model import RAN_AGAIN, WALL_CLOCK_STEP, RunInfo
from vclab.results.plots import Plot, all_plots
from vclab.results.store import FORMAT_VERSION, ResultStore
from vclab.units import parse_ms
from vclab.yamlfile import load_yaml


@dataclass(frozen=True)
class Finding:
    severity: Literal["bad", "good", "note"]
    text: str


@dataclass(frozen=True)
class Context:
    """What the rules need beyond the comparison, read from the run's stored files."""

    network_kinds: dict[str, str]  # network -> management | vmotion | storage | vm
    ha_failure_ms: float | None
    ha_isolation_ms: float | None
    values: dict[tuple[str, str, str], dict[str, list[float]]]  # per_repetition() of the run


def _load(text: str, name: str) -> Any:
    try:
        return load_yaml(name, text=text) if text.strip() else None
    except ConfigError:
        return None  # a report of what ran must not fail on the file that described it


def network_kinds(topology_yaml: str) -> dict[str, str]:
    """network -> kind from the cluster file: `kind:` or, when absent, the network's own name."""
    data = _load(topology_yaml, "topology")
    nets = data.get("networks") if isinstance(data, dict) else None
    if not isinstance(nets, dict):
        return {}
    return {str(n): str((v or {}).get("kind", n)) if isinstance(v, dict) else str(n) for n, v in nets.items()}


def ha_times(run: RunInfo) -> tuple[float | None, float | None]:
    """(failure detection, isolation) in ms: what the runner resolved, else the experiment file's
    heartbeats settings; None when neither says (the rules that need them stay silent)."""
    failure = run.settings.get("ha_failure_ms")
    isolation = run.settings.get("ha_isolation_ms")
    data = _load(run.experiment_yaml, "experiment")
    for w in (data.get("workloads") or []) if isinstance(data, dict) else []:
        hb = w.get("heartbeats") if isinstance(w, dict) else None
        if isinstance(hb, dict):
            try:
                if failure is None and hb.get("failure_after") is not None:
                    failure = parse_ms(hb["failure_after"])
                if isolation is None and hb.get("isolation_after") is not None:
                    isolation = parse_ms(hb["isolation_after"])
            except ValueError:
                pass
    return (None if failure is None else float(failure)), (None if isolation is None else float(isolation))


def _ms(v: float) -> str:
    return format_value(v, "ms")


def _ratio(a: float, b: float) -> str:
    r = a / b
    return f"{r:,.0f}x" if r >= 10 else f"{r:.1f}x"


def _where(row: Row) -> str:
    return f"{row.traffic_class} after {row.fault}" if row.fault else row.traffic_class


def findings(c: Comparison, ctx: Context) -> list[Finding]:
    """Plain-word findings, most serious first."""
    out: list[Finding] = []
    rows = {(r.metric, r.traffic_class, r.fault): r for r in c.rows}

    for rep in c.partial:  # counted, except where the failed workload took part
        what = ", ".join(d.get("workload", "?") for d in c.failed_workloads.get(rep.id, [])) or "a workload"
        out.append(Finding("bad", f"{rep.mechanism} repetition {rep.index} is partial: {what} could "
                                  f"not be read ({rep.reason.strip('; ')}). It is left out of that "
                                  f"workload's rows and counted in the others."))
    for rep in c.excluded:  # what is missing from every figure below, and why
        left = sum(1 for r in c.excluded if r.mechanism == rep.mechanism)
        out.append(Finding("bad", f"{rep.mechanism} repetition {rep.index} {rep.status}: "
                                  f"{rep.reason or 'no reason recorded'}. It is left out of the "
                                  f"figures ({left} of {rep.mechanism}'s repetitions excluded)."))

    # Storage: the longest the datastore was unreachable, against HA's isolation time.
    stalls: dict[str, tuple[float, str]] = {}
    for r in c.rows:
        storage = r.metric in ("longest_stall_ms", "late_stall_ms") or (
            r.metric == "outage_ms" and ctx.network_kinds.get(r.traffic_class, r.traffic_class) == "storage")
        if not storage:
            continue
        what = {"longest_stall_ms": "iSCSI stall", "late_stall_ms": "later iSCSI stall"}.get(
            r.metric, f"storage outage on {r.traffic_class}")
        for mech, s in r.cells.items():
            if s.n and (mech not in stalls or s.median > stalls[mech][0]):
                stalls[mech] = (s.median, f"{what}, median of {s.n}")
    if stalls and ctx.ha_isolation_ms is not None:
        iso = ctx.ha_isolation_ms
        for mech, (stall, what) in stalls.items():
            if stall > iso:
                out.append(Finding("bad", f"{mech}: {_ms(stall)} storage stall ({what}) exceeds the "
                                          f"HA isolation time ({_ms(iso)}): VMs would be restarted."))
            else:
                out.append(Finding("good", f"{mech}: storage stalls for {_ms(stall)} at most ({what}), "
                                           f"within the HA isolation time ({_ms(iso)})."))

    # Heartbeats: a host declared failed that never failed is an HA false positive.
    for key, by_mech in ctx.values.items():
        if key[0] != "false_failures":
            continue
        for mech, vals in by_mech.items():
            hit = sum(1 for v in vals if v > 0)
            if hit:
                detect = f" (failure detection {_ms(ctx.ha_failure_ms)})" if ctx.ha_failure_ms else ""
                most = f"; up to {max(vals):.0f} hosts in one repetition" if max(vals) > 1 else ""
                out.append(Finding("bad", f"{mech}: HA declared a healthy host failed in {hit} of "
                                          f"{len(vals)} repetitions{detect}{most}."))

    # Outage: who restores traffic first on each network, and how far behind the others are.
    near_floor: dict[str, list[tuple[str, float, float]]] = {}
    for r in c.rows:
        if r.metric != "outage_ms" or len(r.winners) != 1:
            continue
        best = r.cells[r.winners[0]]
        others = sorted(((m, s) for m, s in r.cells.items() if s.n and m != r.winners[0]),
                        key=lambda ms: ms[1].median)
        if not others:
            continue
        behind = ", ".join(f"{m} {_ms(s.median)} ({_ratio(s.median, best.median)})" if best.median > 0
                           else f"{m} {_ms(s.median)}" for m, s in others)
        out.append(Finding("note", f"{_where(r)}: {r.winners[0]} restores traffic first "
                                   f"({_ms(best.median)} median outage); {behind}."))
        floor = rows.get(("noise_floor_ms", r.traffic_class, ""))
        fs = floor.cells.get(r.winners[0]) if floor else None
        if fs and fs.n and best.median <= 2 * fs.median:
            near_floor.setdefault(r.winners[0], []).append((r.traffic_class, best.median, fs.median))
    for mech, hits in near_floor.items():  # one sentence per mechanism, not one per network
        nets = ", ".join(n for n, _, _ in hits)
        lo, hi = min(h[1] for h in hits), max(h[1] for h in hits)
        floor_hi = max(h[2] for h in hits)
        span = _ms(lo) if lo == hi else f"{_ms(lo)} to {_ms(hi)}"
        out.append(Finding("note", f"{mech}'s outages ({span} on {nets}) are within 2x the probe "
                                   f"noise floor (up to {_ms(floor_hi)} with no fault): read them as "
                                   f"'about that or less'."))

    # Loss: a mechanism that lost nothing anywhere is worth saying out loud.
    lost: dict[str, list[float]] = {}
    for key, by_mech in ctx.values.items():
        if key[0] == "lost":
            for mech, vals in by_mech.items():
                lost.setdefault(mech, []).extend(vals)
    for mech in c.mechanisms:
        if lost.get(mech) and max(lost[mech]) == 0:
            out.append(Finding("good", f"{mech} lost no probe on any network in any of its "
                                       f"repetitions."))

    # vMotion: a fault mid-migration lengthens the round it hits and dirties more memory.
    for name, what in (("total_ms", "vMotion took"), ("downtime_ms", "vMotion downtime was")):
        for r in c.rows:
            if r.metric != name or not r.winners:
                continue
            scored = [(m, s) for m, s in r.cells.items() if s.n]
            worst_m, worst = max(scored, key=lambda ms: ms[1].median)
            best = r.cells[r.winners[0]]
            if best.median > 0 and worst.median > 1.5 * best.median:
                out.append(Finding("note", f"{what} {_ms(worst.median)} under {worst_m} against "
                                           f"{_ms(best.median)} under {r.winners[0]} "
                                           f"({_ratio(worst.median, best.median)})."))

    for r in c.rows:  # throughput: traffic that stopped outright during the fault
        if r.metric == "throughput_during_fault_bps":
            for mech, s in r.cells.items():
                if s.n and s.median == 0:
                    out.append(Finding("bad", f"{mech}: no data moved on {r.traffic_class} during "
                                              f"the fault (median throughput 0)."))

    order = {"bad": 0, "note": 1, "good": 2}
    return sorted(out, key=lambda f: order[f.severity])


# ---- HTML ----

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px} h2{font-size:20px;margin:36px 0 10px;border-bottom:2px solid #e3e6ea;padding-bottom:4px}
h3{font-size:16px;margin:20px 0 8px} .sub{color:#666;margin:0 0 16px}
.facts{display:flex;flex-wrap:wrap;gap:8px 28px;margin:12px 0} .facts div b{display:block;font-size:12px;color:#777;font-weight:600;text-transform:uppercase}
ul.findings{list-style:none;padding:0} ul.findings li{margin:6px 0;padding:8px 12px;border-left:5px solid #999;background:#f4f5f7;border-radius:3px}
li.bad{border-color:#c0392b!important;background:#fbeeee!important} li.good{border-color:#27ae60!important;background:#edf8f1!important}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px} th,td{border:1px solid #dde1e6;padding:5px 9px;vertical-align:top;text-align:left}
th{background:#f0f2f5} td.num{text-align:right;white-space:nowrap} td.num small{display:block;color:#666;font-size:12px}
td.win{background:#e3f5e9} td.win b{color:#1e7a3d} .muted{color:#777}
img{max-width:100%;height:auto;border:1px solid #e3e6ea;margin:6px 0 14px}
pre{background:#f4f5f7;padding:10px 12px;overflow:auto;font-size:13px;border-radius:3px}
details{margin:6px 0} summary{cursor:pointer;font-weight:600;margin:4px 0}
.reps td:nth-child(6),.reps td:nth-child(7){white-space:nowrap}
.ok{color:#1e7a3d;font-weight:600} .failed,.interrupted,.no{color:#c0392b;font-weight:600} .partial{color:#b9770e;font-weight:600}
table.verdicts td{text-align:center;min-width:120px} table.verdicts td b{display:block} table.verdicts td small{color:#333}
table.verdicts th.fault{text-align:right} .lines{font:13px/1.5 ui-monospace,Menlo,Consolas,monospace;background:#f4f5f7;padding:8px 12px;white-space:pre}
td.over{color:#c0392b} td.within{color:#1e7a3d}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _when(ns: int | None) -> str:
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], raw: bool = False, cls: str = "") -> str:
    """A plain table; cells are escaped unless raw (then the caller escaped them)."""
    headers = list(headers)
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>" if any(headers) else ""
    body = "".join("<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}>{head}{body}</table>"


def comparison_html(c: Comparison) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in ("metric", "network", *c.mechanisms, "verdict"))
    body = []
    for r in c.rows:
        cells = [f"<td>{_e(r.label)}</td>", f"<td>{_e(row_title(r))}</td>"]
        for m in c.mechanisms:
            med, spread, ci = format_cell(r.cells[m], r.unit)
            win = m in r.winners
            extra = "".join(f"<small>{_e(x)}</small>" for x in (spread, ci) if x)
            cells.append(f'<td class="num{" win" if win else ""}"><b>{_e(med)}</b>{extra}</td>')
        cells.append(f"<td>{_e(winner_text(r))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(plot.title)}">'


def _capabilities_html(caps: Any) -> str:
    datapath = ""
    if isinstance(caps, dict) and "capabilities" in caps:
        datapath = f"<p>datapath the build used: <b>{_e(caps.get('datapath', '?'))}</b></p>"
        caps = caps["capabilities"]
    if isinstance(caps, list) and all(isinstance(c, dict) and "name" in c for c in caps):
        rows = [[_e(c["name"]),
                 '<span class="ok">yes</span>' if c.get("available") else '<span class="no">no</span>',
                 _e(c.get("detail", "")), _e("" if c.get("available") else c.get("missing_means", ""))]
                for c in caps]
        return datapath + _table(["capability", "", "detail", "without it"], rows, raw=True)
    return datapath + f"<pre>{_e(json.dumps(caps, indent=2))}</pre>"


def _repetitions_html(store: ResultStore, run_id: int) -> str:
    rows = []
    for rep in store.repetitions(run_id):
        faults = "; ".join(f"{f.name} at {f.applied_ms / 1e3:.3f} s (planned {f.scheduled_ms / 1e3:.3f} s)"
                           for f in store.faults(rep.id))
        took = f"{(rep.finished_ns - rep.started_ns) / 1e9:.1f} s" if rep.finished_ns else "-"
        rows.append([_e(rep.mechanism), _e(rep.index), _e(rep.seed),
                     f'<span class="{_e(rep.status)}">{_e(rep.status)}</span>', _e(rep.reason),
                     _e(_when(rep.started_ns)), _e(took), _e(faults or "-")])
    return _table(["mechanism", "#", "seed", "status", "reason", "started", "took", "faults applied"],
                  rows, raw=True, cls="reps")


def _tint(hex_color: str, alpha: float) -> str:
    """A mechanism's colour mixed with white: strong for a win, pale for unclear."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    mix = lambda v: round(255 - (255 - v) * alpha)  # noqa: E731
    return f"#{mix(r):02x}{mix(g):02x}{mix(b):02x}"


def verdicts_html(c: Comparison) -> str:
    """The verdict summary as a matrix: a row per fault, a column per traffic class, each cell
    coloured by its winner (strong: a win; pale: unclear; grey: a tie)."""
    from vclab.results.plots import mechanism_colors
    from vclab.results.summary import WHOLE_RUN, headline_rows, outcome_text

    rows = headline_rows(c)
    if not rows:
        return '<p class="muted">No row has a contest: nothing to decide.</p>'
    faults = list(dict.fromkeys(r.fault or WHOLE_RUN for r in rows))
    classes = sorted({r.traffic_class or "-" for r in rows})
    colors = mechanism_colors(c.mechanisms)
    cell = {(r.fault or WHOLE_RUN, r.traffic_class or "-"): r for r in rows}
    head = "<tr><th></th>" + "".join(f"<th>{_e(k)}</th>" for k in classes) + "</tr>"
    body = []
    for f in faults:
        tds = [f'<th class="fault">{_e(f)}</th>']
        for k in classes:
            r = cell.get((f, k))
            if r is None:
                tds.append("<td></td>")
                continue
            status, text = outcome_text(r, c.mechanisms)
            best = r.verdict.best or ""
            lead = r.verdict.ahead or ""
            bg = "#dddddd" if status == "tie" else _tint(colors.get(lead, "#ffffff"),
                                                         0.55 if status == "clear" else 0.18)
            head_text = {"clear": best, "tie": "tie", "unclear": f"unclear ({lead or 'level'})"}[status]
            tds.append(f'<td style="background:{bg}" title="{_e(verdict_text(r))}"><b>{_e(head_text)}</b>'
                       f"<small>{_e(text)} · {_e(r.label)}</small></td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    legend = " ".join(f'<span style="background:{_tint(colors[m], 0.55)};padding:1px 6px">{_e(m)}</span>'
                      for m in c.mechanisms)
    return f'<table class="verdicts">{head}{"".join(body)}</table><p>{legend}</p>'


def tolerances_html(c: Comparison) -> str:
    from vclab.results.tolerances import TOLERANCES, checks

    found = checks(c, c.values)
    if not found:
        return '<p class="muted">No metric here has an application limit.</p>'
    head = ["measured", "where", "limit", *c.mechanisms]
    rows = []
    for ch in found:
        tds = [_e(ch.row.label), _e(row_title(ch.row)), _e(f"{_ms(ch.tolerance.limit_ms)}: {ch.tolerance.what}")]
        for m in c.mechanisms:
            j = ch.cells.get(m)
            cls = "" if j is None or not j.n else ("within" if j.within else "over")
            tds.append(f'<td class="{cls}">{_e(ch.text(m))}</td>')
        rows.append("<tr>" + "".join(t if t.startswith("<td") else f"<td>{t}</td>" for t in tds) + "</tr>")
    used = {ch.tolerance for ch in found}
    sources = "".join(f"<li><b>{_e(t.what)}</b> ({_e(_ms(t.limit_ms))}): {_e(t.source)}</li>"
                      for t in TOLERANCES if t in used)
    return (f'<table><tr>{"".join(f"<th>{_e(h)}</th>" for h in head)}</tr>{"".join(rows)}</table>'
            f"<p>Sources of the limits:</p><ul>{sources}</ul>")


def build_report(store: ResultStore, run_id: int | None = None) -> str:
    """The whole report as one HTML string."""
    c = compare(store, run_id)
    run = c.run
    failure_ms, isolation_ms = ha_times(run)
    ctx = Context(network_kinds(run.topology_yaml), failure_ms, isolation_ms, c.values)
    found = findings(c, ctx)
    plots = all_plots(store, run.id)
    reps = store.repetitions(run.id)
    ok = sum(1 for r in reps if r.status == "ok")

    parts = [f"<h1>{_e(run.experiment)}</h1>",
             f'<p class="sub">vclab results, run {run.id}: {_e(run.status)}</p>',
             '<div class="facts">']
    facts = [("started", _when(run.started_ns)), ("finished", _when(run.finished_ns)),
             ("mechanisms", ", ".join(c.mechanisms)),
             ("repetitions", f"{ok} ok of {len(reps)}" + (f", {len(c.partial)} partial" if c.partial else "")),
             ("HA failure / isolation", " / ".join(_ms(v) if v is not None else "?"
                                                   for v in (failure_ms, isolation_ms)))]
    parts += [f"<div><b>{_e(k)}</b>{_e(v)}</div>" for k, v in facts]
    parts.append("</div>")

    from vclab.results.summary import counts_line, floor_line, worst_noise_floor

    parts.append("<h2>Verdicts</h2>")
    parts.append(verdicts_html(c))
    parts.append(f'<div class="lines">{_e(counts_line(c))}\n{_e(floor_line(worst_noise_floor(c, c.values)))}</div>')
    parts.append(f'<p class="muted">One cell per fault and traffic class, on the first metric of the '
                 f"comparison below that has a contest. Verdicts compare the mechanisms round by round "
                 f"(they ran interleaved): the 95 % Hodges&ndash;Lehmann interval of the paired "
                 f"difference (exact and distribution-free from 6 rounds; Student's t from 3 to 5) decides a win; a tie is an "
                 f"interval inside the equivalence margin (max(2 ms, 10 % of the smaller median) for "
                 f"times); otherwise the row is unclear and says about how many more repetitions "
                 f"would settle it. The verdict count covers every row of the comparison.</p>")
    if c.partial:
        parts.append("<p>" + "; ".join(
            f'<span class="partial">partial</span>: {_e(r.mechanism)} repetition {_e(r.index)} '
            f"({_e(', '.join(d.get('workload', '?') for d in c.failed_workloads.get(r.id, [])))})"
            for r in c.partial) + "</p>")

    from vclab.results.fidelity import fidelity_html

    steps = {f"{r.mechanism} {r.index}": [e.detail.get("step_ms", 0.0)
                                          for e in store.events(r.id, kind=WALL_CLOCK_STEP)]
             for r in reps}
    ran_again = {f"{r.mechanism} {r.index}": [x for e in store.events(r.id, kind=RAN_AGAIN)
                                               for x in e.detail.get("steal_shares", [])]
                 for r in reps}
    parts.append(fidelity_html(run, c, network_kinds(run.topology_yaml), steps, ran_again))
    parts.append("<h2>Against what the applications tolerate</h2>")
    parts.append(tolerances_html(c))

    parts.append("<h2>Plots</h2>")
    # Each figure carries its own title; a heading above it would only repeat it. The verdict
    # matrix above is the same as the verdicts figure, so that one is left out here.
    parts += [_img(p) for p in plots if p.group not in ("timeline", "verdicts")]
    timelines = [p for p in plots if p.group == "timeline"]
    if timelines:
        parts.append("<h3>Timelines</h3><p class=\"muted\">Red dashed line: a fault took effect; "
                     "shaded until it was undone. The first repetition of each mechanism is shown; "
                     "open the others below it.</p>")
    seen: set[str] = set()
    for p in timelines:
        mech = p.title.rsplit(", repetition", 1)[0]
        if mech not in seen:
            seen.add(mech)
            parts.append(_img(p))
        else:
            parts.append(f"<details><summary>{_e(p.title)}</summary>{_img(p)}</details>")

    parts.append("<h2>Findings</h2>")
    if found:
        parts.append('<ul class="findings">' + "".join(
            f'<li class="{f.severity}">{_e(f.text)}</li>' for f in found) + "</ul>")
    else:
        parts.append('<p class="muted">No rule fired: there is nothing to compare yet.</p>')

    parts.append("<h2>Comparison</h2>")
    parts.append(f'<p class="muted">Each cell: median over the repetitions that count (ok, and partial '
                 f"ones outside their failed workload's rows), then p95 and max, then the {_e(c.ci_text[4:])} "
                 f"(CI) of that mechanism alone, with n. A repetition counts with the worst value of its "
                 f"workloads on that network. Green: the best median. The last column is the row's "
                 f"verdict from the paired rounds.</p>")
    parts.append(comparison_html(c) if c.rows else '<p class="muted">No metrics recorded.</p>')

    parts.append("<h2>Repetitions</h2>")
    parts.append(_repetitions_html(store, run.id))

    parts.append("<h2>Environment</h2>")
    parts.append(_table(["", ""], [["vclab", run.vclab_version], ["results format", store.format_version]]
                        + [[k, v] for k, v in run.host.items()]))
    if run.software:
        parts.append("<h3>Software</h3>" + _table(["software", "version"], run.software.items()))
    parts.append("<h3>Capabilities (vclab doctor)</h3>" + _capabilities_html(run.capabilities))
    if run.settings:
        parts.append("<h3>Settings the run resolved</h3>" + _table(["setting", "value"], run.settings.items()))

    parts.append("<h2>Experiment</h2>")
    parts.append(f"<pre>{_e(run.experiment_yaml)}</pre>")
    if run.topology_yaml:
        parts.append(f"<details><summary>cluster (topology) file</summary><pre>{_e(run.topology_yaml)}</pre></details>")
    parts.append(f'<p class="muted">From {_e(store.path.name)} (results format {FORMAT_VERSION}); '
                 f"rebuild with <code>vclab report</code>.</p>")

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(run.experiment)}: vclab report</title><style>{CSS}</style></head>"
            f"<body><main>\n" + "\n".join(parts) + "\n</main></body></html>\n")


def write_report(store: ResultStore, output: Path | str, run_id: int | None = None) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(build_report(store, run_id), encoding="utf-8")
    return output
