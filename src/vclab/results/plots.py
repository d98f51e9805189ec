"""Plots (PNG) rebuilt from the results store alone: a timeline per repetition with the faults
marked where they really took effect, the outage distribution per mechanism, and vMotion rounds.

Figures are made with matplotlib's object API (no pyplot): no global state, no display needed,
and the Agg canvas renders PNG on any headless machine.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from vclab.workloads.registry import SERIES, metric_info, series_info
from vclab.results.model import RepetitionInfo
from vclab.results.store import ResultStore

EVENT_LABELS = {"heartbeat_missed": "heartbeat missed", "declared_failed": "HA: host declared failed",
                "isolated": "HA: host isolated", "switch_over": "vMotion switch-over",
                # the sdn controller's own actions (fabric/sdn.py controller_timeline)
                "controller_port": "controller: port change seen",
                "controller_sent": "controller: rules sent",
                "controller_in_sync": "controller: switch confirmed",
                "controller_reloaded": "controller: fabric reloaded",
                "wall_clock_step": "host's wall clock stepped"}
FAULT_COLOR = "#c0392b"


# Fault labels above a timeline: a label's width is estimated from its length (8 pt text is
# about 0.062 in per character; the top panel is about 8.5 in wide in an 11 in figure).
LABEL_CHAR_IN = 0.062
TIMELINE_AXES_IN = 8.5
LABEL_ROW_PT = 11
# An undo within this long of another fault's applied time is that fault (the "up" after a
# "down"): it is not labelled twice.
SAME_INSTANT_MS = 50.0


def fault_labels(faults) -> list[tuple[float, str]]:
    """(x in s, text) for every fault, and for every undo that no other fault stands for."""
    out = [(f.applied_ms / 1e3, f"{f.name} ({f.applied_ms / 1e3:.3f} s)") for f in faults]
    applied = [f.applied_ms for f in faults]
    for f in faults:
        if f.undone_ms is not None and not any(abs(a - f.undone_ms) <= SAME_INSTANT_MS for a in applied):
            out.append((f.undone_ms / 1e3, f"{f.target} undone ({f.undone_ms / 1e3:.3f} s)"))
    return sorted(out)


def label_levels(xs: list[float], widths: list[float]) -> list[int]:
    """For labels starting at xs (sorted), the lowest row on which each overlaps no label before
    it: a greedy interval colouring."""
    ends: list[float] = []
    levels = []
    for x, w in zip(xs, widths):
        for level, end in enumerate(ends):
            if x >= end:
                ends[level] = x + w
                levels.append(level)
                break
        else:
            ends.append(x + w)
            levels.append(len(ends) - 1)
    return levels


@dataclass(frozen=True)
class Plot:
    name: str  # file stem: timeline-sdn-1, outage, vmotion-rounds
    title: str
    png: bytes
    group: str  # verdicts | distribution | vmotion | timeline


def mechanism_colors(mechanisms: list[str]) -> dict[str, str]:
    """One color per mechanism, the same in every plot of a run."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    return {m: palette[i % len(palette)] for i, m in enumerate(mechanisms)}


def render_png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _log_axis(ax, values: list[float]) -> None:
    """A log axis when the largest value dwarfs the typical one (a 10 s outage among 2 ms gaps),
    cut below so the noise floor does not fill the panel with decades of nothing."""
    pos = np.asarray([v for v in values if v > 0])
    zeros = any(v == 0 for v in values)
    if pos.size and pos.max() / np.median(pos) > 100:
        if zeros:  # a 0 ms repetition must still show: linear near zero, log above
            ax.set_yscale("symlog", linthresh=max(1.0, float(pos.min())))
            ax.set_ylim(bottom=0, top=pos.max() * 2)
        else:
            ax.set_yscale("log")
            ax.set_ylim(bottom=max(pos.min(), np.percentile(pos, 5)) / 2, top=pos.max() * 2)
    elif values and min(values) >= 0:  # durations and counts: the axis starts at zero
        ax.set_ylim(bottom=0, top=max(max(values) * 1.1, 1.0))


