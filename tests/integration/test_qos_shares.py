"""Per-network shares on a hypervisor's uplink (NIOC) hold against a saturating VM flow,
measured with iperf3 on a real build (sdn mechanism, userspace or kernel OVS datapath).

esx1 sends storage (TCP to the array), management (TCP to vcenter) and a VM-network UDP flood
at twice the cable rate (to esx2): all three leave through esx1's one NIC, 100 Mbit/s. With the
classes each TCP flow keeps at least its share; then, in the same lab, the classes are removed
(plain shaped cables, as rstp builds them) and the same flows run again: storage falls below
its share. Lab prefix `vcu`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from vclab.fabric import qos
from vclab.lab.procs import ProcessTracker


def _ovs_running() -> bool:
    return shutil.which("ovs-vsctl") is not None and subprocess.run(
        ["ovs-vsctl", "--timeout=3", "show"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not _ovs_running(), reason="Open vSwitch is not running"),
    pytest.mark.skipif(not shutil.which("iperf3"), reason="needs iperf3"),
]

mininet = pytest.importorskip("mininet")
pytest.importorskip("os_ken")

from vclab.doctor import PROBES  # noqa: E402
from vclab.lab.lab import Lab  # noqa: E402
from vclab.topology.commands import Tc  # noqa: E402
from vclab.topology.loader import cluster_from_text  # noqa: E402
from vclab.workloads.iperf.workload import Iperf3  # noqa: E402

PREFIX = "vcu"
RATE = 100e6  # the cables: low enough for 2 cores to saturate through the userspace datapath
SHARES = {"management": 10, "storage": 40, "vm-web": 20}
CLUSTER = f"""
cluster: qos
mechanism: sdn
defaults: {{link: {{rate: {RATE / 1e6:g}Mbit}}}}
networks:
  management: {{vlan: 10, subnet: 10.10.0.0/24, share: {SHARES['management']}%}}
  storage:    {{vlan: 30, subnet: 10.30.0.0/24, share: {SHARES['storage']}%, kind: storage}}
  vm-web:     {{vlan: 100, subnet: 10.100.0.0/24, share: {SHARES['vm-web']}%, kind: vm}}
switches: {{tor-a: {{}}}}
hypervisors:
  esx1: {{nics: {{vmnic0: tor-a}}, networks: [management, storage, vm-web]}}
  esx2: {{nics: {{vmnic0: tor-a}}, networks: [management, storage, vm-web]}}
storage:
  array1: {{portals: {{storage: tor-a}}}}
management:
  vcenter: {{nics: {{eth0: tor-a}}, networks: [management]}}
