"""Every workload kind an experiment can name, its adapter and the metrics and series it
declares: the one place a kind is known. Compare, the summary, the report and the plots learn
metrics and series here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vclab.workloads.adapter import SECTIONS, Adapter, Direction, MetricInfo, SeriesInfo
from vclab.workloads.heartbeats.adapter import HeartbeatsAdapter
from vclab.workloads.iperf.adapter import Iperf3Adapter
from vclab.workloads.iscsi.adapter import IscsiAdapter
from vclab.workloads.locking.adapter import LockingAdapter
from vclab.workloads.probe.adapter import ProbeAdapter
from vclab.workloads.spec import WorkloadSpec
from vclab.workloads.vmotion.adapter import VmotionAdapter

__all__ = ["ADAPTERS", "METRICS", "SERIES", "WORKLOAD_KINDS", "Direction", "MetricInfo",
           "SeriesInfo", "adapter_for", "metric_info", "rate_bound", "series_info"]

if TYPE_CHECKING:
    from vclab.experiments.spec import Workload as WorkloadEntry

# In this order the tables show each section's metrics: what a fault cost to the probes first.
ADAPTERS: dict[str, type[Adapter]] = {a.kind: a for a in (
    ProbeAdapter, IscsiAdapter, HeartbeatsAdapter, VmotionAdapter, Iperf3Adapter, LockingAdapter)}

# In this order a repetition's timeline stacks each kind's series, as a reader follows a
# failure: the probes see it first, then what the traffic built on them suffered.
TIMELINE_ORDER: tuple[type[Adapter], ...] = (
    ProbeAdapter, Iperf3Adapter, IscsiAdapter, HeartbeatsAdapter, VmotionAdapter, LockingAdapter)

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


def _series() -> dict[str, SeriesInfo]:
    """Every declared series by name, in timeline order; kinds that share a name declare it
    alike (one panel holds them all)."""
    found: dict[str, SeriesInfo] = {}
    rest = tuple(a for a in ADAPTERS.values() if a not in TIMELINE_ORDER)
    for a in TIMELINE_ORDER + rest:
        for s in a.series:
            if found.setdefault(s.name, s) != s:
                raise TypeError(f"{a.kind} declares series {s.name} unlike another kind: "
                                f"{s} != {found[s.name]}")
    return found


SERIES: dict[str, SeriesInfo] = _series()


def series_info(name: str) -> SeriesInfo:
    """Declared series by name; any other (an older run's) is plotted under its own name."""
    return SERIES.get(name) or SeriesInfo(name)
