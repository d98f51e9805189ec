"""Every workload kind an experiment can name, its adapter and the metrics it declares: the one
place a kind is known. Compare, the summary and the report learn metrics here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vclab.workloads.adapter import SECTIONS, Adapter, Direction, MetricInfo
from vclab.workloads.heartbeats.adapter import HeartbeatsAdapter
from vclab.workloads.iperf.adapter import Iperf3Adapter
from vclab.workloads.iscsi.adapter import IscsiAdapter
from vclab.workloads.locking.adapter import LockingAdapter
from vclab.workloads.probe.adapter import ProbeAdapter
from vclab.workloads.spec import WorkloadSpec
from vclab.workloads.vmotion.adapter import VmotionAdapter

__all__ = ["ADAPTERS", "METRICS", "WORKLOAD_KINDS", "Direction", "MetricInfo", "adapter_for",
           "metric_info", "rate_bound"]

if TYPE_CHECKING:
    from vclab.experiments.spec import Workload as WorkloadEntry

# In this order the tables show each section's metrics: what a fault cost to the probes first.
ADAPTERS: dict[str, type[Adapter]] = {a.kind: a for a in (
    ProbeAdapter, IscsiAdapter, HeartbeatsAdapter, VmotionAdapter, Iperf3Adapter, LockingAdapter)}


# The entry each kind's key holds in an experiment file (workloads/<kind>/spec.py).
WORKLOAD_KINDS: dict[str, type[WorkloadSpec]] = {k: a.spec_type for k, a in ADAPTERS.items()}


def adapter_for(entry: WorkloadEntry, index: int) -> Adapter | None:
    cls = ADAPTERS.get(entry.kind)
    return cls(entry, index) if cls else None


def _metrics() -> dict[str, MetricInfo]:
    """Every declared metric by name, in table order. Kinds that share a name (iperf3's and
    iSCSI's throughput_bps) must declare it alike: a row pools them."""
    found: dict[str, MetricInfo] = {}
    for section in SECTIONS:
        for a in ADAPTERS.values():
            for m in a.metrics:
                if m.name in found and found[m.name] != m:
                    raise TypeError(f"{a.kind} declares {m.name} unlike another kind: "
                                    f"{m} != {found[m.name]}")
                if m.section == section:
                    found.setdefault(m.name, m)
    return found


METRICS: dict[str, MetricInfo] = _metrics()


def rate_bound(kind: str, name: str) -> bool:
    """Whether a kind's metric or series `name` is bound by the lab's (scaled) link rates."""
    a = ADAPTERS.get(kind)
    return a is not None and name in a.rate_bound


def metric_info(name: str) -> MetricInfo:
    """Declared metrics by name; any other (the fabric's fidelity ratios) is shown but never
    given a winner."""
    return METRICS.get(name) or MetricInfo(name)
