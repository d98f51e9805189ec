"""The vmotion entry's bookkeeping: when the VM was off the network (for the probes' outages),
what a migration readied before its time is ended if that time never comes, and the capture's
counts are the announcements after the switch-over."""

from __future__ import annotations

import json

from vclab.experiments.spec import Workload as WorkloadEntry
from vclab.workloads.vmotion.adapter import VmotionAdapter, _Migration

MS = 1_000_000
T0 = 1_700_000_000 * 10**9


class Readied:
    """A migration as prepare() leaves it: run() may come, or close() must."""

    vm = "web1"

    def __init__(self):
        self.closed = 0

    def close(self):
        self.closed += 1

    def run(self):
        return {"switchover_ns": {"detach_start_ns": T0 + 7500 * MS, "announced_ns": T0 + 7760 * MS}}


def test_a_migration_whose_time_never_came_ends_what_it_readied():
    m = _Migration(Readied())
    m.stop()
    assert m.migration.closed == 1 and m.off_network() == []


def test_a_finished_migration_says_when_its_vm_was_off_the_network():
    m = _Migration(Readied())
    m.start()
    assert m.wait(5)
    m.stop()
    assert m.migration.closed == 0
    assert m.off_network() == [("web1", T0 + 7500 * MS, T0 + 7760 * MS)]


def test_capture_counts_are_the_announcements_after_the_switch_over():
    entry = WorkloadEntry.model_validate({"vmotion": {"vm": "web1", "to": "esx3", "at": "5s"}})
    a = VmotionAdapter(entry, 0)
    a.capture_dir = "/tmp/x"
    attached = T0 + 7700 * MS
    frames = [{"port": "p1", "kind": "rarp", "t_ns": T0 + 6000 * MS},  # a team's, at the cut
              {"port": "p1", "kind": "rarp", "t_ns": attached + MS},
              {"port": "p1", "kind": "garp", "t_ns": attached + 2 * MS},
              {"port": "p2", "kind": "rarp", "t_ns": attached + 3 * MS},
              {"port": "p2", "kind": "arp", "t_ns": attached + 4 * MS}]
    raw = {"vmotion": {"total_s": 2.5, "downtime_s": 0.2}, "switchover_ms": 260.0, "to": "esx3",
           "switchover_ns": {"attached_ns": attached}, "steps_ms": {}, "capture": {"frames": frames}}
    out = a.outcome(raw, T0, T0 + 30_000 * MS, [])
    (blob,) = [json.loads(r.data) for r in out.raw if r.name == "capture.json"]
    assert blob["counts"] == {"p1": {"rarp": 1, "garp": 1}, "p2": {"rarp": 1, "garp": 0}}
