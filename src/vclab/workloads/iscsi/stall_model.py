"""What an iSCSI I/O stall should be after a storage path black-holes for a while. Pure.

A black hole (carrier up, every frame dropped) is invisible to both ends: nothing fails, the
segments in flight are simply lost. TCP gets them through by retransmitting after its RTO, and
each unanswered retransmission doubles the wait (RFC 6298 5.5): the k-th retransmission leaves
RTO * (2^k - 1) after the lost segment. Linux's RTO is the smoothed RTT plus the RTT variance,
the variance part never below 200 ms (TCP_RTO_MIN), so on a LAN it is ~200 ms plus the RTT: a
10 ms black hole costs an I/O ~200 ms, not 10 ms. (A tail-loss probe fires earlier only with
several segments in flight; with one, Linux waits ~1.5 RTT + 200 ms delayed-ACK bound, i.e. no
earlier than the RTO.)

The initiator adds its own timers: an I/O older than `io_timeout_ms` with another path logged
in makes it declare the path dead and re-issue the I/O there (one RTT later it completes). So
the stall is whichever comes first: TCP's first retransmission after the black hole ends, or
the initiator's failover. The worst I/O is the one whose segment was lost right as the black
hole began, which is what the longest completion gap measures.
"""

from __future__ import annotations

from dataclasses import dataclass

TCP_RTO_MIN_MS = 200.0  # Linux include/net/tcp.h TCP_RTO_MIN (HZ/5)
TCP_RTO_MAX_MS = 120_000.0  # TCP_RTO_MAX


def linux_rto_ms(srtt_ms: float, rttvar_ms: float = 0.0, rto_min_ms: float = TCP_RTO_MIN_MS) -> float:
    """Linux's RTO from the smoothed RTT and its variance (tcp_set_rto: srtt + rttvar, the
    variance floored at rto_min)."""
    return min(TCP_RTO_MAX_MS, srtt_ms + max(rttvar_ms, rto_min_ms))


def retransmission_times_ms(rto_ms: float, until_ms: float) -> list[float]:
    """When each retransmission of a segment lost at 0 leaves: RTO, 3 RTO, 7 RTO... up to and
    including the first one at or after `until_ms`."""
    if rto_ms <= 0:
        raise ValueError("rto_ms must be > 0")
    out: list[float] = []
    wait, t = rto_ms, 0.0
    while True:
        t += wait
        out.append(t)
        if t >= until_ms:
            return out
        wait = min(wait * 2, TCP_RTO_MAX_MS)


def tcp_recovery_ms(outage_ms: float, rto_ms: float, rtt_ms: float = 0.0) -> float:
    """When a segment lost as the black hole began is delivered and answered: the first
    retransmission after the outage ended, plus one round trip."""
    return retransmission_times_ms(rto_ms, outage_ms)[-1] + rtt_ms


@dataclass(frozen=True)
class StallPrediction:
    stall_ms: float
    cause: str  # "tcp-retransmission" | "initiator-failover"
    tcp_ms: float
    retransmissions: int
    failover_ms: float | None  # None when there is no other path to fail over to


def predict_stall(outage_ms: float, rto_ms: float, *, rtt_ms: float = 0.0,
                  io_timeout_ms: float | None = None, other_path: bool = False) -> StallPrediction:
    """The longest I/O stall a black hole of `outage_ms` should cause."""
    tcp = tcp_recovery_ms(outage_ms, rto_ms, rtt_ms)
    n = len(retransmission_times_ms(rto_ms, outage_ms))
    failover = io_timeout_ms + rtt_ms if (other_path and io_timeout_ms) else None
    if failover is not None and failover < tcp:
        return StallPrediction(failover, "initiator-failover", tcp, n, failover)
    return StallPrediction(tcp, "tcp-retransmission", tcp, n, failover)


def stall_cause(outage_ms: float | None, stall_ms: float | None, failover_ms: float | None,
                rto_ms: float = TCP_RTO_MIN_MS) -> str:
    """In words, what set a measured I/O stall, from the network outage beside it: the
    initiator's failover when it switched paths, TCP's retransmission timer when the stall
    outlasted the outage by about an RTO or more, else the network itself; none when the
    stall is 0 (no pause beyond what the I/O makes with nothing broken)."""
    if stall_ms is None:
        return ""
    if stall_ms == 0:
        return "no stall beyond the I/O's noise floor"
    if failover_ms is not None and failover_ms <= stall_ms + 50:
        return "initiator failover (its I/O timeout)"
    outage = outage_ms or 0.0
    if stall_ms >= rto_ms * 0.9 and stall_ms > outage + rto_ms * 0.5:
        return "TCP retransmission timeout (200 ms minimum, doubling)"
    return "the network outage"
