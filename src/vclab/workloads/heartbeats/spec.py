"""The `heartbeats` entry of an experiment: HA agents on the hypervisors, with their timers."""

from __future__ import annotations

from vclab.topology.spec import Name
from vclab.workloads.spec import Span, WorkloadSpec, hosts, unknown


class HeartbeatsSpec(WorkloadSpec):
    kind = "heartbeats"

    isolation_address: Name | None = None  # a node whose management address hosts ping
    interval: Span = 1000.0
    failure_after: Span | None = None  # defaults: the HA product's published defaults
    isolation_after: Span | None = None

    def problems(self, experiment, cluster, index):
        if self.isolation_address is not None and \
                (why := unknown(self.isolation_address, hosts(cluster), "host")):
            return [(("isolation_address",), why)]
        return []
