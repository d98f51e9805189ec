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

    @property
    def carrier_shared(self) -> bool:
        """Setting one end of a cable down takes the other's carrier with it at the same
        instant: a cable is one veth pair (`system` ports, one machine), and closing a veth
        turns off its peer's carrier in the same call. Not so with wired cables (each root end
        has a wire-side peer, topology/wire.py) or ends on two machines; and unknown for a bare
        plan."""
        if self._lab is None or getattr(self._lab, "ports", "system") != "system":
            return False
        placement = getattr(getattr(self._lab, "executor", None), "placement", None)
        return placement is None or not placement.remote

    def end_on(self, link: str, switch: str) -> str:
        """The end of `link` that belongs to `switch` (a physical switch)."""
        bridge = self.plan.bridge(switch).name
        for v in self.plan.cables():
            if v.name == link:
                return v.a.ifname if v.a.node == bridge else v.b.ifname
        raise VclabError(f"no cable named {link!r} in the built cluster")

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
