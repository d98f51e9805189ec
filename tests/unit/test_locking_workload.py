"""The lock workload without root: the agent command line, config checks, parse()."""

from __future__ import annotations

from pathlib import Path

import pytest

from vclab.workloads.locking import checker
from vclab.workloads.locking.agent import parse_vms
from vclab.workloads.locking.layout import DataBlock
from vclab.workloads.locking.model import Timing
from vclab.workloads.locking.workload import LockAgentProcess, LockManager, parse
from vclab.lab.procs import ProcessTracker
from vclab.workloads.base import WorkloadError


class Node:
    name = "esx1"

    def popen(self, *a, **kw):  # never called here
        raise AssertionError


class Target:
    portals = ["10.0.0.1"]
    iqn = "iqn.2025-01.lab.vclab:array"
    lun_numbers = {"datastore1": 1}
    luns: list = []


def test_agent_command(tmp_path) -> None:
    a = LockAgentProcess(Node(), 2, ["10.0.0.1", "10.0.1.1"], "iqn.x", 1,
                         ProcessTracker(state_dir=tmp_path), timing=Timing(),
                         vms={"web": 0, "db": 3}, workdir=tmp_path)
    cmd = a.command()
    assert cmd[1:3] == ["-m", "vclab.workloads.locking.agent"]
    assert cmd[cmd.index("--host-id") + 1] == "2"
    assert [cmd[i + 1] for i, x in enumerate(cmd) if x == "--portal"] == ["10.0.0.1", "10.0.1.1"]
    assert [cmd[i + 1] for i, x in enumerate(cmd) if x == "--vm"] == ["web=0", "db=3"]
    assert Timing.model_validate_json(cmd[cmd.index("--timing") + 1]) == Timing()
    assert a.log == Path(tmp_path) / "lock-esx1.jsonl"


def test_parse_vms() -> None:
    assert parse_vms(["web=0", "db=1"]) == {"web": 0, "db": 1}
    with pytest.raises(ValueError, match="NAME=INDEX"):
        parse_vms(["web"])
    with pytest.raises(ValueError):
        parse_vms(["web=64"])


def test_check_refuses_unsafe_timers(tmp_path) -> None:
    mgr = LockManager(Target(), [Node()], ProcessTracker(state_dir=tmp_path),
                      timing=Timing(lease_s=1.0, break_after_s=0.8), workdir=tmp_path)
    with pytest.raises(WorkloadError, match="split brain"):
        mgr.check()


def test_parse() -> None:
    blocks = [DataBlock(0, 1, 1, i, i * 10**7) for i in range(5)] + \
             [DataBlock(0, 2, 2, i, 3 * 10**9 + i * 10**7) for i in range(5)]
    raw = {"events": {
        1: [{"t": 1, "event": "start", "atomic_primitive": "persistent-reservation"},
            {"t": 2, "event": "acquired", "vm": "vm1", "generation": 1, "how": "free",
             "waited_ms": 5.0, "rmw_ms": 4.0},
            {"t": 10, "event": "lease_lost"}],
        2: [{"t": 1, "event": "start", "atomic_primitive": "persistent-reservation"},
            {"t": 30, "event": "acquired", "vm": "vm1", "generation": 2, "how": "broken",
             "waited_ms": 3100.0, "rmw_ms": 20.0}]},
        "lun": {0: checker.check(blocks)}}
    res = parse(raw)
    assert res["atomic_primitive"] == "persistent-reservation"
    assert [(a["host"], a["how"]) for a in res["acquisitions"]] == [(1, "free"), (2, "broken")]
    assert res["lease_losses"] == [{"host": 1, "t": 10}]
    assert res["dual_writers"] == 0
    assert res["gaps_ms"][0] == [(3 * 10**9 - 4 * 10**7) / 1e6]
