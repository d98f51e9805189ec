"""iperf3 TCP and UDP between two namespaces on a real OVS bridge, PID-tracked."""

from __future__ import annotations

import os
import shutil

import pytest

from rigs.netns import rig
from vclab.lab.procs import ProcessTracker, alive
from vclab.workloads.iperf.workload import Iperf3

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ovs-vsctl")
                       or not shutil.which("iperf3"), reason="needs root, OVS and iperf3"),
]


@pytest.fixture
def tracker(tmp_path):
    t = ProcessTracker(run_id=f"test-iperf-{os.getpid()}", state_dir=tmp_path / "state")
    yield t
    t.end_all()


def run_one(wl: Iperf3) -> dict:
    wl.check()
    try:
        wl.start()
        pids = wl.pids
        assert len(pids) == 2
        assert wl.wait(timeout=wl.duration_s + 20)
    finally:
        wl.stop()
    assert not any(alive(pid, None) for pid in pids)  # nothing left behind, -1 and no -D
    return Iperf3.parse(wl.collect())


def test_tcp_and_udp_between_namespaces(tmp_path, tracker) -> None:
    with rig("vci", 2, subnet="10.250.52.0/24") as r:
        client, server = r.nodes
        tcp = run_one(Iperf3(server, client, server.ip, tracker, tmp_path, name="tcp",
                             protocol="tcp", duration_s=3, interval_s=0.5))
        udp = run_one(Iperf3(server, client, server.ip, tracker, tmp_path, name="udp",
                             protocol="udp", duration_s=3, interval_s=0.5, rate_bps=50e6))
    print(f"\niperf3 on netdev OVS: TCP {tcp['throughput_bps'] / 1e6:.0f} Mbit/s "
          f"({tcp['retransmits']} retransmits, slowest 0.5 s interval "
          f"{tcp['min_interval_bps'] / 1e6:.0f} Mbit/s); UDP at 50 Mbit/s: "
          f"{udp['throughput_bps'] / 1e6:.1f} Mbit/s, jitter {udp['jitter_ms']:.3f} ms, "
          f"lost {udp['lost_packets']}/{udp['packets']}")
    # TCP through a userspace switch on two cores: well above 10 Mbit/s, below 100 Gbit/s.
    assert 10e6 < tcp["throughput_bps"] < 100e9
    assert len(tcp["intervals"]) >= 5 and tcp["min_interval_bps"] > 0
    assert tcp["retransmits"] is not None and tcp["retransmits"] >= 0
    assert udp["throughput_bps"] == pytest.approx(50e6, rel=0.05)
    assert udp["packets"] > 10000 and 0 <= udp["lost_percent"] < 20
    assert 0 <= udp["jitter_ms"] < 50
