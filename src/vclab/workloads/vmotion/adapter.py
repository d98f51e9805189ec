"""The vmotion entry of an experiment: a live migration at its time, in a thread, and its
totals, downtime, switch-over and the VM's own outage."""

from __future__ import annotations

import json
import threading

from vclab.results.model import Event, Raw, rounds_as_events
from vclab.workloads.adapter import Adapter, MetricInfo, Outcome, ms_since
from vclab.workloads.base import Workload
from vclab.workloads.vmotion.migration import LiveMigration
from vclab.workloads.vmotion.spec import MigrationSpec


class _Migration(Workload):
    """A live migration (vMotion replay + the VM's real switch-over) run in a thread, so it
    can start at its scheduled time while faults go on being applied."""

    kind = "vmotion"

    def __init__(self, migration):
        self.migration = migration
        self.result: dict | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def check(self):
        self.migration.check()

    def start(self):
        def run():
            try:
                self.result = self.migration.run()
            except BaseException as e:  # reported by collect(): the repetition records why
                self.error = e

        self.thread = threading.Thread(target=run, name="vmotion", daemon=True)
        self.thread.start()

    def prepare(self):
        self.migration.prepare()

    def wait(self, timeout: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.thread is None or not self.thread.is_alive()

    def stop(self):
        # The migration ends by itself; its processes are the lab's to end at teardown. One
        # that never started ends what prepare() started for it (the capture's sniffer).
        if self.thread is None:
            self.migration.close()
        self.wait(0)

    def collect(self):
        if self.thread is not None and self.thread.is_alive():
            raise RuntimeError("the migration was still running when the repetition ended")
        if self.error is not None:
            raise self.error
        return self.result

    def off_network(self):
        # From the pause (the ports leave the source) to the announcement from the destination
        # (RARP, gratuitous ARP): the VM is silent, then the fabric learns where it went.
        t = (self.result or {}).get("switchover_ns") or {}
        if "detach_start_ns" not in t or "announced_ns" not in t:
            return []
        return [(self.migration.vm, t["detach_start_ns"], t["announced_ns"])]

    @staticmethod
    def parse(raw):
        return raw


class VmotionAdapter(Adapter):
    spec_type = MigrationSpec
    metrics = (
        MetricInfo("total_ms", "vMotion total time", "lower", "headline", short="vMotion time"),
        MetricInfo("downtime_ms", "vMotion downtime", "lower", "headline", short="vMotion down"),
        MetricInfo("switchover_ms", "vMotion switch-over", "lower", short="switch-over"),
        MetricInfo("vm_outage_ms", "VM outage during vMotion", "lower"),
        # what the precopy model predicts for the same migration
        MetricInfo("model_total_ms", section="context"),
        MetricInfo("model_downtime_ms", section="context"),
    )

    @property
    def name(self) -> str:
        return f"vmotion {self.spec.vm}>{self.spec.to}"

    @property
    def start_at_ms(self) -> float:  # type: ignore[override]
        return self.spec.at

    @property
    def traffic_class(self) -> str:
        return "vmotion"

    def prepare(self, workload):
        # The path's rate is measured (and scapy imported) before the warm-up, so that at its
        # scheduled time the migration only copies (LiveMigration.prepare).
        workload.prepare()

    def finish(self, workload, timeout):
        # A migration that started is waited for: a slow one is the finding, a cut-short one
        # would be no measurement at all.
        workload.wait(timeout=timeout)

    def make(self, lab, tracker, workdir, duration_s):
        vm = lab.cluster.vms[self.spec.vm]
        # The VM's outage is probed from a member of its first network that stays put.
        probe_from = None
        if vm.networks:
            others = [h for h, _ in lab.plan.networks[vm.networks[0]].members if h != self.spec.vm]
            probe_from = others[0] if others else None
        self.capture_dir = workdir / f"vmotion{self.index}" / f"vmotion{self.index}-capture"
        return _Migration(LiveMigration(lab, self.spec.vm, self.spec.to, workdir / f"vmotion{self.index}",
                                        storage=self.spec.mode, probe_from=probe_from, capture=True,
                                        measure_s=1.0, name=f"vmotion{self.index}"))

    def outcome(self, raw, t0_ns, end_ns, faults):
        out = Outcome()
        v = raw["vmotion"]
        values = {"total_ms": v.get("total_s"), "downtime_ms": v.get("downtime_s"),
                  "model_total_ms": v.get("model_total_s"), "model_downtime_ms": v.get("model_downtime_s")}
        for name, seconds in values.items():
            if seconds is not None:
                out.metrics.append(self.metric(name, seconds * 1e3))
        out.metrics.append(self.metric("switchover_ms", raw["switchover_ms"]))
        if raw.get("outage_ms") is not None:
            # what the VM itself lived through, measured by a probe to it
            out.metrics.append(self.metric("vm_outage_ms", raw["outage_ms"]))
        if v.get("rounds"):
            out.events.extend(rounds_as_events(self.name, [{**r, "index": r["round"]} for r in v["rounds"]],
                                               ms_since(t0_ns, v["t_start"] * 1e9)))
        attached = raw["switchover_ns"].get("attached_ns")
        if attached:
            out.events.append(Event(self.name, ms_since(t0_ns, attached), "switch_over",
                                    {"to": raw["to"], "steps_ms": raw["steps_ms"]}))
        if raw.get("capture"):
            # the pcaps stay in the repetition's work directory; the store keeps where, and what
            # they hold after the switch-over (RARP / gratuitous ARP per port). The capture
            # runs from before the warm-up, so a team's own announcements at a fault before
            # the switch-over are in the files but not in these counts.
            counts: dict[str, dict[str, int]] = {}
            for f in raw["capture"].get("frames", []):
                if f.get("kind") in ("rarp", "garp") and attached and f["t_ns"] >= attached:
                    port = counts.setdefault(f["port"], {"rarp": 0, "garp": 0})
                    port[f["kind"]] += 1
            out.raw.append(Raw(self.name, json.dumps({"pcap_dir": str(self.capture_dir),
                                                      "counts": counts}), "capture.json"))
        return out
