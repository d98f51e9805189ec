"""The lab as everything above it sees it: the runner, the workloads' adapters, a migration.

`vclab.lab.lab.Lab` is the real one; tests/unit/test_runner_fake_lab.py runs the runner on a
fake with this face. The plan is a snapshot that only the lab replaces (a VM move); every root
command goes through `executor` (or `sh`, the same thing with the lab's defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from vclab.lab.procs import ProcessTracker
from vclab.topology.plan import BuildPlan
from vclab.topology.spec import Cluster


class Executor(Protocol):
    def run(self, args: list[str], check: bool = True, stdin: str | None = None,
            server: str | None = None) -> str: ...


class LabFace(Protocol):
    plan: BuildPlan
    cluster: Cluster
    tracker: ProcessTracker
    executor: Executor
    workdir: Path

    def node(self, name: str) -> Any:
        """A node by host, bridge or switch name: something with popen(args, **kw)."""

    def sh(self, args: list[str], check: bool = True, stdin: str | None = None,
           server: str | None = None) -> str: ...

    def move_vm(self, vm: str, to_hypervisor: str,
                between: Callable[[], None] | None = None) -> dict[str, int]:
        """Move a VM's ports (the plan follows); tells the mechanism (vm_moved)."""

    def vm_will_move(self, vm: str, to_hypervisor: str) -> None:
        """A migration's pre-copy starts: the mechanism may get ready (sdn builds the
        destination's rules and sends nothing yet)."""

    def controller_action(self, what: str) -> None: ...

    def controller_events(self) -> list[dict]:
        """What the fabric's controller did: [{t_ns, kind, detail}] (empty without one)."""

    def __enter__(self) -> LabFace: ...

    def __exit__(self, *exc: object) -> None: ...
