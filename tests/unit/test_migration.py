"""Migration without root: refusal reasons, the plan after a move, the generated ovs-vsctl
transactions, the announcement frames, the capture parser on a pcap written here, the
switch-over outage from synthetic probe logs, and the sender's pause/copied handshake over
127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from vclab.topology.loader import cluster_from_text, load_cluster
from vclab.topology.plan import build_plan
from vclab.workloads.capture import Capture
from vclab.workloads.vmotion.migration import (
    ETH_RARP,
    announce_frames,
    attach_commands,
    detach_commands,
    migration_problems,
    move_commands,
    moved_cluster,
    moved_plan,
    switchover_outage,
    vmotion_rate_bps,
    vmotion_spec,
)

ROOT = Path(__file__).resolve().parents[2]

CLUSTER = """
cluster: mig
mechanism: none
networks:
  management: {vlan: 10, subnet: 10.10.0.0/24}
  vmotion:    {vlan: 20, subnet: 10.20.0.0/24}
  vm-web:     {vlan: 100, subnet: 10.100.0.0/24, kind: vm}
  vm-db:      {vlan: 101, subnet: 10.101.0.0/24, kind: vm}
switches:
  tor-a: {}
hypervisors:
  esx1: {nics: {vmnic0: {switch: tor-a, rate: 10Gbit}}, networks: [management, vmotion, vm-web, vm-db]}
  esx2: {nics: {vmnic0: tor-a}, networks: [management, vmotion, vm-web, vm-db]}
  esx3: {nics: {vmnic0: tor-a}, networks: [management, vm-web, vm-db]}
  esx4: {nics: {vmnic0: tor-a}, networks: [management, vmotion, vm-web]}
vms:
  web1: {host: esx1, networks: [vm-web, vm-db], memory: 256MiB, dirty_rate: 20MB/s, disk: 512MiB}
  web2: {host: esx2, networks: [vm-web]}
