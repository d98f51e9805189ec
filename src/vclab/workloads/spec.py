"""What every workload entry of an experiment builds on: strict models, times in ms, and the
check of the names an entry uses against its cluster. Each kind's own entry lives in its
package (probe/spec.py, ...) and is found through workloads/registry.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from vclab.errors import shown
from vclab.topology.spec import Cluster, Name
from vclab.units import Millis

if TYPE_CHECKING:
    from vclab.experiments.spec import Experiment


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# Times: finite and not negative (units.Millis), and within a day, which no run comes near.
DAY_MS = 86_400_000.0
Instant = Annotated[Millis, Field(le=DAY_MS)]  # a moment or a wait: 0 is allowed
Span = Annotated[Millis, Field(gt=0, le=DAY_MS)]  # a length or a period: more than 0
Count = Annotated[int, Field(strict=True)]  # `true` is not 1

Problems = list[tuple[tuple, str]]  # (path inside the entry, what is wrong)


def unknown(name: str, pool: set[str], what: str) -> str | None:
    """Why `name` is not among `pool`, or None when it is."""
    if name in pool:
        return None
    return f"unknown {what} {shown(name)}; {what}s are: {', '.join(sorted(pool)) or '(none)'}"


def hosts(c: Cluster) -> set[str]:
    """Everything with an address a workload can run on or reach."""
    return set(c.hypervisors) | set(c.storage) | set(c.management) | set(c.vms)


def members(c: Cluster, network: str) -> set[str]:
    m = {h for h, s in c.servers().items() if network in s.networks}
    m |= {a for a, s in c.storage.items() if network in s.portals}
    m |= {v for v, s in c.vms.items() if network in s.networks}
    return m


class WorkloadSpec(Strict):
    """One workload entry, under the key that names its kind (`- probe: {...}`)."""

    kind: ClassVar[str] = ""

    def problems(self, experiment: Experiment, cluster: Cluster, index: int) -> Problems:
        """What is wrong with this entry on its cluster, in its experiment (entry `index`)."""
        return []

    def at_scale(self, k: int) -> WorkloadSpec:
        """This entry in a lab whose rates are 1/k of the cluster's (experiments/scale.py)."""
        return self

    def full_rate_flow(self, cluster: Cluster) -> tuple[str, str] | None:
        """(source host, destination host) of a flow this entry starts asking for all the rate
        it can get (its first cable must carry it at the cable's rate unless a later cable on
        its way is full: experiments/scale.py judges that uplink), or None."""
        return None


class BetweenTwo(WorkloadSpec):
    """From one host to another on one network (probe, iperf3)."""

    src: Name = Field(alias="from")
    dst: Name = Field(alias="to")
    network: Name

    def problems(self, experiment, cluster, index):
        if self.src == self.dst:
            return [(("to",), f"{self.kind} from {self.src} to itself never leaves the host: "
                     "name another member of the network")]
        if why := unknown(self.network, set(cluster.networks), "network"):
            return [(("network",), why)]
        out: Problems = []
        on = members(cluster, self.network)
        for end, key in ((self.src, "from"), (self.dst, "to")):
            if why := unknown(end, hosts(cluster), "host"):
                out.append(((key,), why))
            elif end not in on:
                out.append(((key,), f"{end!r} is not on network {self.network!r}; its members "
                            f"are: {', '.join(sorted(on))}"))
        return out
