"""The `probe` entry of an experiment: numbered UDP probes both ways between two hosts."""

from __future__ import annotations

from vclab.workloads.spec import BetweenTwo, Span


class ProbeSpec(BetweenTwo):
    kind = "probe"

    every: Span = 1.0
