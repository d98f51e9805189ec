"""A results store filled with synthetic but realistic data, for tests and for a person who wants
to see the tables, plots and report without running anything:

    cd tests && ../.venv/bin/python -m rigs.demo /tmp/vclab-demo      # writes results.sqlite and report.html

Three mechanisms x 3 repetitions on the default cluster, one inter-switch link failure, probes on
three networks, iSCSI, iperf3, HA heartbeats and a vMotion during the fault. The numbers follow
what STACK.md measured on this kind of machine: fast-failover groups lose 7-9 ms, RSTP 13-16 ms,
tuned STP 10.6 s; a 1 ms Python probe shows 3-7 ms gaps with no fault at all. iSCSI stalls follow
TCP's retransmission backoff (200 ms minimum RTO, doubling). One STP repetition failed, as real
runs sometimes do, so the report has a failure to explain.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from vclab.results.model import Event, FaultRecord, Metric, Raw, RepetitionResult, Series
from vclab.results.store import ResultStore

TOPOLOGY_YAML = """\
cluster: lab
mechanism: rstp
networks:
  management: {vlan: 10, subnet: 10.10.0.0/24, share: 10%}
  vmotion:    {vlan: 20, subnet: 10.20.0.0/24, share: 30%}
  storage-a:  {vlan: 30, subnet: 10.30.0.0/24, share: 20%, kind: storage}
  storage-b:  {vlan: 31, subnet: 10.31.0.0/24, share: 20%, kind: storage}
  vm-web:     {vlan: 100, subnet: 10.100.0.0/24, share: 20%, kind: vm}
switches:
  tor-a: {priority: 4096}
  tor-b: {priority: 8192}
links:
  - [tor-a, tor-b]
  - [tor-a, tor-b]
hypervisors:
  esx1: &host
    nics: {vmnic0: tor-a, vmnic1: tor-b}
    team: {mode: active-backup}
    networks: [management, vmotion, storage-a, storage-b, vm-web]
  esx2: *host
  esx3: *host
storage:
  array1:
    portals: {storage-a: tor-a, storage-b: tor-b}
    luns: {datastore1: 256MiB}
management:
  vcenter: {nics: {eth0: tor-a, eth1: tor-b}, networks: [management]}
vms:
  web1: {host: esx1, networks: [vm-web], memory: 1GiB, dirty_rate: 20MB/s, disk: 4GiB}
  web2: {host: esx2, networks: [vm-web], memory: 1GiB, dirty_rate: 20MB/s, disk: 4GiB}
"""

EXPERIMENT_YAML = """\
# Demo: one inter-switch link fails while a VM migrates.
experiment: demo-link-failure
topology: ../topologies/default.yaml
mechanisms: [sdn, rstp, stp]
repetitions: 3
duration: 30s
workloads:
  - probe: {from: esx1, to: esx2, network: vmotion, every: 1ms}
  - probe: {from: esx1, to: array1, network: storage-a}
  - probe: {from: esx1, to: vcenter, network: management}
  - heartbeats: {isolation_address: vcenter, interval: 1s, failure_after: 3s, isolation_after: 5s}
  - vmotion: {vm: web1, to: esx2, at: 5s}
  - iscsi: {hosts: [esx1], lun: datastore1, pattern: random-4k, mix: 70/30}
  - iperf3: {from: esx3, to: esx2, network: vm-web, rate: max}
faults:
  - {at: 6s, link: "tor-a/tor-b#1", action: down}
  - {at: 25s, link: "tor-a/tor-b#1", action: up}