defaults: {link: {rate: 1Gbit}}
"""


@pytest.fixture
def cluster():
    return cluster_from_text(CLUSTER)


def test_allowed_migration_has_no_problem(cluster) -> None:
    assert migration_problems(cluster, "web1", "esx2") == []


def test_refusals_say_why(cluster) -> None:
    (p,) = migration_problems(cluster, "web1", "esx3")
    assert "esx3 is not on the vMotion network (vmotion)" in p
    (p,) = migration_problems(cluster, "web1", "esx4")
    assert "esx4 is not on web1's network vm-db" in p and "cut off" in p
    assert migration_problems(cluster, "web1", "esx1") == ["web1 already runs on esx1"]
    assert "unknown hypervisor 'esx9'" in migration_problems(cluster, "web1", "esx9")[0]
    assert "unknown VM 'nope'" in migration_problems(cluster, "nope", "esx2")[0]


def test_refusal_on_shipped_missing_vmotion_cluster() -> None:
    c = load_cluster(ROOT / "topologies" / "missing-vmotion.yaml")
    vm = next(iter(c.vms))
    (p,) = migration_problems(c, vm, "esx3")
    assert "not on the vMotion network" in p
    source_on_esx3 = moved_cluster(c, vm, "esx3")  # a VM already there cannot leave either
    assert any("source esx3" in x for x in migration_problems(source_on_esx3, vm, "esx1"))


def test_moved_plan_moves_ports_and_keeps_devices(cluster) -> None:
    before = build_plan(cluster, "vcn")
    after = moved_plan(before, "web1", "esx2")
    src, dst = before.bridge("esx1"), after.bridge("esx2")
    web1 = after.host("web1")
    assert web1.vswitch == dst.name
    assert [i.port for i in web1.interfaces] == [i.port for i in before.host("web1").interfaces]
    assert [i.mac for i in web1.interfaces] == [i.mac for i in before.host("web1").interfaces]
    moved = {i.port for i in web1.interfaces}
    assert not moved & {p.name for p in after.bridge("esx1").ports}
    assert moved <= {p.name for p in dst.ports}
    ofports = [p.ofport for p in dst.ports]
    assert len(set(ofports)) == len(ofports)
    assert all(i.bridge == dst.name for i in web1.interfaces)
    # Teardown removes the same root-namespace devices; the veths now end on the new switch.
    assert sorted(after.root_links()) == sorted(before.root_links())
    ends = [e for v in after.veths for e in (v.a, v.b) if e.ifname in moved]
    assert all(e.node == dst.name for e in ends)
    # Back again: the ports sit on the source switch with the ofports they had.
    back = moved_plan(after, "web1", "esx1")
    assert {p.name: p.ofport for p in back.bridge("esx1").ports} == \
        {p.name: p.ofport for p in src.ports}


def test_commands_move_with_the_vlan_tag(cluster) -> None:
    before = build_plan(cluster, "vcn")
    after = moved_plan(before, "web1", "esx2")
    src, dst = before.bridge("esx1").name, after.bridge("esx2").name
    (detach,) = detach_commands(before, "web1")
    (attach,) = attach_commands(after, "web1")
    ports = [i.port for i in before.host("web1").interfaces]
    assert detach == ["ovs-vsctl", "--timeout=30", "--", "del-port", src, ports[0],
                      "--", "del-port", src, ports[1]]
    assert ["add-port", dst, ports[0], "tag=100"] == attach[3:7]
    assert ["add-port", dst, ports[1], "tag=101"] == attach[attach.index(ports[1]) - 2:][:4]
    assert f"ofport_request={after.bridge('esx2').port(ports[0]).ofport}" in attach
    (both,) = move_commands(before, after, "web1")
    assert both == detach + attach[2:]  # one transaction


def test_model_spec_from_cluster(cluster) -> None:
    # The slower NIC of the two sets the vMotion path's rate: esx1's 10G, esx2's default 1G.
    assert vmotion_rate_bps(cluster, "esx1", "esx2") == 1e9
    shared = vmotion_spec(cluster, "web1", "esx2")
    nothing = vmotion_spec(cluster, "web1", "esx2", "shared-nothing")
    assert shared.memory_bytes == 256 * 2**20 and shared.disk_bytes == 0
    assert shared.dirty_rate_bps == 160e6
    assert nothing.disk_bytes == 512 * 2**20


def test_announce_frames() -> None:
    from scapy.layers.l2 import ARP, Ether

    rarp, garp = announce_frames("02:00:0a:64:00:03", "10.100.0.3")
    raw = bytes(rarp)
    assert raw[:6] == b"\xff" * 6 and raw[12:14] == ETH_RARP.to_bytes(2, "big")
    body = ARP(raw[14:])
    assert body.op == 3 and body.hwsrc == body.hwdst == "02:00:0a:64:00:03"
    g = Ether(bytes(garp))
    assert g[ARP].op == 1 and g[ARP].psrc == g[ARP].pdst == "10.100.0.3"


def test_capture_parse_classifies_tagged_and_untagged(tmp_path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.utils import wrpcap

    rarp, garp = announce_frames("02:00:0a:64:00:03", "10.100.0.3")
    tagged = [Ether(dst=f.dst, src=f.src) / Dot1Q(vlan=100, type=f.type) / f.payload for f in (rarp, garp)]
    other = [Ether() / ARP(op=1, psrc="10.100.0.4", pdst="10.100.0.3"), Ether() / IP() / UDP()]
    for i, f in enumerate([rarp, garp, *tagged, *other]):
        f.time = 1000 + i
    wrpcap(str(tmp_path / "a.pcap"), [rarp, garp, *other])
    wrpcap(str(tmp_path / "b.pcap"), tagged)
    res = Capture.parse({"vm": str(tmp_path / "a.pcap"), "uplink": str(tmp_path / "b.pcap")})
    assert (res["rarp"], res["garp"], res["arp"], res["other"]) == (2, 2, 1, 1)
    kinds = [(f["port"], f["kind"], f["vlan"]) for f in res["frames"]]
    assert kinds[:4] == [("vm", "rarp", None), ("vm", "garp", None), ("uplink", "rarp", 100),
                         ("uplink", "garp", 100)]
    assert res["frames"][2]["mac"] == "02:00:0a:64:00:03"


def _log(sent: list[int], t: list[int]) -> SimpleNamespace:
    """An agent's log with probes sent at `t` (ns); the peer got those in `sent`."""
    return SimpleNamespace(sent_seq=list(range(len(t))), sent_t=t, sent_mono=(), recv_seq=[],
                           recv_t_send=[], recv_t_recv=[], rx_start_ns=None, rx_end_ns=None,
                           recv_echo_seq=[], recv_echo_hold=[], info={}, _got=sent)


