"""The heartbeats entry of an experiment: false failures, heartbeat gaps, HA's declarations."""

from __future__ import annotations

import json

from vclab.results.model import Event, Raw
from vclab.workloads.adapter import Adapter, MetricInfo, Outcome, address, ms_since
from vclab.workloads.heartbeats.model import HaConfig
from vclab.workloads.heartbeats.spec import HeartbeatsSpec
from vclab.workloads.heartbeats.workload import HaMember, Heartbeats


class HeartbeatsAdapter(Adapter):
    spec_type = HeartbeatsSpec
    metrics = (
        MetricInfo("false_failures", "heartbeat false failures", "lower", "headline",
                   short="false fails"),
        MetricInfo("heartbeat_gap_ms", "longest HA heartbeat gap", "lower", short="HA gap"),
    )

    def config(self):
        """The HA timers: the product's published defaults, with the experiment's overrides."""
        updates = {}
        if self.spec.failure_after is not None:
            updates["failed_s"] = self.spec.failure_after / 1e3
        if self.spec.isolation_after is not None:
            updates["isolation_policy_delay_s"] = self.spec.isolation_after / 1e3
        return HaConfig().model_copy(update=updates)

    def settings(self) -> dict:
        """What the report compares stalls with: when a host is declared failed or isolated."""
        c = self.config()
        return {"ha_failure_ms": c.failed_s * 1e3,
                "ha_isolation_ms": (c.election_after_s + c.election_s + c.isolation_ping_s) * 1e3}

    @property
    def traffic_class(self) -> str:
        return "management"

    def make(self, lab, tracker, workdir, duration_s):
        cluster = lab.cluster
        mgmt = cluster.networks_of_kind("management")[0]
        members = []
        for i, name in enumerate(h for h, s in cluster.hypervisors.items() if mgmt in s.networks):
            members.append(HaMember(name, lab.node(name), address(lab, name, mgmt),
                                    "primary" if i == 0 else "secondary"))
        self.managers = []
        for name, s in cluster.management.items():
            if mgmt in s.networks:
                members.append(HaMember(name, lab.node(name), address(lab, name, mgmt), "manager"))
                self.managers.append(name)
                break
        iso = self.spec.isolation_address
        return Heartbeats(members, tracker, workdir / "ha", config=self.config(),
                          isolation_address=address(lab, iso, mgmt) if iso else None)

    def outcome(self, raw, t0_ns, end_ns, faults):
        out = Outcome()
        m = Heartbeats.parse(raw, failures={}, start=t0_ns / 1e9, end=end_ns / 1e9)
        out.metrics.append(self.metric("false_failures", m["false_declaration_count"]))
        # Host-to-host heartbeats only: the management server's own beat is every 10 s.
        managers = getattr(self, "managers", [])
        gaps = [g for pair, g in m["heartbeat_gap_s"].items()
                if g is not None and not set(pair.split("->")) & set(managers)]
        if gaps:
            out.metrics.append(self.metric("heartbeat_gap_ms", max(gaps) * 1e3))
        for d in m["declarations"]:
            out.events.append(Event(self.name, ms_since(t0_ns, d["t"] * 1e9),
                                    {"failed": "declared_failed", "isolated": "isolated"}.get(d["kind"], d["kind"]),
                                    {"agent": d["agent"], "subject": d["subject"]}))
        out.raw.append(Raw(self.name, json.dumps(raw["logs"]), "ha-logs.json"))
        return out
