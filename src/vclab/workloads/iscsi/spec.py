"""The `iscsi` entry of an experiment: an initiator per host against one array's LUN."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from vclab.topology.spec import Name
from vclab.workloads.spec import Problems, WorkloadSpec, unknown


class IscsiSpec(WorkloadSpec):
    kind = "iscsi"

    hosts: list[Name] = Field(min_length=1)
    array: Name | None = None
    lun: Name
    pattern: Literal["random-4k", "sequential-64k"] = "random-4k"
    mix: str = Field(default="70/30", pattern=r"^\d{1,3}/\d{1,3}$")  # read/write percent
    multipath: bool = True

    @field_validator("mix")
    @classmethod
    def _adds_up(cls, mix: str) -> str:
        from vclab.workloads.iscsi.agent import parse_mix  # what the agent itself will refuse

        parse_mix(mix)
        return mix

    def problems(self, experiment, cluster, index):
        out: Problems = []
        for j, h in enumerate(self.hosts):
            if why := unknown(h, set(cluster.hypervisors), "hypervisor"):
                out.append((("hosts", j), why))
        arrays = set(cluster.storage)
        array = self.array or (sorted(arrays)[0] if arrays else None)
        if array is None:
            out.append(((), "the cluster has no storage array"))
        elif why := unknown(array, arrays, "storage array"):
            out.append((("array",), why))
        elif why := unknown(self.lun, set(cluster.storage[array].luns), "LUN"):
            out.append((("lun",), why))
        return out
