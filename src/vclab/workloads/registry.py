"""Every workload kind an experiment can name, and its adapter: the one place a kind is known."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vclab.workloads.adapter import Adapter
from vclab.workloads.heartbeats.adapter import HeartbeatsAdapter
from vclab.workloads.iperf.adapter import Iperf3Adapter
from vclab.workloads.iscsi.adapter import IscsiAdapter
from vclab.workloads.locking.adapter import LockingAdapter
from vclab.workloads.probe.adapter import ProbeAdapter
from vclab.workloads.vmotion.adapter import VmotionAdapter

if TYPE_CHECKING:
    from vclab.experiments.spec import Workload as WorkloadEntry

ADAPTERS: dict[str, type[Adapter]] = {a.kind: a for a in (
    ProbeAdapter, Iperf3Adapter, HeartbeatsAdapter, VmotionAdapter, IscsiAdapter, LockingAdapter)}


def adapter_for(entry: WorkloadEntry, index: int) -> Adapter | None:
    cls = ADAPTERS.get(entry.kind)
    return cls(entry, index) if cls else None