"""

DURATION_MS = 30_000.0
FAULT_MS = 6_000.0
UNDO_MS = 25_000.0
VMOTION_AT_MS = 5_000.0
# (median outage ms, spread ms) per mechanism
OUTAGE = {"sdn": (8.0, 0.8), "rstp": (14.5, 1.2), "stp": (10_600.0, 250.0)}
PROBES = [("vmotion", "probe esx1>esx2 vmotion"), ("storage-a", "probe esx1>array1 storage-a"),
          ("management", "probe esx1>vcenter management")]
LINK_BPS = 9.4e9
FAILED = ("stp", 2, "fabric did not converge within 60 s of the build: tor-b port 2 still "
                    "learning (forward delay 15 s x 2 after a topology change)")

SOFTWARE = {"python": "3.11.2", "openvswitch": "3.1.0", "mininet": "2.3.0", "os-ken": "4.2.2",
            "iperf3": "3.12", "tgt": "1.0.85", "libiscsi": "1.19.0", "kernel": "6.18.0"}
CAPABILITIES = [
    {"name": "ovs-netdev", "available": True, "detail": "userspace datapath", "missing_means": ""},
    {"name": "ovs-kernel-datapath", "available": False, "detail": "no openvswitch kernel module",
     "missing_means": "the userspace datapath is used: slower, but failover behaves the same"},
    {"name": "netem", "available": False, "detail": "qdisc kind is unknown",
     "missing_means": "link delay and loss are refused"},
    {"name": "bonding", "available": False, "detail": "no bonding module",
     "missing_means": "NIC teams are OVS bonds"},
    {"name": "iperf3", "available": True, "detail": "3.12", "missing_means": ""},
]
HOST = {"hostname": "demo", "kernel": "6.18.0", "cpus": 2, "memory": "4 GiB", "os": "Debian 12"}


def _iscsi_stall_ms(outage_ms: float) -> float:
    """TCP's retransmission timer: the stall ends at the first retry after the path is back."""
    rto, elapsed = 200.0, 0.0
    while elapsed + rto < outage_ms:
        elapsed += rto
        rto = min(rto * 2, 120_000.0)
    return elapsed + rto + 1.0  # the retry itself


