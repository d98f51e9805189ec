"""What one finished repetition hands to the results store, and what the store's readers return.

The runner fills a `RepetitionResult` and calls `ResultStore.record_repetition` once: everything
in it lands in one transaction, so a killed run loses at most the repetition in flight.

Times: `applied_ns` and `started_ns`/`finished_ns` are wall-clock (time.time_ns()); every other
time (`*_ms`, series and event `t_ms`) is in ms since the repetition's `started_ns`, so a
repetition re-plots without knowing when it ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# partial: the repetition ran, but a workload's outcome could not be read; its rows leave the
# repetition out (an event WORKLOAD_FAILED names the workload), every other row counts it.
RepetitionStatus = Literal["ok", "partial", "failed", "interrupted"]
REPETITION_STATUSES: tuple[str, ...] = ("ok", "partial", "failed", "interrupted")
WORKLOAD_FAILED = "workload_failed"  # event kind; detail: workload, kind, traffic_class, error
# event kind: a probe sender's wall clock moved against its monotonic clock; detail: step_ms
WALL_CLOCK_STEP = "wall_clock_step"
# A repetition run again because the hypervisor took the CPU (runner.STOLEN_LIMIT).
RAN_AGAIN = "ran_again"


@dataclass
class FaultRecord:
    """A fault as it really happened: scheduled_ms is the plan, applied_* when it took effect."""

    name: str  # unique within the repetition, e.g. "esx1.vmnic0 down@6s"
    kind: str  # link | switch | controller | host
    target: str  # "esx1.vmnic0", "tor-a"
    action: str  # down | up | silent | restore | flap | fail | recover | isolate | rejoin | kill
    scheduled_ms: float
    applied_ns: int  # wall clock
    applied_ms: float  # since the repetition started
    undone_ms: float | None = None  # when its undo was applied, if it was undone in this repetition
    detail: dict[str, Any] = field(default_factory=dict)  # the commands run, their output...


@dataclass
class Series:
    """Samples of one quantity over time from one workload, e.g. a probe's gap_ms.

    For durations (gap_ms, latency_ms) t_ms is when the gap or I/O ended: the timeline draws
    each as the span [t - value, t]."""

    workload: str  # the workload's name in this experiment, e.g. "probe esx1>esx2 vmotion"
    kind: str  # probe | heartbeats | vmotion | iscsi | iperf3
    traffic_class: str  # the network it runs on ("" when it has none)
    name: str  # gap_ms | rtt_ms | throughput_bps | latency_ms ...
    points: Sequence[tuple[float, float]]  # (t_ms since the repetition started, value)
    unit: str = ""  # defaults from the name's suffix (_ms -> ms, _bps -> bit/s)


@dataclass
class Event:
    """Something that happened at one instant: a host declared failed, a vMotion round..."""

    workload: str
    t_ms: float
    kind: str  # declared_failed | isolated | heartbeat_missed | round | switch_over ...
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Metric:
    """One derived number for one workload in one repetition (per fault when `fault` is set)."""

    workload: str
    kind: str
    traffic_class: str
    name: str  # outage_ms | loss_outage_ms | lost | noise_floor_ms | longest_stall_ms |
    #            false_failures | total_ms | downtime_ms | throughput_during_fault_bps
    value: float
    unit: str = ""  # defaults from the name (see units_for)
    fault: str = ""  # the FaultRecord.name this measures; "" = the whole repetition


@dataclass
class Raw:
    """A tool's output exactly as it came (iperf3 JSON, agent logs), kept for re-parsing."""

    workload: str
    data: bytes | str
    name: str = ""  # e.g. "iperf3.json", "agent-esx1.log"


@dataclass
class RepetitionResult:
    """Everything one repetition of one mechanism produced. The runner fills this."""

    mechanism: str  # MechanismChoice.label: "sdn", "rstp", "rstp+balance-slb"
    index: int  # 1-based repetition number
    seed: int
    status: RepetitionStatus = "ok"
    reason: str = ""  # why it failed or was interrupted, in words the user can act on
    started_ns: int = 0
    finished_ns: int = 0
    faults: list[FaultRecord] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    raw: list[Raw] = field(default_factory=list)


# ---- what the readers return ----

@dataclass(frozen=True)
class RunInfo:
    id: int
    experiment: str
    experiment_yaml: str
    topology_yaml: str
    started_ns: int
    finished_ns: int | None
    status: str  # running | finished | interrupted | failed
    vclab_version: str
    software: dict[str, Any]
    capabilities: Any  # as `vclab doctor --json` gives it
    host: dict[str, Any]
    settings: dict[str, Any]  # effective values the runner resolved, e.g. ha_isolation_ms


@dataclass(frozen=True)
class RepetitionInfo:
    id: int
    run_id: int
    mechanism: str
    index: int
    seed: int
    status: str
    reason: str
    started_ns: int
    finished_ns: int


@dataclass(frozen=True)
class MetricRow:
    """A metric with the repetition it came from: what comparisons are made of."""

    repetition_id: int
    mechanism: str
    index: int
    status: str
    workload: str
    kind: str
    traffic_class: str
    name: str
    value: float
    unit: str
    fault: str


def default_unit(name: str) -> str:
    if name.endswith("_ms"):
        return "ms"
    if name.endswith("_bps"):
        return "bit/s"
    if name.endswith("_bytes"):
        return "B"
    return ""


def rounds_as_events(workload: str, rounds: Iterable[Any], t0_ms: float) -> list[Event]:
    """vMotion rounds as `round` events, which is how the plots find them. A round is anything
    with index, phase, bytes, start_s, duration_s: vmotion_model.Round or a dict from the vMotion
    workload's parse(); start_s counts from the migration's start, t0_ms from the repetition's."""
    def get(r: Any, name: str) -> Any:
        return r[name] if isinstance(r, dict) else getattr(r, name)

    return [Event(workload, t0_ms + get(r, "start_s") * 1e3, "round",
                  {"index": get(r, "index"), "phase": get(r, "phase"), "bytes": get(r, "bytes"),
                   "duration_ms": get(r, "duration_s") * 1e3})
            for r in rounds]
