"""Workloads run their agents and tools through the lab's harness (vclab.lab.agent); a
workload's agent that fails says so as a WorkloadError, like the workload itself."""

from __future__ import annotations

from vclab.lab.agent import Agent as LabAgent
from vclab.lab.agent import Event, parse_event
from vclab.workloads.base import WorkloadError

__all__ = ["Agent", "Event", "parse_event"]


class Agent(LabAgent):
    error = WorkloadError