def _repetition(mech: str, index: int, seed: int, t0_ns: int) -> RepetitionResult:
    rng = np.random.default_rng(seed)
    mu, sd = OUTAGE[mech]
    rep = RepetitionResult(mech, index, seed, started_ns=t0_ns,
                           finished_ns=t0_ns + int(DURATION_MS * 1e6) + 4_000_000_000)
    applied = FAULT_MS + float(rng.uniform(0.2, 1.5))  # ovs-vsctl takes a moment
    fault = "tor-a/tor-b#1 down"
    rep.faults.append(FaultRecord(fault, "link", "tor-a/tor-b#1", "down", FAULT_MS,
                                  t0_ns + int(applied * 1e6), applied,
                                  UNDO_MS + float(rng.uniform(0.2, 1.5)),
                                  {"commands": ["ip link set vc-ta-tb1 down"]}))
    network_outage = max(1.0, float(rng.normal(mu, sd)))

    for network, workload in PROBES:
        outage = max(1.0, network_outage + float(rng.normal(0, 0.6)))
        noise = float(rng.uniform(3.0, 7.0))
        t = np.arange(10.0, DURATION_MS, 10.0)
        gaps = noise * rng.beta(1.5, 6.0, t.size)
        noise = float(gaps.max())  # the noise floor is the largest gap with nothing broken
        pts = [(float(a), float(b)) for a, b in zip(t, gaps) if not applied <= a <= applied + outage]
        pts.append((applied + outage, outage))
        pts.sort()
        rtt_t = np.arange(50.0, DURATION_MS, 50.0)
        rtt = 0.12 + rng.gamma(2.0, 0.03, rtt_t.size)
        rtt_pts = [(float(a), float(b)) for a, b in zip(rtt_t, rtt) if not applied <= a <= applied + outage]
        rep.series += [Series(workload, "probe", network, "gap_ms", pts),
                       Series(workload, "probe", network, "rtt_ms", rtt_pts)]
        lost = round(outage)  # 1 ms probes
        rep.metrics += [Metric(workload, "probe", network, "outage_ms", outage, fault=fault),
                        Metric(workload, "probe", network, "loss_outage_ms", float(lost), fault=fault),
                        Metric(workload, "probe", network, "lost", lost, fault=fault),
                        Metric(workload, "probe", network, "noise_floor_ms", noise)]

    stall = _iscsi_stall_ms(network_outage) + float(rng.uniform(0, 5))
    lat_t = np.arange(100.0, DURATION_MS, 100.0)
    lat = 0.35 + rng.gamma(2.0, 0.05, lat_t.size)
    lat_pts = [(float(a), float(b)) for a, b in zip(lat_t, lat) if not applied <= a <= applied + stall]
    lat_pts.append((applied + stall, stall))
    lat_pts.sort()
    rep.series.append(Series("iscsi esx1", "iscsi", "storage-a", "latency_ms", lat_pts))
    rep.metrics.append(Metric("iscsi esx1", "iscsi", "storage-a", "longest_stall_ms", stall, fault=fault))

    # iperf3 on vm-web: TCP stops for the outage plus the retransmission wait, then ramps back.
    thr_t = np.arange(100.0, DURATION_MS, 100.0)
    resume = applied + stall
    thr = np.where((thr_t > applied) & (thr_t < resume), 0.0,
                   LINK_BPS * (1 - 0.02 * rng.random(thr_t.size)))
    ramp = (thr_t >= resume) & (thr_t < resume + 400)
    thr[ramp] *= (thr_t[ramp] - resume) / 400
    window = (thr_t > applied) & (thr_t <= applied + 2000)
    rep.series.append(Series("iperf3 esx3>esx2", "iperf3", "vm-web", "throughput_bps",
                             list(zip(thr_t.tolist(), thr.tolist()))))
    rep.metrics.append(Metric("iperf3 esx3>esx2", "iperf3", "vm-web", "throughput_during_fault_bps",
                              float(thr[window].mean()), fault=fault))
    rep.raw.append(Raw("iperf3 esx3>esx2", json.dumps(
        {"end": {"sum_received": {"bits_per_second": float(thr.mean())}, "sum_sent": {"retransmits": 41}}}),
        "iperf3.json"))

    # HA heartbeats every 1 s over management: failed after 3 s of silence, isolated after 5 s.
    missed = int(network_outage // 1000)
    for k in range(missed):
        rep.events.append(Event("heartbeats", applied + (k + 1) * 1000, "heartbeat_missed",
                                {"host": "esx1"}))
    false_failures = 0
    if network_outage > 3000:
        rep.events.append(Event("heartbeats", applied + 3000, "declared_failed", {"host": "esx1"}))
        false_failures = 1
    if network_outage > 5000:
        rep.events.append(Event("heartbeats", applied + 5000, "isolated", {"host": "esx1"}))
    rep.metrics.append(Metric("heartbeats", "heartbeats", "management", "false_failures", false_failures,
                              fault=fault))

    # vMotion of web1 (1 GiB, dirtying 20 MB/s) over ~3 Gbit/s: pre-copy rounds, then stop-and-copy.
    rate, dirty = 3e9 / 8, 20e6
    nbytes, clock, i = 2**30, VMOTION_AT_MS, 0
    while True:
        final = nbytes < 8e6 or i >= 30
        seconds = nbytes / rate
        end = clock + seconds * 1e3
        if clock <= applied < end:  # the stall lengthens the round it hits
            seconds += stall / 1e3
            end += stall
        rep.events.append(Event("vmotion web1", clock, "round",
                                {"index": i, "phase": "stop-and-copy" if final else "memory",
                                 "bytes": int(nbytes), "duration_ms": seconds * 1e3}))
        if final:
            downtime = seconds * 1e3 + 40.0  # plus resume on the destination
            rep.events.append(Event("vmotion web1", end, "switch_over", {"to": "esx2"}))
            break
        nbytes, clock, i = dirty * seconds, end, i + 1
    rep.metrics += [Metric("vmotion web1", "vmotion", "vmotion", "total_ms", end + 40.0 - VMOTION_AT_MS),
                    Metric("vmotion web1", "vmotion", "vmotion", "downtime_ms", downtime)]
    return rep


def fill_demo(store: ResultStore, seed: int = 1) -> int:
    """Record a whole demo run in `store`; return its run id."""
    t0 = 1_764_000_000_000_000_000  # a fixed wall clock, so the demo is the same every time
    run_id = store.start_run("demo-link-failure", EXPERIMENT_YAML, TOPOLOGY_YAML, software=SOFTWARE,
                             capabilities=CAPABILITIES, host=HOST,
                             settings={"ha_failure_ms": 3000.0, "ha_isolation_ms": 5000.0,
                                       "probe_interval_ms": 1.0},
                             started_ns=t0)
    k = 0
    for index in (1, 2, 3):
        for mech in OUTAGE:
            start = t0 + k * 40_000_000_000
            k += 1
            if (mech, index) == FAILED[:2]:
                store.record_repetition(run_id, RepetitionResult(
                    mech, index, seed * 1000 + k, "failed", FAILED[2], start, start + 60_000_000_000))
                continue
            store.record_repetition(run_id, _repetition(mech, index, seed * 1000 + k, start))
    store.finish_run(run_id, finished_ns=t0 + k * 40_000_000_000)
    return run_id


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "vclab-demo-results")
    from vclab.results.report import write_report

    with ResultStore(out) as store:
        if not store.runs():
            fill_demo(store)
        path = write_report(store, out / "report.html")
    print(f"store: {store.path}\nreport: {path}")


if __name__ == "__main__":
    main()
