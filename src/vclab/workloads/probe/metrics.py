"""Outage, loss, reordering, duplicates, delay and RTT from probe records. Pure: no root.

An outage is a run of lost probes. Its edges are placed from the *send* times around it: the
path broke between the send time of the last probe that got through and that of the first
one lost, and came back between the last lost one and the first that got through again. We
take the midpoints, so the timestamp-based outage is

    outage = mid(first lost, next received) - mid(previous received, first lost)
           = t_send(next received) - t_send(previous received) - interval   (regular sending)

with an error bar of half of each bracket (= +-interval when sending is regular). The edges'
positions are wall-clock (CLOCK_REALTIME, to line up with faults and other records), but the
outage and its error bar are durations on the sender's CLOCK_MONOTONIC when its log has it:
a step of the wall clock inside a gap (NTP, a VM's guest agent) is not time that passed. Sender
scheduling jitter moves both send times and the receive times alike, so it is not counted;
receiver jitter cannot count either, because receive times are not used. The loss-derived
outage (RFC 6201 style) is lost x interval, also +-interval.

Records come straight from the agents (`probe_agent.AgentLog`) or, in tests, from lists.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

NS_PER_MS = 1_000_000
NO_ECHO = 0xFFFFFFFF
# Probes sent this close to the end of the receiver's window may still have been in flight.
SETTLE_NS = 100 * NS_PER_MS


@dataclass
class Stream:
    """One direction: what the sender sent and what the receiver got, in arrival order.

    `sent_*` may be empty when the sender's log is missing: the expected probes are then
    inferred from the received seqs, and the send times of lost ones from the interval."""

    interval_ns: int
    sent_seq: Sequence[int] = ()
    sent_t: Sequence[int] = ()
    recv_seq: Sequence[int] = ()
    recv_t_send: Sequence[int] = ()
    recv_t_recv: Sequence[int] = ()
    rx_start_ns: int | None = None  # the receiver's listening window
    rx_end_ns: int | None = None
    sent_mono: Sequence[int] = ()  # CLOCK_MONOTONIC of each send, parallel to sent_t

    def monotonic(self) -> dict[int, int]:
        """seq -> monotonic send time, when the sender's log has one for every send."""
        if not self.sent_mono or len(self.sent_mono) != len(self.sent_seq):
            return {}
        return dict(zip(self.sent_seq, self.sent_mono))


@dataclass
class Gap:
    """One run of lost probes, with edges placed from the send times around it."""

    first_lost: int
    last_lost: int
    lost: int
    start_ns: int
    end_ns: int
    outage_ms: float
    error_ms: float  # +- on outage_ms
    loss_outage_ms: float
    open_start: bool = False  # lost from the first expected probe: it may have begun earlier
    open_end: bool = False  # still lost at the last expected probe: it had not ended
    start_rel_ms: float | None = None  # relative to the fault's applied time
    end_rel_ms: float | None = None


@dataclass
class DelayStats:
    count: int = 0
    min_ms: float | None = None
    median_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


@dataclass
class DirectionResult:
    expected: int
    received: int
    lost: int
    duplicates: int
    reordered: int
    outage_ms: float  # the largest gap, timestamp method
    outage_error_ms: float
    loss_outage_ms: float  # lost in that gap x interval
    loss_outage_error_ms: float
    total_loss_outage_ms: float  # every lost probe x interval
    interval_ms: float
    outage: Gap | None = None
    fault_gap: Gap | None = None  # the gap nearest the fault
    gaps: list[Gap] = field(default_factory=list)  # every gap >= the threshold, in order
    owd: DelayStats = field(default_factory=DelayStats)
    recv_gap_ms: float = 0.0  # naive: largest gap between receive times minus the interval
    send_gap_ms: float = 0.0  # largest gap between send times minus the interval
    noise_floor_ms: float | None = None
    # How far the sender's wall clock moved against its monotonic clock while it probed (0
    # on a steady clock): steps the timestamp-based edges positions carry, durations do not.
    clock_step_ms: float = 0.0
    # How long the sender sent nothing across the fault's applied time, beyond one interval: a
    # fault that came and went inside such a stall left no probe to lose, so a missing gap
    # then says nothing about it (it widens the error bar instead).
    fault_send_gap_ms: float = 0.0


