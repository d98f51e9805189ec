"""The contract every workload follows, after flent's runners: check before any traffic,
start, stop, collect raw output, and parse it with a pure function tested on saved output."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from vclab.lab.agent import AgentError


class WorkloadError(AgentError):
    """A workload cannot run (missing tool, unreachable peer) or its tool failed."""


class Workload(ABC):
    #: short kind name used in results ("probe", "iperf3", "heartbeats", "vmotion", "iscsi")
    kind: str = ""

    @abstractmethod
    def check(self) -> None:
        """Raise WorkloadError with the reason if this workload cannot run; sends no traffic."""

    @abstractmethod
    def start(self) -> None:
        """Start the processes (tracked by PID) and return at once."""

    @abstractmethod
    def stop(self) -> None:
        """End every process this workload started, by PID. Safe to call twice."""

    @abstractmethod
    def collect(self) -> Any:
        """The raw output (samples, tool JSON) after stop()."""

    def off_network(self) -> list[tuple[str, int, int]]:
        """(host, start ns, end ns) for each stretch this workload took a host off the network
        on purpose (a VM paused by its vMotion): the gaps a probe to it shows there are this
        workload's, not a fault's. Valid once the workload is done."""
        return []

    @staticmethod
    @abstractmethod
    def parse(raw: Any) -> dict[str, Any]:
        """Pure: raw output -> metrics dict. Unit-tested on saved output."""
