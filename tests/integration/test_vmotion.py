"""vMotion replay over a real, rate-shaped OVS port: measured times against the model."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from vclab.netns import BlackHole, rig, run
from vclab.procs import ProcessTracker
from vclab.workloads.vmotion import VmotionReplay
from vclab.workloads.vmotion_model import MEMORY, STOP_AND_COPY, VmotionSpec, simulate

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ovs-vsctl"),
                       reason="needs root and Open vSwitch"),
]

MiB = 2**20
LINK_BPS = 100e6


def shape_commands(port: str, rate_bps: float) -> list[list[str]]:
    """htb on the bridge's port towards a host: the vMotion NIC's line rate (netdev OVS ignores
    ingress_policing_rate, see STACK.md)."""
    rate = f"{int(rate_bps)}bit"
    return [
        ["tc", "qdisc", "replace", "dev", port, "root", "handle", "1:", "htb", "default", "10"],
        ["tc", "class", "replace", "dev", port, "parent", "1:", "classid", "1:10", "htb",
         "rate", rate, "ceil", rate],
    ]


def guest() -> VmotionSpec:
    # 32 MiB dirtied at 40 % of the link: 4 pre-copy rounds, then ~0.2 s of stop-and-copy.
    return VmotionSpec(memory_bytes=32 * MiB, dirty_rate_bps=0.4 * LINK_BPS,
                       link_rate_bps=LINK_BPS)


@pytest.fixture
def tracker(tmp_path):
    t = ProcessTracker(run_id=f"test-vmotion-{os.getpid()}", state_dir=tmp_path / "state")
    yield t
    t.end_all()


def test_replay_matches_model_at_measured_rate(tmp_path, tracker) -> None:
    with rig("vcm", 2, subnet="10.250.31.0/24") as r:
        src, dst = r.nodes
        for cmd in shape_commands(r.ports[dst.name], LINK_BPS):
            run(cmd)
        wl = VmotionReplay(src, dst, dst.ip, guest(), tracker, tmp_path)
        try:
            wl.check()
            rate = wl.measure_rate(seconds=2.0)
            assert 0.7 * LINK_BPS < rate < 1.02 * LINK_BPS  # htb at 100 Mbit/s, TCP on top
            wl.start()
            assert wl.wait(timeout=60), "migration did not finish in 60 s"
        finally:
            wl.stop()
        res = VmotionReplay.parse(wl.collect())
    model = simulate(guest().at_rate(rate))
    print(f"\nvmotion: measured rate {rate / 1e6:.1f} Mbit/s; total {res['total_s']:.3f} s "
          f"(model {model.total_s:.3f} s, {res['total_error']:+.1%}); downtime "
          f"{res['downtime_s'] * 1e3:.0f} ms (model {model.downtime_s * 1e3:.0f} ms); "
          f"pre-copy rounds {res['precopy_rounds']} (model {model.precopy_rounds})")
    for rd in res["rounds"]:
        print(f"  round {rd['round']} {rd['phase']:>13} {rd['bytes'] / MiB:7.2f} MiB "
              f"{rd['duration_s']:.3f} s")
    assert res["finished"]
    assert res["model_total_s"] == pytest.approx(model.total_s)
    assert abs(res["total_error"]) < 0.15
    assert res["precopy_rounds"] >= 2
    assert res["rounds"][-1]["phase"] == STOP_AND_COPY
    assert res["downtime_s"] < 0.5
    # The destination received every byte the source sent.
    received = [e for e in wl.collect()["receiver"] if e["event"] == "round" and e["conn"] == 2]
    assert sum(e["bytes"] for e in received) == res["bytes_sent"]


def test_stall_mid_migration_shows(tmp_path, tracker) -> None:
    """A 1 s black hole during round 0 stretches it; live mode then re-sends what the guest
    dirtied meanwhile, so the migration ends later than the model by at least the stall."""
    stall_s = 1.0
    with rig("vcm", 2, subnet="10.250.32.0/24") as r:
        src, dst = r.nodes
        for cmd in shape_commands(r.ports[dst.name], LINK_BPS):
            run(cmd)
        wl = VmotionReplay(src, dst, dst.ip, guest(), tracker, tmp_path)
        hole = BlackHole(r.bridge, match={"in_port": r.ofports[src.name], "eth_type": 0x0800})
        try:
            wl.check()
            rate = wl.measure_rate(seconds=2.0)
            hole.connect()
            wl.start()
            time.sleep(0.8)
            hole.apply()
            time.sleep(stall_s)
            hole.undo()
            assert wl.wait(timeout=60), "migration did not finish in 60 s"
        finally:
            hole.close()
            wl.stop()
        res = VmotionReplay.parse(wl.collect())
    model = simulate(guest().at_rate(rate))
    first = res["rounds"][0]
    print(f"\nvmotion with {hole.length_ms:.0f} ms stall: total {res['total_s']:.3f} s "
          f"(model without stall {model.total_s:.3f} s); round 0 {first['duration_s']:.3f} s "
          f"(model {model.rounds[0].duration_s:.3f} s); round 1 "
          f"{res['rounds'][1]['bytes'] / MiB:.2f} MiB (model {model.rounds[1].bytes / MiB:.2f})")
    assert res["finished"]
    assert first["phase"] == MEMORY
    assert first["duration_s"] >= model.rounds[0].duration_s + 0.8 * stall_s
    # The guest kept dirtying during the stall, so round 1 carried more than the model's.
    assert res["rounds"][1]["bytes"] > model.rounds[1].bytes
    assert res["total_s"] >= model.total_s + 0.8 * stall_s