@dataclass
class NoiseFloor:
    """What the probe reports when nothing is broken: the resolution to quote beside results."""

    noise_floor_ms: float  # largest outage (timestamp method) with no fault
    lost: int
    expected: int
    recv_gap_ms: float  # what a naive receive-time gap would have claimed
    send_gap_ms: float
    window_ms: float
    # Longest a probe was held beyond the usual one-way delay without being lost: the
    # emulated network itself stalling (OVS starved of CPU), which the outage does not count.
    delay_spike_ms: float = 0.0


def _ms(ns: float) -> float:
    return ns / NS_PER_MS


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an unsorted sequence (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def delay_stats(values_ns: Sequence[int]) -> DelayStats:
    if not values_ns:
        return DelayStats()
    ms = [_ms(v) for v in values_ns]
    return DelayStats(len(ms), min(ms), statistics.median(ms), percentile(ms, 99), max(ms))


def _expected(stream: Stream, start_ns: int | None, end_ns: int | None) -> dict[int, int]:
    """seq -> send time for every probe the receiver could have seen: sent inside its window
    (and inside [start_ns, end_ns] when given). Send time -1: unknown (no sender log)."""
    bounds_lo = [x for x in (stream.rx_start_ns, start_ns) if x is not None]
    bounds_hi = [x for x in (end_ns, None if stream.rx_end_ns is None
                             else stream.rx_end_ns - SETTLE_NS) if x is not None]
    lo = max(bounds_lo) if bounds_lo else None
    hi = min(bounds_hi) if bounds_hi else None
    times: dict[int, int] = {}
    if stream.sent_seq:
        pairs = zip(stream.sent_seq, stream.sent_t)
    else:  # sender log missing: what was received says what was sent
        pairs = zip(stream.recv_seq, stream.recv_t_send)
    for seq, t in pairs:
        if (lo is None or t >= lo) and (hi is None or t <= hi):
            times.setdefault(seq, t)
    if not stream.sent_seq and times:
        for seq in range(min(times), max(times) + 1):
            times.setdefault(seq, -1)
    return times


def _gaps(stream: Stream, times: dict[int, int], got: set[int],
          mono: dict[int, int] | None = None) -> list[Gap]:
    """Runs of lost probes. `mono` (seq -> monotonic send time) gives the durations when every
    send around a gap has one."""
    seqs = sorted(times)
    interval = stream.interval_ns
    gaps: list[Gap] = []
    i = 0
    while i < len(seqs):
        if seqs[i] in got:
            i += 1
            continue
        j = i
        while j + 1 < len(seqs) and seqs[j + 1] not in got:
            j += 1
        around = [seqs[i - 1] if i > 0 else None, seqs[i], seqs[j],
                  seqs[j + 1] if j + 1 < len(seqs) else None]
        prev, first, last, nxt = _edges(around, times, interval, j - i + 1)
        # Twice the edge times, in integer ns: realtime ns exceed a float's exact range.
        start2 = prev + first if prev is not None else 2 * first
        if mono and all(s is None or s in mono for s in around):
            prev, first, last, nxt = _edges(around, mono, interval, j - i + 1)
        start_err2 = first - prev if prev is not None else 0
        length2 = ((last + nxt) if nxt is not None else 2 * last) - (
            (prev + first) if prev is not None else 2 * first)
        end_err2 = nxt - last if nxt is not None else 0
        lost = j - i + 1
        gaps.append(Gap(
            first_lost=seqs[i], last_lost=seqs[j], lost=lost, start_ns=start2 // 2,
            end_ns=(start2 + length2) // 2, outage_ms=length2 / 2 / NS_PER_MS,
            error_ms=(start_err2 + end_err2) / 2 / NS_PER_MS,
            loss_outage_ms=_ms(lost * interval), open_start=around[0] is None,
            open_end=around[3] is None,
        ))
        i = j + 1
    return gaps


def _edges(around: list[int | None], times: dict[int, int], interval: int,
           lost: int) -> tuple[int | None, int, int, int | None]:
    """Send times of (previous received, first lost, last lost, next received) on one clock.
    Unknown send times of lost probes (-1: no sender log) are one interval from a neighbour."""
    prev, first, last, nxt = (None if s is None else times[s] for s in around)
    if first < 0:
        first = prev + interval if prev is not None else (nxt - lost * interval)
    if last < 0:
        last = nxt - interval if nxt is not None else first + (lost - 1) * interval
    return prev, first, last, nxt


def wall_clock_steps(stream: Stream, threshold_ns: int, start_ns: int | None = None,
                     end_ns: int | None = None) -> list[tuple[int, int]]:
    """(wall-clock ns, step ns) wherever the sender's wall clock moved against its monotonic
    clock by more than `threshold_ns` between two consecutive sends in [start_ns, end_ns]:
    someone stepped it (NTP, a VM's guest agent). Empty without monotonic stamps."""
    pairs = sorted(zip(stream.sent_mono, stream.sent_t)) if stream.monotonic() else []
    pairs = [(m, t) for m, t in pairs
             if (start_ns is None or t >= start_ns) and (end_ns is None or t <= end_ns)]
    return [(t1, (t1 - m1) - (t0 - m0)) for (m0, t0), (m1, t1) in zip(pairs, pairs[1:])
            if abs((t1 - m1) - (t0 - m0)) > threshold_ns]


def _largest_spacing(values: Sequence[int], interval: int) -> float:
    ordered = sorted(values)
    if len(ordered) < 2:
        return 0.0
    return max(0.0, _ms(max(b - a for a, b in zip(ordered, ordered[1:])) - interval))


def nearest_gap(gaps: Sequence[Gap], fault_ns: int) -> Gap | None:
    """The gap closest in time to the fault (0 when it spans it); ties go to the larger one."""
    def distance(g: Gap) -> tuple[float, float]:
        if g.start_ns <= fault_ns <= g.end_ns:
            d = 0
        else:
            d = min(abs(g.start_ns - fault_ns), abs(g.end_ns - fault_ns))
        return (d, -g.outage_ms)

    return min(gaps, key=distance, default=None)


def analyse(stream: Stream, fault_ns: int | None = None, threshold_ms: float = 0.0,
            start_ns: int | None = None, end_ns: int | None = None) -> DirectionResult:
    """Metrics for one direction, over probes sent in [start_ns, end_ns] (default: all).
    `threshold_ms`: which gaps to list (all by default)."""
    interval = stream.interval_ns
    times = _expected(stream, start_ns, end_ns)
    got: set[int] = set()
    duplicates = reordered = 0
    highest = -1
    owd: list[int] = []
    arrivals: list[int] = []
    for seq, t_send, t_recv in zip(stream.recv_seq, stream.recv_t_send, stream.recv_t_recv):
        if seq not in times:
            continue  # sent outside the receiver's window
        if seq in got:
            duplicates += 1
            continue
        got.add(seq)
        if seq < highest:
            reordered += 1
        highest = max(highest, seq)
        owd.append(t_recv - t_send)
        arrivals.append(t_recv)
    mono = stream.monotonic()
    gaps = _gaps(stream, times, got, mono)
    if fault_ns is not None:
        for g in gaps:
            g.start_rel_ms = _ms(g.start_ns - fault_ns)
            g.end_rel_ms = g.start_rel_ms + g.outage_ms
    biggest = max(gaps, key=lambda g: g.outage_ms, default=None)
    lost = len(times) - len(got)
    known_sends = ([mono[s] for s in times] if mono else [t for t in times.values() if t >= 0])
    offsets = [t - mono[s] for s, t in times.items() if t >= 0] if mono else []
    return DirectionResult(
        expected=len(times), received=len(got), lost=lost, duplicates=duplicates,
        reordered=reordered,
        outage_ms=biggest.outage_ms if biggest else 0.0,
        outage_error_ms=biggest.error_ms if biggest else _ms(interval),
        loss_outage_ms=biggest.loss_outage_ms if biggest else 0.0,
        loss_outage_error_ms=_ms(interval),
        total_loss_outage_ms=_ms(lost * interval),
        interval_ms=_ms(interval),
        outage=biggest,
        fault_gap=nearest_gap(gaps, fault_ns) if fault_ns is not None else None,
        gaps=[g for g in gaps if g.outage_ms >= threshold_ms],
        owd=delay_stats(owd),
        recv_gap_ms=_largest_spacing(arrivals, interval),
        send_gap_ms=_largest_spacing(known_sends, interval),
        clock_step_ms=_ms(max(offsets) - min(offsets)) if offsets else 0.0,
        fault_send_gap_ms=_send_gap_at(times, mono, fault_ns, interval) if fault_ns else 0.0,
    )


def _send_gap_at(times: dict[int, int], mono: dict[int, int] | None, at_ns: int,
                 interval: int) -> float:
    """Spacing minus one interval between the last send before `at_ns` (wall clock) and the
    first one from it on, timed on the monotonic clock when the sender logged it."""
    before = [s for s, t in times.items() if 0 <= t < at_ns]
    after = [s for s, t in times.items() if t >= at_ns]
    if not before or not after:
        return 0.0
    prev, nxt = max(before, key=times.__getitem__), min(after, key=times.__getitem__)
    clock = mono if mono and prev in mono and nxt in mono else times
    return max(0.0, _ms(clock[nxt] - clock[prev] - interval))


def noise_floor(stream: Stream, start_ns: int | None = None, end_ns: int | None = None) -> NoiseFloor:
    """Largest outage the probe reports in a window with no fault (the whole stream by default)."""
    result = analyse(stream, start_ns=start_ns, end_ns=end_ns)
    sends = sorted(t for t in _expected(stream, start_ns, end_ns).values() if t >= 0)
    span = _ms(sends[-1] - sends[0]) if len(sends) > 1 else 0.0
    spike = (result.owd.max_ms - result.owd.median_ms) if result.owd.count else 0.0
    return NoiseFloor(result.outage_ms, result.lost, result.expected, result.recv_gap_ms,
                      result.send_gap_ms, span, spike)


def accuracy(outage_ms: float, outage_error_ms: float, fault_ms: float, fault_error_ms: float,
             slack_ms: float = 0.0) -> dict[str, Any]:
    """Measured outage against a fault of known length. Both carry error bars; `slack_ms` is
    the fault's own lag in taking effect that its timestamps cannot see."""
    error = outage_ms - fault_ms
    tolerance = outage_error_ms + fault_error_ms + slack_ms
    return {"error_ms": error, "tolerance_ms": tolerance, "within_tolerance": abs(error) <= tolerance}


def rtt_samples(
    sent_seq: Sequence[int], sent_t: Sequence[int], recv_t_recv: Sequence[int],
    recv_echo_seq: Sequence[int], recv_echo_hold: Sequence[int],
) -> list[int]:
    """RTT (ns) per echoed probe: back at us - sent by us - held at the peer. Clock-free: each
    difference is taken on one machine. The first echo of a seq is used (shortest hold)."""
    sent_at = dict(zip(sent_seq, sent_t))
    seen: set[int] = set()
    out = []
    for t_back, echo, hold in zip(recv_t_recv, recv_echo_seq, recv_echo_hold):
        if echo == NO_ECHO or echo in seen or echo not in sent_at:
            continue
        seen.add(echo)
        out.append(t_back - sent_at[echo] - hold)
    return out


# The noise-floor window stops this many intervals before the fault, so the outage the floor
# is quoted beside can never be part of it.
FAULT_MARGIN_INTERVALS = 10


def summarize(a_to_b: Stream, b_to_a: Stream, rtt_ns: Sequence[int] = (),
              fault_ns: int | None = None, threshold_ms: float = 0.0,
              noise_floor_ms: float | None = None) -> dict[str, Any]:
    """Both directions in one plain dict; the top-level outage is the worse direction's.

    `noise_floor_ms` from a fault-free baseline run is quoted as is; without it the floor is
    measured on this run before the fault (on the whole run when there is no fault)."""
    ab = analyse(a_to_b, fault_ns, threshold_ms)
    ba = analyse(b_to_a, fault_ns, threshold_ms)
    floors = []
    for stream, res in ((a_to_b, ab), (b_to_a, ba)):
        if noise_floor_ms is not None:
            res.noise_floor_ms = noise_floor_ms
            continue
        end = None if fault_ns is None else fault_ns - FAULT_MARGIN_INTERVALS * stream.interval_ns
        floors.append(noise_floor(stream, None, end))
        res.noise_floor_ms = floors[-1].noise_floor_ms
    worse = max((ab, ba), key=lambda r: r.outage_ms)
    gap = worse.outage
    fault_gap = max((ab.fault_gap, ba.fault_gap), key=lambda g: g.outage_ms if g else -1.0)
    return {
        # the largest gap in either direction
        "outage_ms": worse.outage_ms,
        "outage_error_ms": worse.outage_error_ms,
        "loss_outage_ms": worse.loss_outage_ms,
        "loss_outage_error_ms": worse.loss_outage_error_ms,
        # where the outage sat relative to the fault's applied time (None without a fault)
        "outage_start_ms": gap.start_rel_ms if gap else None,
        "outage_end_ms": gap.end_rel_ms if gap else None,
        "outage_open": bool(gap and (gap.open_start or gap.open_end)),
        # the gap nearest the fault (the worse direction's); None without a fault
        "fault_outage_ms": _gap_field(fault_gap, "outage_ms", fault_ns, 0.0),
        "fault_outage_error_ms": _gap_field(fault_gap, "error_ms", fault_ns, worse.interval_ms),
        "fault_loss_outage_ms": _gap_field(fault_gap, "loss_outage_ms", fault_ns, 0.0),
        "fault_outage_start_ms": _gap_field(fault_gap, "start_rel_ms", fault_ns, None),
        "fault_outage_end_ms": _gap_field(fault_gap, "end_rel_ms", fault_ns, None),
        "lost": ab.lost + ba.lost,
        "duplicates": ab.duplicates + ba.duplicates,
        "reordered": ab.reordered + ba.reordered,
        "noise_floor_ms": max(ab.noise_floor_ms or 0.0, ba.noise_floor_ms or 0.0),
        "noise_floor_window_ms": min((f.window_ms for f in floors), default=None),
        # what a naive receive-gap probe would have called the floor, for comparison
        "naive_noise_floor_ms": max((f.recv_gap_ms for f in floors), default=None),
        "noise_delay_spike_ms": max((f.delay_spike_ms for f in floors), default=None),
        "interval_ms": worse.interval_ms,
        # the senders' wall clocks stepped while probing: edge positions carry it, not lengths
        "wall_clock_step_ms": max(ab.clock_step_ms, ba.clock_step_ms),
        "fault_ns": fault_ns,
        "rtt": asdict(delay_stats(list(rtt_ns))),
        "a_to_b": asdict(ab),
        "b_to_a": asdict(ba),
    }


def _gap_field(gap: Gap | None, name: str, fault_ns: int | None, no_gap: Any) -> Any:
    if fault_ns is None:
        return None
    return getattr(gap, name) if gap else no_gap


def overlaps(a: tuple[int, int], b: tuple[int, int], margin_ns: int = 0) -> bool:
    """Do two [start, end] intervals (ns) overlap, with `margin_ns` of slack?"""
    return a[0] - margin_ns <= b[1] and b[0] <= a[1] + margin_ns


def own_noise_floor(summary: dict[str, Any], stalls: Sequence[tuple[int, int]],
                    margin_ns: int = 5 * NS_PER_MS) -> float:
    """The noise floor of the probe itself: the largest fault-free gap (before the fault, or
    anywhere without one) that no stall of the switch explains. `summary` is summarize()'s
    output; `stalls` are [start, end] ns when a witness saw the switch stop answering."""
    fault_ns = summary["fault_ns"]
    largest = 0.0
    for direction in ("a_to_b", "b_to_a"):
        d = summary[direction]
        end = None if fault_ns is None else fault_ns - FAULT_MARGIN_INTERVALS * d["interval_ms"] * NS_PER_MS
        for g in d["gaps"]:
            if end is not None and g["end_ns"] > end:
                continue
            if not any(overlaps((g["start_ns"], g["end_ns"]), s, margin_ns) for s in stalls):
                largest = max(largest, g["outage_ms"])
    return largest


@dataclass
class FaultOutage:
    """What one fault did to one probe stream, kept apart from what merely happened after it.

    `outage_ms` is the gap that spans the fault's applied time (within the fault's own
    uncertainty and the gap's error bar): the outage the fault caused. A gap later in the
    fault's window (a failback, a controller acting late) is `late_disruption_ms`, and only
    when it is longer than the worst gap of a fault-free stretch of the same run (`floor_ms`):
    below that, the emulator makes such gaps with nothing broken. A later gap that overlaps a
    stretch in which one end was off the network on purpose (`excused`: a VM paused by its
    vMotion's switch-over) is that workload's, reported with it, and neither a later
    disruption of the fault nor in its `lost`."""

    outage_ms: float
    outage_error_ms: float
    loss_outage_ms: float  # RFC 6413: probes lost in that gap / rate
    late_disruption_ms: float
    late_loss_outage_ms: float
    lost: int  # every probe lost in the window, but for the excused gaps
    gap: Gap | None = None  # the gap at the fault
    late: Gap | None = None  # the largest later gap above the floor


def gap_at(gaps: Sequence[Gap], fault_ns: int, uncertainty_ns: int = 0) -> Gap | None:
    """The largest gap that spans the fault's applied time. The fault took effect somewhere in
    [applied - uncertainty, applied] (the applied time is taken when its command returned, the
    uncertainty is how long the command took); a gap spans that stretch when it overlaps it,
    give or take the gap's own error bar."""
    spanning = [g for g in gaps
                if g.start_ns - g.error_ms * NS_PER_MS <= fault_ns
                and g.end_ns + g.error_ms * NS_PER_MS >= fault_ns - uncertainty_ns]
    return max(spanning, key=lambda g: g.outage_ms, default=None)


def fault_outage(stream: Stream, fault_ns: int, start_ns: int, end_ns: int,
                 uncertainty_ns: int = 0, floor_ms: float = 0.0,
                 excused: Sequence[tuple[int, int]] = ()) -> FaultOutage:
    """The fault's own outage and its window's later disruptions, for probes sent in
    [start_ns, end_ns] (the window starts a little before the fault and ends at the next).
    `excused`: [start, end] ns when an end of the probe was off the network on purpose."""
    result = analyse(stream, fault_ns, start_ns=start_ns, end_ns=end_ns)
    gap = gap_at(result.gaps, fault_ns, uncertainty_ns)
    theirs = [g for g in result.gaps if g is not gap
              and any(overlaps((g.start_ns, g.end_ns), w) for w in excused)]
    later = [g for g in result.gaps if g is not gap and g.start_ns > fault_ns
             and g.outage_ms > floor_ms and g not in theirs]
    late = max(later, key=lambda g: g.outage_ms, default=None)
    return FaultOutage(
        outage_ms=gap.outage_ms if gap else 0.0,
        outage_error_ms=gap.error_ms if gap else result.interval_ms,
        loss_outage_ms=gap.loss_outage_ms if gap else 0.0,
        late_disruption_ms=late.outage_ms if late else 0.0,
        late_loss_outage_ms=late.loss_outage_ms if late else 0.0,
        lost=result.lost - sum(g.lost for g in theirs), gap=gap, late=late)


def delay_before(stream: Stream, fault_ns: int, window_ns: int) -> float | None:
    """The median one-way delay, in ms, of the probes sent in the `window_ns` before the fault
    that arrived: how long the queue ahead of a frame was when the fault struck. Frames queued
    on a cable die with it, so where the fault cuts that queue's path an outage is about this
    long before the fabric has done anything (docs/noise.md). None when no probe arrived. Both
    ends' stamps are wall clocks: on one machine they are the same clock."""
    delays = [r - t for t, r in zip(stream.recv_t_send, stream.recv_t_recv)
              if fault_ns - window_ns <= t < fault_ns]
    return _ms(statistics.median(delays)) if delays else None


def quiet_noise_floor(stream: Stream, windows: Sequence[tuple[int, int]]) -> float | None:
    """The largest gap in any quiet window; None when there is no quiet window."""
    floors = [noise_floor(stream, lo, hi).noise_floor_ms for lo, hi in windows]
    return max(floors) if floors else None
