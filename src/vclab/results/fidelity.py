"""The report's fidelity section: did the emulator keep up, at which scale; and for storage,
the network outage beside the I/O stall it caused.

A repetition whose judged link (the uplink of a hypervisor starting a full-rate flow, see
experiments/runner.link_fidelity) stayed below KEPT_UP of its (scaled) rate was limited by the
emulator: one ovs-vswitchd thread forwards every frame, so when it falls
behind on one link every number of that repetition is suspect, not only that link's. Its rows
are flagged with the repetitions that make them so. So is a repetition in which the
hypervisor took STOLEN_LIMIT of the machine's CPU or more in some second (steal time): the
runner runs such a repetition again, and keeps its last attempt when every one was spoiled.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from typing import Any

from vclab.experiments.scale import KEPT_UP, STOLEN, STOLEN_LIMIT, scale_text

RATIO = "link_achieved_ratio"


def limited_repetitions(values: dict[tuple[str, str, str], dict[str, list[float]]]) -> dict[str, list[float]]:
    """Mechanism -> the link ratios below KEPT_UP (one per limited repetition). Pure."""
    out: dict[str, list[float]] = defaultdict(list)
    for (name, _cls, _fault), by_mech in values.items():
        if name == RATIO:
            for mech, ratios in by_mech.items():
                out[mech] += [r for r in ratios if r < KEPT_UP]
    return {m: v for m, v in out.items() if v}


def stolen_repetitions(values: dict[tuple[str, str, str], dict[str, list[float]]]) -> dict[str, list[float]]:
    """Mechanism -> the steal shares at or above STOLEN_LIMIT (one per spoiled repetition
    kept). Pure."""
    out = {m: [x for x in v if x >= STOLEN_LIMIT]
           for (name, _c, _f), by in values.items() if name == STOLEN for m, v in by.items()}
    return {m: v for m, v in out.items() if v}


def flagged_rows(rows, limited: dict[str, list[float]]) -> list[tuple[Any, list[str]]]:
    """Comparison rows whose cells include a limited repetition, with those mechanisms. Pure."""
    out = []
    for row in rows:
        if row.metric in (RATIO, STOLEN):
            continue
        mechs = [m for m, s in row.cells.items() if s.n > 0 and limited.get(m)]
        if mechs:
            out.append((row, mechs))
    return out


def storage_pairs(values: dict[tuple[str, str, str], dict[str, list[float]]],
                  kinds: dict[str, str]) -> list[dict[str, Any]]:
    """Per fault and mechanism: the storage networks' worst probe outage and the iSCSI stall
    and failover it caused (medians over repetitions). Pure."""
    import statistics

    faults = sorted({f for (_, _, f) in values if f})
    out = []
    for fault in faults:
        mechs = sorted({m for (n, c, f), v in values.items() if f == fault for m in v})
        for mech in mechs:
            def med(name: str, storage_class: bool) -> float | None:
                vals = [x for (n, c, f), v in values.items() if f == fault and n == name
                        and (kinds.get(c, c) == "storage") == storage_class for x in v.get(mech, [])]
                return statistics.median(vals) if vals else None

            outage = med("outage_ms", True)
            stall = med("longest_stall_ms", True)
            if stall is None and outage is None:
                continue
            out.append({"fault": fault, "mechanism": mech, "outage_ms": outage,
                        "stall_ms": stall, "failover_ms": med("failover_ms", True)})
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"


def clock_steps_text(steps: dict[str, list[float]]) -> str | None:
    """One sentence on the host's wall-clock steps ({repetition label: [step ms]}), or None. Pure."""
    steps = {rep: v for rep, v in steps.items() if v}
    if not steps:
        return None
    worst = max(abs(x) for v in steps.values() for x in v)
    return (f"The host's wall clock was stepped during {len(steps)} repetition"
            f"{'s' if len(steps) > 1 else ''} ({', '.join(sorted(steps))}; up to {worst:g} ms at a "
            "time, NTP or a VM's guest agent): outage lengths are taken on the probes' monotonic "
            "clocks and do not carry it; positions on the timelines may be off by that much.")


def stolen_text(values: dict[tuple[str, str, str], dict[str, list[float]]],
                ran_again: dict[str, list[float]]) -> str | None:
    """The hypervisor's steal time over the run, and the repetitions it spoiled. Pure."""
    shares = {m: v for (n, _, _), by in values.items() if n == STOLEN for m, v in by.items() if v}
    if not shares and not ran_again:
        return None
    out = []
    if shares:
        out.append(f"The hypervisor took at most {max(max(v) for v in shares.values()):.0%} of this "
                   "machine's CPU in any one second of a kept repetition (steal time; per mechanism: "
                   + ", ".join(f"{m} {max(v):.0%}" for m, v in sorted(shares.items()))
                   + f"; limit {STOLEN_LIMIT:.0%}).")
    spoiled = sum(len(v) for v in ran_again.values())
    if spoiled:
        out.append(f"{spoiled} attempt{'s' if spoiled > 1 else ''} spoiled by it "
                   f"{'were' if spoiled > 1 else 'was'} run again ("
                   + "; ".join(f"{r}: {', '.join(f'{x:.0%}' for x in v)}" for r, v in sorted(ran_again.items()) if v)
                   + ").")
    return " ".join(out)


