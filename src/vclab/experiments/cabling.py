"""Cable ends by the user's names, read off a build plan (what faults need to find ports)."""

from __future__ import annotations

from typing import Any

from vclab.errors import VclabError
from vclab.topology.plan import BuildPlan


class PlanCabling:
    """`PlanCabling(plan)`, or `PlanCabling(lab=lab)`: the lab's plan as it is now (a VM move
    replaces the lab's plan while a run holds this)."""

    def __init__(self, plan: BuildPlan | None = None, *, lab: Any = None) -> None:
        if (plan is None) == (lab is None):
            raise TypeError("PlanCabling takes a plan or a lab")
        self._plan, self._lab = plan, lab

    @property
    def plan(self) -> BuildPlan:
        return self._lab.plan if self._lab is not None else self._plan

    def link_ends(self, link: str) -> tuple[str, str]:
        for v in self.plan.cables():
            if v.name == link:
                return v.a.ifname, v.b.ifname
        raise VclabError(f"no cable named {link!r} in the built cluster")

    def switch_links(self, switch: str) -> list[str]:
        bridge = self.plan.bridge(switch).name
        return [v.name for v in self.plan.cables() if bridge in (v.a.node, v.b.node)]

    def management_links(self, host: str) -> list[str]:
        server = self.plan.host(host)
        return [v.name for v in self.plan.cables() if v.name.startswith(f"{server.name}.")]