def test_switchover_outage_takes_the_gap_over_the_detached_stretch() -> None:
    ms = 1_000_000
    t = [i * ms for i in range(1000)]
    # a->b: a congestion gap at 100..120 ms, the switch-over gap 500..560 ms.
    got = [i for i in range(1000) if not (100 <= i < 120 or 500 <= i < 560)]
    a = _log([], t)
    b = _log([], t)
    b.recv_seq, b.recv_t_send, b.recv_t_recv = got, [t[i] for i in got], [t[i] + ms // 10 for i in got]
    a.recv_seq, a.recv_t_send, a.recv_t_recv = list(range(1000)), t, [x + ms // 10 for x in t]
    res = switchover_outage({"a": a, "b": b, "interval_ns": ms}, off_ns=505 * ms, on_ns=550 * ms)
    assert res["outage_ms"] == pytest.approx(60, abs=1.0)
    assert res["noise_floor_ms"] == pytest.approx(20, abs=1.0)
    assert -6 <= res["start_rel_ms"] <= -4


def test_sender_handshake_pauses_before_stop_and_copy(tmp_path) -> None:
    """The sender connects, says `ready` and waits for its cue; then says `pause`, waits, sends
    stop-and-copy, says `copied` (loopback, no root)."""
    from vclab.workloads.vmotion.model import VmotionSpec

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    py = [sys.executable, "-m", "vclab.workloads.vmotion.workload"]
    recv = subprocess.Popen([*py, "receive", "--bind", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE)
    try:
        assert recv.stdout.readline().strip() == b"ready"
        # above the stop threshold (0.3 s x 100 Mbit/s): one pre-copy round first
        spec = VmotionSpec(memory_bytes=8 * 2**20, dirty_rate_bps=1e6, link_rate_bps=1e8)
        send = subprocess.Popen([*py, "send", "--to", "127.0.0.1", "--port", str(port), "--spec",
                                 spec.model_dump_json(), "--switchover", "--log",
                                 str(tmp_path / "s.jsonl")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        word, _ = send.stdout.readline().split()
        assert word == b"ready"
        time.sleep(0.2)
        assert '"round"' not in (tmp_path / "s.jsonl").read_text()  # connected, waiting
        send.stdin.write(b"go\n")
        send.stdin.flush()
        word, t_pause = send.stdout.readline().split()
        assert word == b"pause"
        rounds = [line for line in (tmp_path / "s.jsonl").read_text().splitlines() if '"round"' in line]
        assert rounds and all("stop-and-copy" not in r for r in rounds)  # waits for us
        send.stdin.write(b"go\n")
        send.stdin.flush()
        word, t_copied = send.stdout.readline().split()
        assert word == b"copied" and int(t_copied) > int(t_pause)
        assert send.wait(timeout=30) == 0
        assert "stop-and-copy" in (tmp_path / "s.jsonl").read_text()
    finally:
        for p in (recv, locals().get("send")):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