"""
FLOOD_AFTER, FLOOD_S, TCP_S = 1.0, 7.0, 9.0  # the TCP flows are running when the flood starts
INTERVAL = 0.5
FLOOD = 1.5  # x the cable rate: saturating, and less CPU for iperf3 and OVS than 2x
ATTEMPTS = 3  # other work on the machine only ever takes throughput away: best of three


def ip(lab, host: str, network: str) -> str:
    return lab.plan.host(host).interface(network).ip


def contend(lab, tracker, outdir, tag: str) -> dict[str, float]:
    """Mean bit/s of each flow while the flood is on (its first and last second left out)."""
    def flow(name, src, dst, network, port, **kw):
        return Iperf3(lab.node(dst), lab.node(src), ip(lab, dst, network), tracker,
                      outdir / f"{tag}-{name}", port=port, interval_s=INTERVAL, name=name, **kw)

    tcp = {"storage": flow("storage", "esx1", "array1", "storage", 5311, duration_s=TCP_S),
           "management": flow("management", "esx1", "vcenter", "management", 5312,
                              duration_s=TCP_S)}
    flood = flow("vm-web", "esx1", "esx2", "vm-web", 5313, protocol="udp",
                 duration_s=FLOOD_S, rate_bps=FLOOD * RATE)
    every = [*tcp.values(), flood]
    try:
        for wl in every:
            wl.check()
        for wl in tcp.values():
            wl.start()
        time.sleep(FLOOD_AFTER)
        flood.start()
        for wl in every:
            assert wl.wait(timeout=TCP_S + 30), f"{wl.name} did not finish"
    finally:
        for wl in every:
            wl.stop()
    out = {}
    for name, wl in tcp.items():
        m = Iperf3.parse(wl.collect())
        window = [iv["bits_per_second"] for iv in m["intervals"]
                  if FLOOD_AFTER + 1.0 <= iv["start_s"] and iv["end_s"] <= FLOOD_AFTER + FLOOD_S - 1.0]
        assert window, f"{name}: no interval inside the flood"
        out[name] = sum(window) / len(window)
    udp = Iperf3.parse(flood.collect())
    out["vm-web"] = udp["throughput_bps"]  # what arrived (the receiver's count)
    return out


def class_bytes(lab, dev: str) -> dict[str, int]:
    text = lab.sh(Tc("class", "show", dev, stats=True))
    out, classid = {}, None
    for line in text.splitlines():
        words = line.split()
        if words[:2] == ["class", "htb"]:
            classid = words[2]
        elif words[:1] == ["Sent"] and classid:
            out[classid] = int(words[1])
    return out


@pytest.mark.parametrize("ports", ["system", "afxdp"])
def test_storage_and_management_keep_their_share_of_a_saturated_uplink(tmp_path, ports):
    """With AF_XDP ports the classes sit on the wire namespace's veths and are filled by the
    networks' subnets (fabric/qos.py, subnet_filter_command)."""
    if ports == "afxdp":
        ok, why = next(p for n, p, _ in PROBES if n == "ovs-afxdp")()
        if not ok:
            pytest.skip(f"no AF_XDP ports here: {why}")
    tracker = ProcessTracker(f"test-qos-{os.getpid()}", tmp_path / "state")
    cluster = cluster_from_text(CLUSTER)
    with Lab(cluster, prefix=PREFIX, state_dir=tmp_path / "state", workdir=tmp_path / "lab",
             ports=ports) as lab:
        uplink = next(p.name for p in lab.plan.bridge("esx1").ports if p.role == "uplink")
        assert "htb 1:" in lab.sh(Tc("qdisc", "show", uplink))
        before = class_bytes(lab, uplink)
        tries = []
        for attempt in range(ATTEMPTS):
            tries.append(contend(lab, tracker, tmp_path, f"classes{attempt}"))
            if all(tries[-1][n] >= qos.share_floor_bps(SHARES[n], RATE) for n in ("storage", "management")):
                break
        shared = max(tries, key=lambda t: min(t["storage"] / SHARES["storage"],
                                             t["management"] / SHARES["management"]))
        gained = {c: n - before.get(c, 0) for c, n in class_bytes(lab, uplink).items()}
        lab.mechanism.clear_qos(lab, check=True)
        assert "htb 1:" not in lab.sh(Tc("qdisc", "show", uplink))
        fifo = contend(lab, tracker, tmp_path, "fifo")
    tracker.end_all()
    print(f"\nesx1's {RATE / 1e6:g} Mbit/s NIC, UDP VM flood at {FLOOD * RATE / 1e6:g} Mbit/s, "
          f"Mbit/s while flooded ({len(tries)} attempt(s) with shares: storage "
          f"{[round(t['storage'] / 1e6, 1) for t in tries]}):\n"
          f"  with shares   : storage {shared['storage'] / 1e6:.1f} (share 40 %), management "
          f"{shared['management'] / 1e6:.1f} (10 %), VM arrived {shared['vm-web'] / 1e6:.1f}\n"
          f"  without (FIFO): storage {fifo['storage'] / 1e6:.1f}, management "
          f"{fifo['management'] / 1e6:.1f}, VM arrived {fifo['vm-web'] / 1e6:.1f}\n"
          f"  uplink class bytes with shares: {gained}")
    # Each network's frames went through its own class (management 1:2, storage 1:3, VM 1:4).
    assert min(gained["1:2"], gained["1:3"], gained["1:4"]) > 1e6
    for name in ("storage", "management"):
        assert shared[name] >= qos.share_floor_bps(SHARES[name], RATE), name
    # Without the classes the flood takes the NIC: storage gets less than its share.
    assert fifo["storage"] < qos.share_floor_bps(SHARES["storage"], RATE) < shared["storage"]
