"""vMotion replay over a real, rate-shaped OVS port: measured times against the model.

The comparison with the model at the measured rate holds only if the fabric keeps that rate.
On a shared 2-core machine other jobs starve ovs-vswitchd now and then and the rate swings
between ~20 and ~95 Mbit/s within seconds; such a run tests the machine, not the model. So each
attempt checks that the rate stayed put (measurement samples and the migration's own rounds
within 10 %), tries again up to ATTEMPTS times, and skips, naming the rates, if it never did.
What holds on any run is checked on every attempt: the bytes the replay sent match the model at
the rate the migration actually got.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from rigs.netns import BlackHole, rig, run
from vclab.lab.procs import ProcessTracker
from vclab.workloads.vmotion.workload import VmotionReplay
from vclab.workloads.vmotion.model import MEMORY, STOP_AND_COPY, VmotionSpec, simulate

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ovs-vsctl"),
                       reason="needs root and Open vSwitch"),
]

MiB = 2**20
LINK_BPS = 100e6
ATTEMPTS = 4


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
    # 32 MiB dirtied at 40 % of the link: 3 pre-copy rounds, then ~0.2 s of stop-and-copy.
    return VmotionSpec(memory_bytes=32 * MiB, dirty_rate_bps=0.4 * LINK_BPS,
                       link_rate_bps=LINK_BPS)


@pytest.fixture
def tracker(tmp_path):
    t = ProcessTracker(run_id=f"test-vmotion-{os.getpid()}", state_dir=tmp_path / "state")
    yield t
    t.end_all()


def bulk_rate(rounds: list[dict]) -> float:
    """Rate over the rounds big enough that the per-round ack's round trip does not count."""
    bulk = [rd for rd in rounds if rd["bytes"] >= MiB]
    return sum(rd["bytes"] for rd in bulk) * 8 / sum(rd["duration_s"] for rd in bulk)


def migrate(r, tracker, outdir, stall_s: float = 0.0) -> tuple[dict, dict, BlackHole | None]:
    """Measure the rate, then migrate; with stall_s, black-hole the source for that long 0.8 s
    into round 0."""
    src, dst = r.nodes
    wl = VmotionReplay(src, dst, dst.ip, guest(), tracker, outdir)
    hole = None
    try:
        wl.check()
        wl.measure_rate(seconds=2.0)
        if stall_s:
            hole = BlackHole(r.bridge, match={"in_port": r.ofports[src.name], "eth_type": 0x0800})
            hole.connect()
        wl.start()
        if hole:
            time.sleep(0.8)
            hole.apply()
            time.sleep(stall_s)
            hole.undo()
        assert wl.wait(timeout=90), "migration did not finish in 90 s"
    finally:
        if hole:
            hole.close()
        wl.stop()
    raw = wl.collect()
    return raw, VmotionReplay.parse(raw), hole


def steady(raw: dict, rounds: list[dict]) -> bool:
    samples, rate = raw["measured_samples_bps"], raw["measured_rate_bps"]
    return (max(samples) <= 1.1 * min(samples)
            and abs(bulk_rate(rounds) / rate - 1) <= 0.1)


def report(attempt: int, raw: dict, res: dict) -> None:
    model = simulate(guest().at_rate(raw["measured_rate_bps"]))
    print(f"\nvmotion attempt {attempt}: measured rate {raw['measured_rate_bps'] / 1e6:.1f} Mbit/s "
          f"(samples {', '.join(f'{x / 1e6:.1f}' for x in raw['measured_samples_bps'])}); total "
          f"{res['total_s']:.3f} s, model at measured rate {model.total_s:.3f} s "
          f"({res['total_s'] / model.total_s - 1:+.1%}); downtime {res['downtime_s'] * 1e3:.0f} ms "
          f"(model {model.downtime_s * 1e3:.0f} ms); pre-copy rounds {res['precopy_rounds']} "
          f"(model {model.precopy_rounds}); achieved {res['achieved_rate_bps'] / 1e6:.1f} Mbit/s, "
          f"model at that rate {res['model_at_achieved_total_s']:.3f} s")
    for rd in res["rounds"]:
        print(f"  round {rd['round']} {rd['phase']:>13} {rd['bytes'] / MiB:7.2f} MiB "
              f"{rd['duration_s']:.3f} s {rd['rate_bps'] / 1e6:6.1f} Mbit/s")


