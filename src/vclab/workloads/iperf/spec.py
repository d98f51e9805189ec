"""The `iperf3` entry of an experiment: one iperf3 stream between two hosts."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from vclab.units import Rate
from vclab.workloads.spec import BetweenTwo


class Iperf3Spec(BetweenTwo):
    kind = "iperf3"

    protocol: Literal["tcp", "udp"] = "tcp"
    # The rate first: its error ("must be more than 0") is the one to show for `rate: 0`.
    rate: Union[Annotated[Rate, Field(gt=0)], Literal["max"]] = "max"

    def at_scale(self, k: int) -> Iperf3Spec:
        return self if self.rate == "max" else self.model_copy(update={"rate": self.rate / k})

    def full_rate_flow(self, cluster):
        # A rate-limited or UDP stream asks for what it asks, not for what the cable carries.
        if self.rate != "max" or self.protocol != "tcp":
            return None
        host = (lambda end: cluster.vms[end].host if end in cluster.vms else end)
        return host(self.src), host(self.dst)
