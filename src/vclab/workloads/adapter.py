"""What an experiment's workload entry becomes: one adapter per workload kind, found through
workloads/registry.py. An adapter makes its workload on a built lab and turns the workload's
parsed output into what the results store keeps (series, metrics per fault, events, raw tool
output); the hooks let a kind react to the run (a fault, another workload, the end)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from vclab.lab.procs import ProcessTracker
from vclab.results.model import Event, FaultRecord, Metric, Raw, Series, default_unit
from vclab.workloads.base import Workload
from vclab.workloads.spec import WorkloadSpec

if TYPE_CHECKING:
    from vclab.experiments.spec import Workload as WorkloadEntry

Direction = Literal["lower", "higher"] | None
# Where a metric sits in the tables: what a fault cost first, then the details, then what only
# gives context (no winner). Within a section, kinds in the registry's order.
Section = Literal["headline", "detail", "context"]
SECTIONS: tuple[Section, ...] = ("headline", "detail", "context")


@dataclass(frozen=True)
class MetricInfo:
    """A metric a workload kind produces, as compare, the summary and the report show it."""

    name: str
    label: str = ""  # what the tables call it; default: the name in words
    direction: Direction = None  # which way is better; None: context, no winner
    section: Section = "detail"
    short: str = ""  # the summary line's name, when it heads one
    unit: str = ""  # default: from the name's suffix (_ms -> ms, _bps -> bit/s)

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.name.replace("_", " "))
        if not self.unit:
            object.__setattr__(self, "unit", default_unit(self.name))


@dataclass(frozen=True)
class SeriesInfo:
    """A series a workload kind stores, as the timeline plots it: one panel per name."""

    name: str
    label: str = ""  # the panel's title; default: the name in words
    axis: str = ""  # what the y axis measures, shown before the unit ("gap" -> "gap (ms)")
    unit: str = ""  # as plotted; default: the name's suffix
    scale: float = 0.0  # stored value / plotted value; default: bit/s plotted as Gbit/s
    # Each value is a duration that ended at its time (a probe gap, an I/O's latency): drawn
    # as the span it covered.
    duration: bool = False

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.name.replace("_", " "))
        if not self.unit:
            object.__setattr__(self, "unit", self.name.rsplit("_", 1)[-1])
        if not self.scale:
            object.__setattr__(self, "scale", 1e9 if self.name.endswith("_bps") else 1.0)

    @property
    def axis_label(self) -> str:
        return f"{self.axis} ({self.unit})" if self.axis else self.unit


@dataclass
class Outcome:
    series: list[Series] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    raw: list[Raw] = field(default_factory=list)


def ms_since(t0_ns: int, t_ns: float) -> float:
    return (t_ns - t0_ns) / 1e6


def address(lab, host: str, network: str) -> str:
    return lab.plan.host(host).interface(network).ip


def quiet_windows(start_ns: int, end_ns: int, busy_ns: Sequence[int], margin_ns: int,
                  settle_ns: int) -> list[tuple[int, int]]:
    """Stretches of [start_ns, end_ns] where nothing scheduled happens: each fault or workload
    event (a vMotion starting) closes the stretch `margin_ns` before it and keeps it closed
    for `settle_ns` after (or to the end of the run). The noise floor is measured only here."""
    windows, lo = [], start_ns
    for t in sorted(busy_ns):
        if t - margin_ns > lo:
            windows.append((lo, t - margin_ns))
        lo = max(lo, t + settle_ns)
    if lo < end_ns:
        windows.append((lo, end_ns))
    return windows


class Adapter:
    spec_type: ClassVar[type[WorkloadSpec]] = WorkloadSpec  # the entry the experiment file holds
    kind = ""  # the entry's key in the file: its spec's kind
    metrics: ClassVar[tuple[MetricInfo, ...]] = ()  # every metric outcome() stores
    series: ClassVar[tuple[SeriesInfo, ...]] = ()  # every series outcome() stores
    # Its metrics and series that the lab's scaled rates bound: stored times k back at full
    # scale (experiments/scale.py). iSCSI's 4k/64k I/O is not (I/O sizes do not scale and a
    # queue depth of one is bound by round trips), nor is a vMotion's time (scale-free).
    rate_bound: ClassVar[frozenset[str]] = frozenset()
    start_at_ms: float | None = None  # None: with the others, before the first fault
    events_at_ms: tuple[float, ...] | list[float] = ()  # the others' scheduled starts (connect)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.kind = cls.spec_type.kind

    def __init__(self, entry: WorkloadEntry, index: int):
        self.entry, self.spec, self.index = entry, entry.spec, index
        self.workload: Workload | None = None

    @property
    def name(self) -> str:
        return self.kind

    @property
    def traffic_class(self) -> str:
        return getattr(self.spec, "network", "")

    @property
    def common(self) -> dict:
        """What every series and metric of this workload carries."""
        return dict(workload=self.name, kind=self.kind, traffic_class=self.traffic_class)

    def make(self, lab, tracker: ProcessTracker, workdir: Path, duration_s: float) -> Workload:
        """The workload on a built lab; `duration_s`: how long the repetition's traffic runs."""
        raise NotImplementedError

    def settings(self) -> dict:
        """What the run records of this workload's settings (e.g. the HA timers)."""
        return {}

    def prepare(self, workload: Workload) -> None:
        """Runs after every check and before the warm-up: measurements that need the fabric."""

    def connect(self, workload: Workload, others: list[tuple[Adapter, Workload]]) -> None:
        """Runs once every workload is made: hook into another workload (locking into vmotion).
        The base keeps when the others' scheduled events happen (a vMotion starting), so that
        `quiet()` leaves them out of the noise floor: call it from an override."""
        self.events_at_ms = [a.start_at_ms for a, _ in others if a.start_at_ms is not None]

    def quiet(self, t0_ns: int, end_ns: int, faults: list[FaultRecord], margin_ns: int,
              min_ns: int = 0) -> list[tuple[int, int]]:
        """Where a noise floor may be measured: after the warm-up (ARP and MAC learning are
        done) and before the first fault or workload event, `margin_ns` clear of it, in
        stretches of at least `min_ns` (a shorter one says too little). Anything after an event
        may still be settling."""
        busy = [f.applied_ns for f in faults] + [t0_ns + int(ms * 1e6) for ms in self.events_at_ms]
        return [(lo, hi) for lo, hi in quiet_windows(t0_ns, end_ns, busy, margin_ns,
                                                     settle_ns=end_ns - t0_ns)
                if hi - lo >= min_ns]

    def on_fault(self, workload: Workload, fault: FaultRecord) -> None:
        """Runs right after a fault took effect, for the workloads that react to one."""

    def finish(self, workload: Workload, timeout: float) -> None:
        """Runs when the repetition's time is up, before stop(): a workload that must end by
        itself (a migration that started) is waited for here."""

    def outcome(self, raw: Any, t0_ns: int, end_ns: int, faults: list[FaultRecord]) -> Outcome:
        raise NotImplementedError

    def metric(self, name: str, value: float, fault: str = "", **common: str) -> Metric:
        """One of this kind's declared metrics, in its declared unit, with this workload's
        common fields (or those given)."""
        info = next((m for m in self.metrics if m.name == name), None)
        if info is None:
            raise KeyError(f"{self.kind} declares no metric {name!r}: add it to its `metrics`")
        return Metric(name=name, value=value, unit=info.unit, fault=fault, **(common or self.common))


class BetweenTwo(Adapter):
    """A workload from one host to another on one network (probe, iperf3)."""

    @property
    def name(self) -> str:
        return f"{self.kind} {self.spec.src}>{self.spec.dst} {self.spec.network}"
