"""What an experiment's workload entry becomes: one adapter per workload kind, found through
workloads/registry.py. An adapter makes its workload on a built lab and turns the workload's
parsed output into what the results store keeps (series, metrics per fault, events, raw tool
output); the hooks let a kind react to the run (a fault, another workload, the end)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vclab.lab.procs import ProcessTracker
from vclab.results.model import Event, FaultRecord, Metric, Raw, Series
from vclab.workloads.base import Workload

if TYPE_CHECKING:
    from vclab.experiments.spec import Workload as WorkloadEntry

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


class Adapter:
    kind = ""
    start_at_ms: float | None = None  # None: with the others, before the first fault

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
        """Runs once every workload is made: hook into another workload (locking into vmotion)."""

    def on_fault(self, workload: Workload, fault: FaultRecord) -> None:
        """Runs right after a fault took effect, for the workloads that react to one."""

    def finish(self, workload: Workload, timeout: float) -> None:
        """Runs when the repetition's time is up, before stop(): a workload that must end by
        itself (a migration that started) is waited for here."""

    def outcome(self, raw: Any, t0_ns: int, end_ns: int, faults: list[FaultRecord]) -> Outcome:
        raise NotImplementedError


class BetweenTwo(Adapter):
    """A workload from one host to another on one network (probe, iperf3)."""

    @property
    def name(self) -> str:
        return f"{self.kind} {self.spec.src}>{self.spec.dst} {self.spec.network}"