def test_replay_matches_model_at_measured_rate(tmp_path, tracker) -> None:
    seen = []
    with rig("vcm", 2, subnet="10.250.31.0/24") as r:
        for cmd in shape_commands(r.ports[r.nodes[1].name], LINK_BPS):
            run(cmd)
        for attempt in range(1, ATTEMPTS + 1):
            raw, res, _ = migrate(r, tracker, tmp_path / str(attempt))
            report(attempt, raw, res)
            assert res["finished"] and res["rounds"][-1]["phase"] == STOP_AND_COPY
            # Any run: the bytes sent are what the model sends at the rate the run got.
            assert abs(res["total_s"] / res["model_at_achieved_total_s"] - 1) < 0.10
            # The destination received every byte (connection 1 measured the rate).
            received = [e for e in raw["receiver"] if e["event"] == "round" and e["conn"] == 2]
            assert sum(e["bytes"] for e in received) == res["bytes_sent"]
            seen.append(f"{raw['measured_rate_bps'] / 1e6:.0f}->{res['achieved_rate_bps'] / 1e6:.0f}")
            if steady(raw, res["rounds"]):
                break
            print("  (the fabric's rate moved during the run: again)")
        else:
            pytest.skip(f"fabric rate never steady in {ATTEMPTS} runs (measured->achieved Mbit/s: "
                        f"{', '.join(seen)}): machine too busy to compare with the model")
    assert 0.7 * LINK_BPS < raw["measured_rate_bps"] < 1.02 * LINK_BPS  # htb 100 Mbit/s
    assert res["model_total_s"] == pytest.approx(
        simulate(guest().at_rate(raw["measured_rate_bps"])).total_s)
    assert abs(res["total_error"]) < 0.15
    assert res["precopy_rounds"] >= 2
    assert res["downtime_s"] < 0.5


@pytest.mark.slow  # up to ATTEMPTS x ~12 s on a busy machine
def test_stall_mid_migration_shows(tmp_path, tracker) -> None:
    """A 1 s black hole during round 0 stretches it; live mode then re-sends what the guest
    dirtied meanwhile, so the migration ends later than the model by at least the stall."""
    stall_s = 1.0
    seen = []
    with rig("vcm", 2, subnet="10.250.32.0/24") as r:
        for cmd in shape_commands(r.ports[r.nodes[1].name], LINK_BPS):
            run(cmd)
        for attempt in range(1, ATTEMPTS + 1):
            raw, res, hole = migrate(r, tracker, tmp_path / str(attempt), stall_s)
            report(attempt, raw, res)
            assert res["finished"]
            # Rounds after the stall show the rate the fabric gave when not stalled.
            seen.append(f"{raw['measured_rate_bps'] / 1e6:.0f}->"
                        f"{bulk_rate(res['rounds'][1:]) / 1e6:.0f}")
            if steady(raw, res["rounds"][1:]):
                break
            print("  (the fabric's rate moved during the run: again)")
        else:
            pytest.skip(f"fabric rate never steady in {ATTEMPTS} runs (measured->achieved Mbit/s: "
                        f"{', '.join(seen)})")
    model = simulate(guest().at_rate(raw["measured_rate_bps"]))
    first = res["rounds"][0]
    print(f"vmotion with {hole.length_ms:.0f} ms stall: total {res['total_s']:.3f} s "
          f"(model without stall {model.total_s:.3f} s); round 0 {first['duration_s']:.3f} s "
          f"(model {model.rounds[0].duration_s:.3f} s); round 1 "
          f"{res['rounds'][1]['bytes'] / MiB:.2f} MiB (model {model.rounds[1].bytes / MiB:.2f})")
    assert first["phase"] == MEMORY
    assert first["duration_s"] >= model.rounds[0].duration_s + 0.8 * stall_s
    # The guest kept dirtying during the stall, so round 1 carried more than the model's.
    assert res["rounds"][1]["bytes"] > model.rounds[1].bytes
    assert res["total_s"] >= model.total_s + 0.8 * stall_s