def _break_holes(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN where samples are missing, so a line is not drawn across an outage as if measured."""
    if t.size < 3:
        return t, v
    step = np.median(np.diff(t))
    holes = np.nonzero(np.diff(t) > 5 * step)[0]
    return np.insert(t, holes + 1, np.nan), np.insert(v, holes + 1, np.nan)


def timeline(store: ResultStore, rep: RepetitionInfo) -> Figure | None:
    """Every series and event of one repetition on a shared time axis, faults marked."""
    series = store.series(rep.id)
    events = store.events(rep.id)
    faults = store.faults(rep.id)
    if not series and not events:
        return None
    # The declared series in the workloads' timeline order (workloads/registry.py), then any other.
    names = [n for n in SERIES if any(s.name == n for s in series)]
    names += sorted({s.name for s in series} - set(names))
    rounds = [e for e in events if e.kind == "round"]
    points = [e for e in events if e.kind != "round"]
    has_events = bool(points or rounds)
    nrows = len(names) + has_events
    heights = [3] * len(names) + ([1.2 + 0.35 * len({e.kind for e in points})] if has_events else [])
    fig = Figure(figsize=(11, sum(heights) * 0.75 + 1.2), layout="constrained")
    axes = fig.subplots(nrows, 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    for ax, name in zip(axes, names):
        info = series_info(name)
        scale = info.scale
        chosen = [s for s in series if s.name == name]
        labels = [s.traffic_class or s.workload for s in chosen]
        allv: list[float] = []
        for i, (s, label) in enumerate(zip(chosen, labels)):
            if labels.count(label) > 1:
                label = s.workload
            pts = np.asarray(s.points, dtype=float).reshape(-1, 2)
            t, v = pts[:, 0] / 1e3, pts[:, 1] / scale
            allv += v.tolist()
            color = f"C{i}"
            if info.duration:
                # Each value lasted until t: draw it as the span it covered, so a 10 s gap reads
                # as 10 s of nothing, not as a slope from the previous sample.
                ax.plot(t, v, ".", ms=2, color=color, label=label)
                big = v * scale >= 50
                ax.hlines(v[big], t[big] - v[big] * scale / 1e3, t[big], color=color, lw=2)
            else:
                t, v = _break_holes(t, v)
                ax.plot(t, v, lw=0.8, color=color, label=label)
        _log_axis(ax, allv)
        ax.set_title(info.label, loc="left", fontsize=10)
        ax.set_ylabel(info.axis_label)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, markerscale=4)
        ax.grid(alpha=0.3)
    if has_events:
        ax = axes[-1]
        rows = []
        if rounds:
            rows.append("vMotion rounds")
            bars = [(e.t_ms / 1e3, e.detail.get("duration_ms", 0) / 1e3) for e in rounds]
            colors = ["#7f7f7f" if e.detail.get("phase") == "stop-and-copy" else "#9467bd" for e in rounds]
            ax.broken_barh(bars, (len(rows) - 1 - 0.3, 0.6), facecolors=colors, edgecolor="white")
        for kind in sorted({e.kind for e in points}, key=lambda k: list(EVENT_LABELS).index(k)
                           if k in EVENT_LABELS else len(EVENT_LABELS)):
            rows.append(EVENT_LABELS.get(kind, kind.replace("_", " ")))
            t = [e.t_ms / 1e3 for e in points if e.kind == kind]
            ax.plot(t, [len(rows) - 1] * len(t), "|" if kind == "heartbeat_missed" else "v",
                    ms=10, color="black" if kind == "heartbeat_missed" else "#d62728")
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_title("events", loc="left", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    for ax in axes:
        for f in faults:
            ax.axvline(f.applied_ms / 1e3, color=FAULT_COLOR, ls="--", lw=1)
            if f.undone_ms is not None:
                ax.axvspan(f.applied_ms / 1e3, f.undone_ms / 1e3, color=FAULT_COLOR, alpha=0.06)
                ax.axvline(f.undone_ms / 1e3, color=FAULT_COLOR, ls=":", lw=1)
    labels = fault_labels(faults)
    span = max([f.applied_ms / 1e3 for f in faults] + [max((p[0] for s in series for p in s.points),
                                                              default=0.0) / 1e3, 1.0])
    width_s = [len(text) * LABEL_CHAR_IN / TIMELINE_AXES_IN * span * 1.1 for _, text in labels]
    for (x, text), level in zip(labels, label_levels([x for x, _ in labels], width_s)):
        # Labelled once, above the top panel, each on the lowest row where it overlaps none.
        axes[0].annotate(text, (x, 1), xycoords=("data", "axes fraction"),
                         xytext=(3, 3 + LABEL_ROW_PT * level), textcoords="offset points",
                         color=FAULT_COLOR, fontsize=8, annotation_clip=False)
    axes[-1].set_xlabel("time since the repetition started (s)")
    fig.suptitle(f"{rep.mechanism}, repetition {rep.index}", x=0.01, ha="left", fontsize=12,
                 fontweight="bold")
    return fig


def outage_distribution(store: ResultStore, run_id: int, metric: str = "outage_ms",
                        fault: str | None = None) -> Figure | None:
    """One box plot per traffic class (of one fault, or of every fault when `fault` is None):
    the repetitions of each mechanism side by side, every repetition drawn as a point, with the
    probes' noise floor for scale. Partial repetitions count where their workload did not fail."""
    from vclab.results.compare import compare

    c = compare(store, run_id)
    mechanisms, values = c.mechanisms, c.values
    keys = [k for k in values if k[0] == metric and (fault is None or k[2] == fault)]
    if not keys:
        return None
    floors = {k[1]: float(np.median(sum(v.values(), []))) for k, v in values.items()
              if k[0] == "noise_floor_ms"}
    colors = mechanism_colors(mechanisms)
    # At most 4 panels a row, each at least 3.2 in wide: no axis is squeezed to nothing.
    cols = min(len(keys), 4)
    nrows = -(-len(keys) // cols)
    fig = Figure(figsize=(max(3.4 * cols, 6.5), 3.6 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes, keys):
        mechs = [m for m in mechanisms if values[key].get(m)]
        data = [values[key][m] for m in mechs]
        box = ax.boxplot(data, widths=0.5, patch_artist=True, showfliers=False,
                         medianprops={"color": "black"})
        ax.set_xticks(range(1, len(mechs) + 1), [_short(m) for m in mechs], fontsize=8)
        for patch, m in zip(box["boxes"], mechs):
            patch.set_facecolor(colors[m])
            patch.set_alpha(0.35)
        rng = np.random.default_rng(0)  # fixed jitter: the same store gives the same picture
        for i, (m, d) in enumerate(zip(mechs, data), start=1):
            ax.plot(i + rng.uniform(-0.12, 0.12, len(d)), d, "o", color=colors[m], ms=5)
        flat = sum(data, []) + ([floors[key[1]]] if key[1] in floors else [])
        _log_axis(ax, flat)
        if key[1] in floors and floors[key[1]] >= ax.get_ylim()[0]:
            ax.axhline(floors[key[1]], color="grey", ls=":", lw=1)
            ax.annotate("probe noise floor", (0.99, floors[key[1]]), xycoords=("axes fraction", "data"),
                        xytext=(0, 2), textcoords="offset points", fontsize=7, color="grey", ha="right")
        title = key[1] or "-"
        ax.set_title(title if fault is not None else (f"{title}\n{key[2]}" if key[2] else title),
                     fontsize=10)
        ax.set_ylabel(f"{metric_info(metric).label} (ms)" if metric.endswith("_ms") else metric_info(metric).label)
        ax.grid(alpha=0.3, axis="y")
    what = f"{metric_info(metric).label} at {fault}" if fault else f"{metric_info(metric).label} per mechanism"
    fig.suptitle(f"{what}, one point per repetition", x=0.01, ha="left", fontsize=12, fontweight="bold")
    return fig


def _short(mechanism: str) -> str:
    """Tick labels that fit under a box: rstp+balance-slb -> rstp+\nbalance-slb."""
    return mechanism.replace("+", "+\n")


def verdict_matrix(c) -> Figure | None:
    """The verdict summary as a picture: a row per fault, a column per traffic class, each cell
    coloured by its winner (pale when unclear, grey for a tie) and saying by how much."""
    from vclab.results.summary import WHOLE_RUN, headline_rows, outcome_text

    rows = headline_rows(c)
    if not rows:
        return None
    faults = list(dict.fromkeys(r.fault or WHOLE_RUN for r in rows))
    classes = sorted({r.traffic_class or "-" for r in rows})
    colors = mechanism_colors(c.mechanisms)
    fig = Figure(figsize=(2.4 + 2.3 * len(classes), max(3.0, 1.3 + 0.55 * len(faults))), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        y, x = faults.index(r.fault or WHOLE_RUN), classes.index(r.traffic_class or "-")
        status, text = outcome_text(r, c.mechanisms)
        v = r.verdict
        face, alpha = ("#bbbbbb", 0.6) if status == "tie" else (colors.get(v.ahead or "", "#ffffff"),
                                                               0.85 if status == "clear" else 0.25)
        ax.add_patch(Rectangle((x, y), 1, 1, facecolor=face, alpha=alpha, edgecolor="white", lw=2))
        head = {"clear": v.best, "tie": "tie", "unclear": f"unclear ({v.ahead or 'level'})"}[status]
        sub = text.split(" over ")[0].removeprefix(f"{v.best} ") if status == "clear" else (
            text.split(" within ")[-1] if status == "tie" else f"~{v.more} more reps")
        ax.text(x + 0.5, y + 0.4, head, ha="center", va="center", fontsize=9,
                fontweight="bold" if status == "clear" else "normal")
        ax.text(x + 0.5, y + 0.72, f"{sub} · {r.label.split(' (')[0]}", ha="center", va="center",
                fontsize=7, color="#333333")
    ax.set_xlim(0, len(classes))
    ax.set_ylim(len(faults), 0)
    ax.set_xticks([i + 0.5 for i in range(len(classes))], classes)
    ax.xaxis.tick_top()
    ax.set_yticks([i + 0.5 for i in range(len(faults))], faults, fontsize=9)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    n = c.counts()
    fig.suptitle(f"{c.run.experiment}: verdicts ({n['clear']} clear of {n['rows']} rows; "
                 f"strong colour: a win, pale: unclear, grey: a tie)", x=0.01, ha="left",
                 fontsize=11, fontweight="bold")
    return fig


def vmotion_rounds(store: ResultStore, run_id: int) -> Figure | None:
    """Bytes and duration of each pre-copy round, one line per repetition, per mechanism."""
    mechanisms = store.mechanisms(run_id)
    colors = mechanism_colors(mechanisms)
    lines: dict[str, list[list]] = defaultdict(list)
    for rep in store.repetitions(run_id):
        if rep.status != "ok":
            continue
        rounds = store.events(rep.id, kind="round")
        if rounds:
            lines[rep.mechanism].append(sorted(rounds, key=lambda e: e.detail.get("index", 0)))
    if not lines:
        return None
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_bytes, ax_time = fig.subplots(1, 2)
    for mech in mechanisms:
        for k, rounds in enumerate(lines.get(mech, [])):
            x = [e.detail.get("index", i) for i, e in enumerate(rounds)]
            label = mech if k == 0 else None
            ax_bytes.plot(x, [e.detail.get("bytes", 0) / 1e6 for e in rounds], "o-", color=colors[mech],
                          alpha=0.75, label=label)
            ax_time.plot(x, [e.detail.get("duration_ms", 0) / 1e3 for e in rounds], "o-",
                         color=colors[mech], alpha=0.75, label=label)
    for ax, ylabel, title in ((ax_bytes, "MB sent", "bytes per round"), (ax_time, "s", "round duration")):
        ax.set_yscale("log")
        ax.set_xlabel("round (the last is stop-and-copy: the VM is paused)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left", fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("vMotion pre-copy rounds, one line per repetition", x=0.01, ha="left", fontsize=12,
                 fontweight="bold")
    return fig


def all_plots(store: ResultStore, run_id: int) -> list[Plot]:
    """Every plot of a run, rendered: the verdict matrix, the outage at each fault (one figure
    per fault), vMotion, then each timeline."""
    from vclab.results.compare import compare

    c = compare(store, run_id)
    out: list[Plot] = []
    fig = verdict_matrix(c)
    if fig is not None:
        out.append(Plot("verdicts", "Verdicts", render_png(fig), "verdicts"))
    faults = list(dict.fromkeys(r.fault for r in c.rows if r.metric == "outage_ms"))
    for fault in faults:
        fig = outage_distribution(store, run_id, fault=fault)
        if fig is not None:
            name = f"outage-{_slug(fault)}" if fault else "outage"
            out.append(Plot(name, f"Outage at {fault}" if fault else "Outage", render_png(fig),
                            "distribution"))
    fig = vmotion_rounds(store, run_id)
    if fig is not None:
        out.append(Plot("vmotion-rounds", "vMotion rounds", render_png(fig), "vmotion"))
    order = store.mechanisms(run_id)
    reps = sorted(store.repetitions(run_id), key=lambda r: (order.index(r.mechanism), r.index))
    for rep in reps:
        fig = timeline(store, rep)
        if fig is not None:
            out.append(Plot(f"timeline-{_slug(rep.mechanism)}-{rep.index}",
                            f"{rep.mechanism}, repetition {rep.index}", render_png(fig), "timeline"))
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def write_plots(store: ResultStore, run_id: int, outdir: Path | str) -> list[Path]:
    """Render every plot of the run as PNG files in outdir."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for plot in all_plots(store, run_id):
        path = outdir / f"{plot.name}.png"
        path.write_bytes(plot.png)
        paths.append(path)
    return paths
