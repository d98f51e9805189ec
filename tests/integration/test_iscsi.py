"""Real iSCSI: tgtd in the array's namespace, libiscsi initiators in a hypervisor's, over OVS.

vcx-a is the array, vcx-b the hypervisor, vcx-c a second host. Storage path A is the rig's
bridge (10.250.40.0/24), path B a second bridge vcx-br2 (10.250.41.0/24) between vcx-a and
vcx-b only, so the array has one portal on each path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from rigs.netns import BlackHole, NetnsNode, Rig, rig, run
from vclab.lab.procs import ProcessTracker, alive
from vclab.workloads.iscsi import workload as iscsi
from vclab.workloads.base import WorkloadError
from vclab.workloads.iscsi.workload import Iscsi
from vclab.workloads.iscsi.target import Chap, IscsiTarget

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ovs-vsctl")
                       or not shutil.which("tgtd"), reason="needs root, Open vSwitch and tgt"),
]

MiB = 2**20
PATH_A, PATH_B = "10.250.40.0/24", "10.250.41.0/24"
# An I/O older than this declares its path dead. Well above the stalls seen with no fault:
# the userspace datapath drops packets under load and TCP retransmits after >= 200 ms.
IO_TIMEOUT_MS = 1000.0


@dataclass
class Fabric:
    rig: Rig
    array: NetnsNode
    host: NetnsNode
    other: NetnsNode
    portal_a: str
    portal_b: str
    host_b: str


@contextmanager
def second_path(r: Rig, nodes: list[NetnsNode], subnet: str) -> Iterator[dict[str, str]]:
    """A second netdev bridge PREFIX-br2 with an eth1 in each of `nodes`: name -> address."""
    bridge = f"{r.bridge}2"
    prefix = bridge.split("-")[0]
    base = subnet.rsplit(".", 1)[0]
    ports = []
    addrs = {}
    try:
        run(["ovs-vsctl", "--may-exist", "add-br", bridge, "--", "set", "bridge", bridge,
             "datapath_type=netdev", "fail_mode=standalone"])
        run(["ip", "link", "set", bridge, "up"], check=False)
        for i, node in enumerate(nodes):
            port = f"{prefix}-{node.name.split('-')[-1]}2p"
            ports.append(port)
            addr = f"{base}.{i + 1}"
            run(["ip", "link", "add", port, "type", "veth", "peer", "name", "eth1", "netns",
                 node.name])
            node.cmd(["ip", "addr", "add", f"{addr}/24", "dev", "eth1"], check=True)
            node.cmd(["ip", "link", "set", "eth1", "up"], check=True)
            node.cmd(["ethtool", "-K", "eth1", "tx", "off", "tso", "off", "gso", "off"])
            run(["ip", "link", "set", port, "up"])
            run(["ovs-vsctl", "add-port", bridge, port])
            node.ips["eth1"] = addr
            addrs[node.name] = addr
        yield addrs
    finally:
        run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)
        for port in ports:
            run(["ip", "link", "del", port], check=False)


@pytest.fixture(scope="module")
def fabric() -> Iterator[Fabric]:
    with rig("vcx", 3, subnet=PATH_A) as r:
        array, host, other = r.nodes
        with second_path(r, [array, host], PATH_B) as b:
            yield Fabric(r, array, host, other, array.ip, b[array.name], b[host.name])


@pytest.fixture
def tracker(tmp_path) -> Iterator[ProcessTracker]:
    t = ProcessTracker(run_id=f"test-iscsi-{os.getpid()}", state_dir=tmp_path / "state")
    yield t
    t.end_all()


@contextmanager
def target(fabric: Fabric, tracker: ProcessTracker, workdir, portals: list[str],
           chap: Chap | None = None) -> Iterator[IscsiTarget]:
    t = IscsiTarget(fabric.array, portals, {"datastore1": 64 * MiB}, chap, tracker=tracker,
                    workdir=workdir / "array")
    try:
        yield t.start()
    finally:
        pid = t.pid
        t.stop()
        assert pid is None or not alive(pid, None), f"tgtd {pid} still running after stop()"


def run_io(wl: Iscsi, seconds: float) -> dict:
    wl.check()
    try:
        wl.start()
        time.sleep(seconds)
    finally:
        wl.stop()
    return wl.collect()


@pytest.mark.parametrize("pattern,depth", [("random-4k", 1), ("sequential-64k", 4)])
def test_io_runs(fabric, tracker, tmp_path, pattern, depth) -> None:
    with target(fabric, tracker, tmp_path, [fabric.portal_a]) as t:
        wl = Iscsi.to(t, fabric.host, "datastore1", tracker, pattern=pattern, mix="70/30",
                      depth=depth, workdir=tmp_path / "io")
        fabric.array.cmd(["nstat", "-n"])
        raw = run_io(wl, 3.0)
        retrans = fabric.array.cmd(["nstat", "-a", "TcpRetransSegs"]).stdout.split()
    res = Iscsi.parse(raw)
    lat = res["latency_ms"]
    print(f"\niscsi {pattern} qd{depth} 70/30: {res['iops']:.0f} IOPS "
          f"({res['read_iops']:.0f} r / {res['write_iops']:.0f} w), "
          f"{res['throughput_bps'] / 8e6:.1f} MB/s; latency median {lat['median']:.2f} ms, "
          f"p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms; longest stall "
          f"{res['longest_stall_ms']:.1f} ms; array TCP retransmits {retrans[-2:-1]}")
    assert res["iops"] > 20
    assert res["failed"] == 0 and res["unfinished"] == 0, raw["trailer"]
    assert 0.55 < res["reads"] / res["ios"] < 0.85
    # Sane, not fast: OVS's userspace datapath drops packets on a busy machine, so TCP
    # retransmissions put the tail in the hundreds of ms (the retransmit count says so).
    assert 0 < lat["median"] < 100
    assert lat["max"] < 5000
    assert res["path_switches"] == []
    assert res["ios_per_path"] == {f"{fabric.portal_a}:3260": res["ios"]}


def test_chap(fabric, tracker, tmp_path) -> None:
    chap = Chap("esx1", "vclab-secret-16b")
    with target(fabric, tracker, tmp_path, [fabric.portal_a], chap) as t:
        lun = t.lun_numbers["datastore1"]
        good = iscsi.login(fabric.host, fabric.portal_a, t.iqn, lun, tracker, chap=chap)
        wrong = iscsi.login(fabric.host, fabric.portal_a, t.iqn, lun, tracker,
                            chap=Chap("esx1", "not-the-secret"))
        none = iscsi.login(fabric.host, fabric.portal_a, t.iqn, lun, tracker)
        refused = Iscsi.to(t, fabric.host, "datastore1", tracker, chap=Chap("esx1", "wrong-one"),
                           workdir=tmp_path / "io")
        with pytest.raises(WorkloadError, match="Authentication failure"):
            refused.start()
        assert refused.proc is None  # its agent was ended
    print(f"\nCHAP: right secret {good}; wrong secret {wrong}; no CHAP {none}")
    assert good["ok"], good
    assert not wrong["ok"] and "auth" in wrong["error"].lower(), wrong
    assert not none["ok"], none


def cut_path_a(fabric: Fabric, tracker: ProcessTracker, tmp_path, cut: str,
               attempt: int) -> tuple[dict, dict, int, int]:
    """One run: I/O through A (B standby), A cut for 2.5 s, then restored for 3 s."""
    r = fabric.rig
    with target(fabric, tracker, tmp_path / f"try{attempt}",
                [fabric.portal_a, fabric.portal_b]) as t:
        wl = Iscsi.to(t, fabric.host, "datastore1", tracker, pattern="random-4k", mix="70/30",
                      io_timeout_ms=IO_TIMEOUT_MS, relogin_s=0.5,
                      workdir=tmp_path / f"try{attempt}" / "io")
        hole = BlackHole(r.bridge)  # every IPv4 packet on path A's bridge
        port = r.ports[fabric.array.name]
        wl.check()
        try:
            wl.start()
            time.sleep(1.0)
            sessions = t.sessions()
            assert {s.get("address") for s in sessions} >= {fabric.host.ip, fabric.host_b}, sessions
            time.sleep(1.0)
            if cut == "silent":
                hole.connect()
                fault_ns = hole.apply()
            else:
                fault_sent = time.time_ns()
                run(["ip", "link", "set", port, "down"])
                fault_ns = (fault_sent + time.time_ns()) // 2
            time.sleep(2.5)
            if cut == "silent":
                hole.undo()
            else:
                run(["ip", "link", "set", port, "up"])
            restored_ns = time.time_ns()
            time.sleep(3.0)
        finally:
            hole.close()
            run(["ip", "link", "set", port, "up"], check=False)
            wl.stop()
        raw = wl.collect()
    return Iscsi.parse(raw, fault_ns=fault_ns), raw, fault_ns, restored_ns


@pytest.mark.parametrize("cut", ["silent", "link-down"])
def test_multipath_failover(fabric, tracker, tmp_path, cut) -> None:
    """Cut path A mid-run: the initiator goes on through path B; the stall is bounded by the
    per-I/O timeout plus the switch. Then restore A: it is logged in again (no failback)."""
    for attempt in range(3):
        res, raw, fault_ns, restored_ns = cut_path_a(fabric, tracker, tmp_path, cut, attempt)
        early = [d for d in res["paths_down"] if d["t_ns"] < fault_ns]
        if not early:
            break
        # The OVS is shared: another run's bridge changes can stall every port for seconds,
        # which is a real path failure to the initiator. Such a run tests nothing: run again.
        print(f"\nattempt {attempt}: a path failed before the cut {early}; running again")
    else:
        pytest.fail(f"every attempt saw a path fail before the cut: {res['paths_down']}")
    a, b = f"{fabric.portal_a}:3260", f"{fabric.portal_b}:3260"
    relogin_ms = [(u["path"], round((u["t_ns"] - restored_ns) / 1e6))
                  for u in res["paths_up"] if u["t_ns"] > fault_ns]
    print(f"\nmultipath ({cut}): stall {res['fault_stall_ms']:.0f} ms (noise floor "
          f"{res['stall_noise_floor_ms']:.1f} ms); path A declared dead after "
          f"{res['detect_ms']:.0f} ms, switched at {res['failover_ms']:.0f} ms, first I/O on B "
          f"at {res['resumed_on_other_path_ms']:.0f} ms; longest I/O {res['longest_io']['ms']:.0f}"
          f" ms ({res['longest_io']['attempts']} attempts); {res['iops']:.0f} IOPS; "
          f"per path {res['ios_per_path']}; switches {res['path_switches']}; re-logins after "
          f"restore (ms) {relogin_ms}")
    assert res["failed"] == 0 and res["unfinished"] == 0, raw["trailer"]
    assert [(s["from"], s["to"]) for s in res["path_switches"]] == [(a, b)]
    assert res["ios_per_path"].get(b, 0) > 50  # it went on through B
    assert res["paths_down"][0]["path"] == a and res["paths_down"][0]["reason"] == "timeout"
    # Detection takes one I/O timeout; the stall ends with the first I/O re-issued on B.
    assert IO_TIMEOUT_MS * 0.9 < res["fault_stall_ms"] < IO_TIMEOUT_MS + 500
    assert res["fault_stall_ms"] > 5 * res["stall_noise_floor_ms"]
    assert res["longest_io"]["attempts"] == 2 and res["longest_io"]["path"] == b
    # Path A came back: logged in again in the background, I/O stays on B (no failback).
    relogins = [u for u in res["paths_up"] if u["path"] == a and u["t_ns"] > restored_ns]
    assert relogins, res["paths_up"]
    last_on_a = max(row.t1 for row in raw["rows"] if row.kind in ("r", "w") and row.path == 0)
    assert last_on_a < fault_ns + IO_TIMEOUT_MS * 1e6


def test_single_path_waits_out_the_cut(fabric, tracker, tmp_path) -> None:
    """No second path: the I/O in flight waits on its session through a 2.5 s silent cut and
    completes when TCP retransmits after the path is back; nothing fails, nothing logs out."""
    cut_s = 2.5
    r = fabric.rig
    with target(fabric, tracker, tmp_path, [fabric.portal_a]) as t:
        wl = Iscsi.to(t, fabric.host, "datastore1", tracker, io_timeout_ms=IO_TIMEOUT_MS,
                      workdir=tmp_path / "io")
        hole = BlackHole(r.bridge)
        wl.check()
        try:
            wl.start()
            time.sleep(1.5)
            hole.connect()
            fault_ns = hole.apply()
            time.sleep(cut_s)
            hole.undo()
            # Long enough for the retransmission after the next one (due ~6.2 s after the
            # cut began) when the first one after the repair is lost too (CI: 8.5 s stall)
            time.sleep(9.0)
        finally:
            hole.close()
            wl.stop()
        raw = wl.collect()
    res = Iscsi.parse(raw, fault_ns=fault_ns)
    print(f"\nsingle path, {hole.length_ms:.0f} ms silent cut: stall "
          f"{res['fault_stall_ms']:.0f} ms (noise floor {res['stall_noise_floor_ms']:.1f} ms); "
          f"longest I/O "
          f"{res['longest_io']['ms']:.0f} ms; {res['iops']:.0f} IOPS")
    assert res["failed"] == 0 and res["unfinished"] == 0, raw["trailer"]
    assert res["paths_down"] == [] and res["path_switches"] == []
    # It cannot end before the path is back, and ends at TCP's next retransmission after that
    # (RTO doubling from 200 ms: the next one is due at most ~cut later). On a busy userspace
    # switch that first retransmission can be lost too, and the one after is due ~2 cuts later
    # again (seen in CI: 6.7 and 8.5 s after a 2.5 s cut).
    assert cut_s * 1000 * 0.95 < res["fault_stall_ms"] < cut_s * 1000 * 4 + 1000
    assert res["longest_io"]["attempts"] == 1


def test_compare_and_write_and_reservations(fabric, tracker, tmp_path) -> None:
    with target(fabric, tracker, tmp_path, [fabric.portal_a]) as t:
        res = iscsi.features(fabric.host, fabric.portal_a, t.iqn, t.lun_numbers["datastore1"],
                             tracker)
    caw, pr = res["compare_and_write"], res["persistent_reservations"]
    version = subprocess.run(["tgtd", "-V"], capture_output=True, text=True).stdout.strip()
    print(f"\ntgt {version}: COMPARE AND WRITE {caw}; persistent reservations {pr}")
    assert caw["status"] in ("GOOD", "CHECK_CONDITION")
    if caw["supported"]:
        assert "MISCOMPARE" in caw["miscompare"]
    if version == "1.0.85":
        # tgt's bs_rdwr can do it, but 1.0.85's SBC opcode table leaves 0x89 commented out.
        assert not caw["supported"] and caw["sense"] == "ILLEGAL_REQUEST/INVALID_OPERATION_CODE"
    assert pr["supported"], res["steps"]
    assert set(pr["keys"]) == {"0x766300000000000a", "0x766300000000000b"}
    assert pr["holder"] == "0x766300000000000a" and pr["type"] == 1
    assert pr["b_read_while_reserved"] == "GOOD"
    assert pr["a_write_after_release"] == "GOOD"
