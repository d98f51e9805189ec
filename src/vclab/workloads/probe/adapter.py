"""The probe entry of an experiment: outages per fault, the noise floor, gaps and RTTs."""

from __future__ import annotations

from vclab.results.model import WALL_CLOCK_STEP, Event, Series
from vclab.workloads.adapter import (BetweenTwo, MetricInfo, Outcome, SeriesInfo, address,
                                     ms_since)
from vclab.workloads.probe import metrics as probe_metrics
from vclab.workloads.probe.spec import ProbeSpec
from vclab.workloads.probe.workload import Endpoint, Probe

# A fault's window starts this many probe intervals before it was applied and ends where the
# next fault's begins, so each outage is charged to the fault that caused it.
MARGIN_INTERVALS = probe_metrics.FAULT_MARGIN_INTERVALS
# The queue a fault finds: the probes sent in this many intervals before it.
DELAY_BEFORE_INTERVALS = 20
# A quiet stretch shorter than this many probe intervals says too little to be a noise floor.
QUIET_MIN_INTERVALS = 100
# A jump of the wall clock against the monotonic one larger than this between two sends is a
# step (the two clocks are read ~0.1 us apart, so ordinary jitter stays far below it).
WALL_CLOCK_STEP_NS = 200_000


class ProbeAdapter(BetweenTwo):
    spec_type = ProbeSpec
    metrics = (
        MetricInfo("outage_ms", "outage", "lower", "headline", short="outage"),
        MetricInfo("loss_outage_ms", "outage from lost probes", "lower", "headline"),
        MetricInfo("late_disruption_ms", "later disruption (above the noise floor)", "lower",
                   "headline", short="late disr."),
        MetricInfo("lost", "packets lost", "lower", "headline"),
        MetricInfo("noise_floor_ms", "probe noise floor (no fault)", None, "context"),
        MetricInfo("delay_before_ms", "one-way delay just before the fault", None, "context"),
    )
    series = (
        SeriesInfo("gap_ms", "probe gaps", "gap", "ms", duration=True),
        SeriesInfo("rtt_ms", "probe round-trip time", "RTT", "ms"),
    )

    def make(self, lab, tracker, workdir, duration_s):
        s = self.spec
        return Probe(Endpoint(lab.node(s.src), address(lab, s.src, s.network)),
                     Endpoint(lab.node(s.dst), address(lab, s.dst, s.network)),
                     tracker, interval_ms=s.every, port=7370 + self.index,
                     workdir=workdir / f"probe{self.index}")

    def connect(self, workload, others):
        # When the other workloads' scheduled events happen (a vMotion starting): the noise
        # floor must not be measured across them (the base keeps them)...
        super().connect(workload, others)
        # ...and the gaps of a VM this probe reaches while its vMotion pauses it are the
        # vMotion's (its switch-over, vm_outage_ms), not the fault whose window they fall in.
        self.others = [w for _, w in others if w is not workload]

    def outcome(self, raw, t0_ns, end_ns, faults):
        out = Outcome()
        ab, ba, rtt = Probe.streams(raw)
        interval = ab.interval_ns
        margin = MARGIN_INTERVALS * interval
        applied = sorted(faults, key=lambda f: f.applied_ns)
        # The floor: only where no fault and no workload event is scheduled.
        quiet = self.quiet(t0_ns, end_ns, applied, margin, QUIET_MIN_INTERVALS * interval)
        floors = [probe_metrics.quiet_noise_floor(s, quiet) for s in (ab, ba)]
        floor = max((f for f in floors if f is not None), default=None)
        common = self.common
        ends = (self.spec.src, self.spec.dst)
        excused = [(lo, hi) for w in getattr(self, "others", [])
                   for host, lo, hi in w.off_network() if host in ends]
        if floor is not None:
            out.metrics.append(self.metric("noise_floor_ms", floor))
        for i, f in enumerate(applied):
            start = f.applied_ns - margin
            end = applied[i + 1].applied_ns - margin if i + 1 < len(applied) else end_ns
            uncertainty = int(float(f.detail.get("uncertainty_ms") or 0.0) * 1e6)
            results = [probe_metrics.fault_outage(s, f.applied_ns, start, end, uncertainty,
                                                  floor_ms=floor or 0.0, excused=excused)
                       for s in (ab, ba)]
            at = max(results, key=lambda r: r.outage_ms)
            late = max(results, key=lambda r: r.late_disruption_ms)
            for name, value in (("outage_ms", at.outage_ms), ("loss_outage_ms", at.loss_outage_ms),
                                ("late_disruption_ms", late.late_disruption_ms),
                                ("lost", float(sum(r.lost for r in results)))):
                out.metrics.append(self.metric(name, value, fault=f.name))
            # What was queued ahead of the probes when the fault struck (the longer of the two
            # directions): frames queued on a failed cable are lost with it, whatever the
            # fabric then does, so this is the part of an outage the load set.
            before = [d for s in (ab, ba) if (d := probe_metrics.delay_before(
                s, f.applied_ns, DELAY_BEFORE_INTERVALS * interval)) is not None]
            if before:
                out.metrics.append(self.metric("delay_before_ms", max(before), fault=f.name))
        for s in (ab, ba):
            # The host's wall clock was stepped: the lengths here do not carry it (they are
            # taken on the sender's monotonic clock), but positions on a timeline do.
            for t, step in probe_metrics.wall_clock_steps(s, WALL_CLOCK_STEP_NS, t0_ns, end_ns):
                out.events.append(Event(self.name, ms_since(t0_ns, t), WALL_CLOCK_STEP,
                                        {"step_ms": round(step / 1e6, 3)}))
            result = probe_metrics.analyse(s, start_ns=t0_ns, end_ns=end_ns)
            out.series.append(Series(name="gap_ms", points=[(ms_since(t0_ns, g.end_ns), g.outage_ms)
                                                            for g in result.gaps], **common))
        if rtt:
            step = max(1, len(rtt) // 2000)  # keep the store small: the timeline needs shape only
            sent = sorted(raw["a"].sent_t)[: len(rtt)] if raw.get("a") else []
            if sent:
                out.series.append(Series(name="rtt_ms", points=[(ms_since(t0_ns, t), r / 1e6)
                                                                for t, r in list(zip(sent, rtt))[::step]], **common))
        return out
