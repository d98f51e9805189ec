"""The iperf3 entry of an experiment: throughput, and its lowest second during each fault."""

from __future__ import annotations

import json

from vclab.results.model import Raw, Series
from vclab.workloads.adapter import (BetweenTwo, MetricInfo, Outcome, SeriesInfo, address,
                                     ms_since)
from vclab.workloads.iperf.spec import Iperf3Spec
from vclab.workloads.iperf.workload import Iperf3


class Iperf3Adapter(BetweenTwo):
    spec_type = Iperf3Spec
    metrics = (
        MetricInfo("throughput_during_fault_bps", "throughput during the fault", "higher",
                   "headline", short="throughput"),
        MetricInfo("throughput_bps", "throughput", "higher", short="throughput"),
        # what iperf3's parser also reports, should the adapter store them
        MetricInfo("min_interval_bps", "lowest iperf3 interval", "higher"),
        MetricInfo("jitter_ms", "jitter", "lower"),
    )
    series = (SeriesInfo("throughput_bps", "iperf3 throughput", unit="Gbit/s", scale=1e9),)
    rate_bound = frozenset({"throughput_bps", "throughput_during_fault_bps", "min_interval_bps"})

    def make(self, lab, tracker, workdir, duration_s):
        s = self.spec
        rate = None if s.rate == "max" else float(s.rate)
        return Iperf3(lab.node(s.dst), lab.node(s.src), address(lab, s.dst, s.network), tracker,
                      workdir / f"iperf{self.index}", protocol=s.protocol, duration_s=duration_s,
                      interval_s=0.1, rate_bps=rate, port=5201 + self.index, name=self.name)

    def outcome(self, raw, t0_ns, end_ns, faults):
        out = Outcome()
        common = self.common
        out.raw.append(Raw(self.name, json.dumps(raw.get("client", {})), "iperf3.json"))
        m = Iperf3.parse(raw)
        points = [(ms_since(t0_ns, iv["t"] * 1e9 + (iv["end_s"] - iv["start_s"]) * 1e9), iv["bits_per_second"])
                  for iv in m["intervals"]]
        out.series.append(Series(name="throughput_bps", points=points, **common))
        out.metrics.append(self.metric("throughput_bps", m["throughput_bps"]))
        for f in faults:
            t = ms_since(t0_ns, f.applied_ns)
            during = [v for ts, v in points if t <= ts <= t + 1000]
            if during:
                out.metrics.append(self.metric("throughput_during_fault_bps", min(during), fault=f.name))
        return out