def fidelity_html(run, comparison, kinds: dict[str, str],
                  clock_steps: dict[str, list[float]] | None = None,
                  ran_again: dict[str, list[float]] | None = None) -> str:
    s = run.settings or {}
    k = int(s.get("scale") or 1)
    parts = ["<h2>Emulator fidelity</h2>"]
    facts = [f"scale {scale_text(k)}" + (" (chosen from this machine's capacity)" if s.get("scale_chosen") == "auto"
                                          else " (set with --scale)" if "scale_chosen" in s else "")]
    if s.get("fastest_cable_bps"):
        facts.append(f"fastest cable {s['fastest_cable_bps'] / 1e9:g} Gbit/s nominal, "
                     f"{s['fastest_cable_bps'] / k / 1e9:g} Gbit/s emulated")
    if s.get("capacity_bps"):
        facts.append(f"this machine forwards {s['capacity_bps'] / 1e9:.2f} Gbit/s per path "
                     f"(load {s.get('capacity_load', 0):.1f} when measured)")
    if s.get("ports"):
        # AF_XDP ports (VCLAB_PORTS=afxdp) change the noise and the capacity: docs/noise.md;
        # the calibration lab says what this machine built when asked
        built = s.get("capacity_ports")
        facts.append(f"switch ports {built or s['ports']}"
                     + (f" (asked for: {s['ports']})" if built and built != s["ports"] else ""))
    parts.append("<p>" + escape("; ".join(facts)) + ". Rates, memory, disks and dirty rates ran "
                 "k times smaller, so transfer times are the nominal ones; iperf3 rates are shown "
                 "times k; timers (heartbeats, BFD, hellos, TCP's minimum RTO) ran as they are.</p>")
    if s.get("capacity_problem"):
        parts.append(f'<p class="partial">{escape(s["capacity_problem"])}</p>')
    if text := clock_steps_text(clock_steps or {}):
        parts.append(f'<p class="partial">{escape(text)}</p>')
    if text := stolen_text(comparison.values, ran_again or {}):
        parts.append(f"<p>{escape(text)}</p>")
    limited = limited_repetitions(comparison.values)
    stolen = stolen_repetitions(comparison.values)
    ratios = {m: v for (n, _, _), by in comparison.values.items() if n == RATIO for m, v in by.items()}
    if ratios:
        worst = min(min(v) for v in ratios.values() if v)
        parts.append(f"<p>Worst full-rate uplink: {worst:.0%} of its rate in its busiest 0.3 s "
                     f"(threshold {KEPT_UP:.0%}; per mechanism: "
                     + escape(", ".join(f"{m} {min(v):.0%}" for m, v in sorted(ratios.items()) if v)) + ").</p>")
    else:
        parts.append('<p class="muted">No flow asked for a full link: nothing to judge.</p>')
    either = {m: limited.get(m, []) + stolen.get(m, []) for m in set(limited) | set(stolen)}
    flagged = flagged_rows(comparison.rows, either)
    if flagged:
        parts.append("<p><b>Emulator-limited</b> (a repetition in the cell had a full-rate uplink below "
                     f"{KEPT_UP:.0%} of its rate, or lost {STOLEN_LIMIT:.0%} or more of the CPU to the "
                     "hypervisor in a second):</p><ul>" + "".join(
                         f"<li>{escape(row.label)} {escape(row.traffic_class)} {escape(row.fault)}: "
                         f"{escape(', '.join(f'{m} ({len(either[m])} rep.)' for m in mechs))}</li>"
                         for row, mechs in flagged) + "</ul>")
    pairs = storage_pairs(comparison.values, kinds)
    if pairs:
        parts.append("<h3>Storage: network outage and I/O stall</h3>"
                     '<p class="muted">The storage networks\' probe outage at each fault beside the '
                     "iSCSI initiators' stall at the fault and path failover (medians; a stall is 0 "
                     "when no longer than twice the I/O's noise floor). A stall far above "
                     "the outage is TCP's retransmission timeout (200 ms minimum, doubling) or the "
                     "initiator's I/O timeout, not the network: bench/storage_stall.py measures it.</p>")
        from vclab.workloads.iscsi.stall_model import stall_cause

        rows = "".join(f"<tr><td>{escape(p['fault'])}</td><td>{escape(p['mechanism'])}</td>"
                       f"<td>{_ms(p['outage_ms'])}</td><td>{_ms(p['stall_ms'])}</td>"
                       f"<td>{_ms(p['failover_ms'])}</td>"
                       f"<td>{escape(stall_cause(p['outage_ms'], p['stall_ms'], p['failover_ms']))}</td></tr>"
                       for p in pairs)
        parts.append("<table><tr><th>fault</th><th>mechanism</th><th>network outage</th>"
                     f"<th>I/O stall</th><th>path failover</th><th>stall set by</th></tr>{rows}</table>")
    return "\n".join(parts)
