"""The `vmotion` entry of an experiment: a live migration of one VM to another hypervisor.
(The precopy model's guest and link are vmotion/model.py's VmotionSpec.)"""

from __future__ import annotations

from typing import Literal

from vclab.topology.spec import Name
from vclab.workloads.spec import Instant, Problems, WorkloadSpec, unknown


class MigrationSpec(WorkloadSpec):
    kind = "vmotion"

    vm: Name
    to: Name
    at: Instant = 0.0
    mode: Literal["shared", "shared-nothing"] = "shared"

    def problems(self, experiment, cluster, index):
        from vclab.workloads.vmotion.migration import migration_problems

        if why := unknown(self.vm, set(cluster.vms), "VM"):
            return [(("vm",), why)]
        if why := unknown(self.to, set(cluster.hypervisors), "hypervisor"):
            return [(("to",), why)]
        whys = migration_problems(cluster, self.vm, self.to)
        if whys:
            return [(("to",), f"{self.vm} cannot migrate to {self.to}: {why}") for why in whys]
        return self.in_run(experiment.duration)

    def full_rate_flow(self, cluster):
        # The pre-copy sends as fast as the vMotion network lets it, from the VM's host.
        return (cluster.vms[self.vm].host, self.to) if self.vm in cluster.vms else None

    def in_run(self, duration_ms: float) -> Problems:
        """A vMotion starts inside the run. It may end after it: the runner waits for a
        migration to finish (migration-storage-modes.yaml relies on that), but one that starts
        after the probes stopped measures nothing."""
        if self.at >= duration_ms:
            return [(("at",), f"the migration of {self.vm} starts at {self.at:g} ms, when the run "
                     f"has ended ({duration_ms:g} ms): start it earlier or lengthen `duration`")]
        return []
