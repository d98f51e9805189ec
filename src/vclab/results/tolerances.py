"""What the applications tolerate, each limit with where it comes from (after sonic-mgmt's
advanced-reboot: every measured disruption is judged against the limit its user has).

A cell is judged on every repetition that counts: "within" only when the worst of them is."""

from __future__ import annotations

from dataclasses import dataclass

from vclab.results.compare import Comparison, Row, format_value


@dataclass(frozen=True)
class Tolerance:
    metrics: tuple[str, ...]
    limit_ms: float
    what: str  # the limit in the user's words
    source: str


TOLERANCES: tuple[Tolerance, ...] = (
    Tolerance(("switchover_ms", "downtime_ms"), 500.0, "VMware's vMotion switch-over (stun) goal",
              "Broadcom/VMware KB 436882 'How to identify vMotion stun time for a vMotion': pre-copy "
              "iterates until the remaining pages can be sent within the 500 ms switchover time goal"),
    Tolerance(("longest_stall_ms", "fault_stall_ms", "late_stall_ms"), 10_000.0,
              "the iSCSI initiator's timeouts (a longer stall drops the session)",
              "ESXi software iSCSI adapter defaults NoopOutTimeout 10 s and RecoveryTimeout 10 s "
              "(esxcli iscsi adapter param get); open-iscsi iscsid.conf noop_out_interval 5 s + "
              "noop_out_timeout 5 s"),
    Tolerance(("heartbeat_gap_ms",), 12_000.0, "vSphere HA isolation detection (12-15 s)",
              "vSphere Availability guide: heartbeats every second, a host unheard for 15 s is "
              "declared failed; its isolation checks run before that, so a gap past 12 s risks "
              "an isolation response or a restart"),
    Tolerance(("outage_ms",), 50.0, "carrier-grade protection switching (50 ms)",
              "ITU-T G.841 (SDH ring protection) and Telcordia GR-253-CORE (SONET APS): traffic "
              "restored within 50 ms"),
)


@dataclass(frozen=True)
class Judgement:
    mechanism: str
    n: int
    over: int  # repetitions above the limit
    worst: float

    @property
    def within(self) -> bool:
        return self.n > 0 and self.over == 0


@dataclass(frozen=True)
class Check:
    row: Row
    tolerance: Tolerance
    cells: dict[str, Judgement]

    def text(self, mechanism: str) -> str:
        j = self.cells.get(mechanism)
        if j is None or j.n == 0:
            return "-"
        worst = format_value(j.worst, "ms")
        return f"within (worst {worst})" if j.within else f"over in {j.over} of {j.n} (worst {worst})"


def tolerance_for(metric: str) -> Tolerance | None:
    return next((t for t in TOLERANCES if metric in t.metrics), None)


def checks(c: Comparison, values: dict[tuple[str, str, str], dict[str, list[float]]]) -> list[Check]:
    """Every row that has a limit, each mechanism's repetitions against it. `values` is
    compare.per_repetition() of the same run."""
    out = []
    for row in c.rows:
        t = tolerance_for(row.metric)
        if t is None or row.unit != "ms":
            continue
        by_mech = values.get((row.metric, row.traffic_class, row.fault), {})
        cells = {m: Judgement(m, len(v), sum(1 for x in v if x > t.limit_ms), max(v, default=0.0))
                 for m, v in by_mech.items() if v}
        out.append(Check(row, t, cells))
    return out
