"""iSCSI I/O stall after a storage path black-holes for 10, 50 and 200 ms, against TCP's and the
initiator's prediction.

    .venv/bin/python bench/storage_stall.py --quick    # 2 black holes per length
    .venv/bin/python bench/storage_stall.py            # 5 per length

One small cluster (prefix `vcs`): a hypervisor and an array with two portals on one switch; the
hypervisor's initiator (our libiscsi agent, multipath, queue depth 1, random 4k 70/30) logs in
to both and runs I/O on the first. The first portal's cable is black-holed both ways with its
carrier up (tc redirect to a sink, as the `silent` fault) for each length, a few seconds apart.
A 1 ms probe between the hypervisor and that portal measures the network outage each time.

The prediction (workloads/iscsi/stall_model.py): the first TCP retransmission after the black hole
ends (RTO from `ss` on the session just before, doubling after each lost retransmission), or
the initiator's failover after its I/O timeout, whichever is first. Each length prints
`<len> ms: outage O ms, stall S ms, predicted P ms (cause, rto R ms) stall/predicted X`
(medians over the repetitions); the machine's load is printed with them. Each trial's line
also gives both ends' RTO and RTT (`ss`) and which TCP counters moved (`nstat`: loss probes,
retransmission timeouts), so the cause of every stall can be read off.

Measured (--quick, load 2.6, 20 s):
    10 ms: outage 12.0 ms, stall 212 ms, predicted 209 ms (tcp-retransmission, rto 208 ms) stall/predicted 1.02
    50 ms: outage 47.5 ms, stall 264 ms, predicted 209 ms (tcp-retransmission, rto 208 ms) stall/predicted 1.26
    200 ms: outage 197.0 ms, stall 235 ms, predicted 209 ms (tcp-retransmission, rto 208 ms) stall/predicted 1.12
Again on 2026-12-08 (--quick, load 0.3, 19 s; the stall now the gap open at the black hole):
    10 ms: outage 8.0 ms, stall 232 ms, predicted 209 ms (tcp-retransmission, rto 208 ms) stall/predicted 1.11
    50 ms: outage 51.0 ms, stall 236 ms, predicted 209 ms (tcp-retransmission, rto 208 ms) stall/predicted 1.13
    200 ms: outage 199.0 ms, stall 209 ms, predicted 209 ms (tcp-retransmission, rto 208 ms) stall/predicted 1.00
Every stall is TCP's, not the network's and not the initiator's: a 10 ms black hole costs an
I/O ~210 ms, the 200 ms RTO floor; the initiator's 1 s I/O timeout never fired (no failover).
The stalls above the prediction (~263 ms) are the trials where the target's tail-loss probe
was lost too and its RTO timer restarted from the probe (nstat: a loss probe and a timeout on
the same end); the model leaves that out, so it is a lower bound by up to ~55 ms.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from vclab.experiments.cabling import PlanCabling
from vclab.experiments.faults import run_commands, sink_commands, sink_name
from vclab.lab.lab import Lab
from vclab.topology.loader import cluster_from_text
from vclab.workloads.probe import metrics as probe_metrics
from vclab.workloads.iscsi.workload import Iscsi, parse
from vclab.workloads.iscsi.target import IscsiTarget
from vclab.workloads.probe.workload import Endpoint, Probe
from vclab.workloads.iscsi.stall_model import predict_stall

PREFIX = "vcs"
LENGTHS_MS = (10, 50, 200)
SPACING_S = 2.5  # after a black hole: the session's RTO backoff is over long before this
IO_TIMEOUT_MS = 1000.0  # the experiments' initiator setting (workloads/iscsi.py)

CLUSTER = """
cluster: stallbench
mechanism: none
networks:
  storage-a: {vlan: 30, subnet: 10.30.0.0/24, kind: storage}
  storage-b: {vlan: 31, subnet: 10.31.0.0/24, kind: storage}
switches:
  tor-a: {}
hypervisors:
  esx1: {nics: {vmnic0: tor-a}, networks: [storage-a, storage-b]}
storage:
  array1:
    portals: {storage-a: tor-a, storage-b: tor-a}
    luns: {datastore1: 64MiB}
"""


def session_tcp(node, port: int = 3260) -> dict[str, float]:
    """rto and rtt (ms) of the node's iSCSI connections, from `ss -ti` (the largest RTO)."""
    proc = node.popen(["ss", "-tin", "state", "established", f"( dport = :{port} or sport = :{port} )"],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.communicate(timeout=10)[0].decode()
    rto = [float(x) for x in re.findall(r"\brto:([\d.]+)", out)]
    rtt = [(float(a), float(b)) for a, b in re.findall(r"\brtt:([\d.]+)/([\d.]+)", out)]
    if not rto:
        return {}
    return {"rto_ms": max(rto), "rtt_ms": max(r for r, _ in rtt) if rtt else 0.0,
            "rttvar_ms": max(v for _, v in rtt) if rtt else 0.0}


NSTAT = ("TcpRetransSegs", "TcpExtTCPLossProbes", "TcpExtTCPTimeouts", "TcpExtTCPSpuriousRTOs",
         "TcpExtTCPLossProbeRecovery")


def tcp_counters(node) -> dict[str, int]:
    """The namespace's TCP retransmission counters (nstat, absolute)."""
    proc = node.popen(["nstat", "-asz", "--json", *NSTAT], stdout=subprocess.PIPE,
                      stderr=subprocess.DEVNULL)
    out = proc.communicate(timeout=10)[0].decode()
    try:
        data = json.loads(out)
    except ValueError:
        return {}
    values = next(iter(data.values()), {}) if data else {}
    return {k: int(v) for k, v in values.items() if k in NSTAT}


def black_hole(ends: tuple[str, ...], sink: str, hold_ms: float) -> dict[str, int]:
    """Every frame either end of the cable sends goes to the sink for `hold_ms`."""
    add = [["tc", "filter", "replace", "dev", e, "egress", "protocol", "all", "prio", "1",
            "handle", "800::1", "u32", "match", "u32", "0", "0",
            "action", "mirred", "egress", "redirect", "dev", sink] for e in ends]
    delete = [["tc", "filter", "del", "dev", e, "egress", "prio", "1"] for e in ends]
    t = {"start_ns": time.time_ns()}
    t["applied_ns"], _ = run_commands(add)
    time.sleep(max(0.0, hold_ms / 1e3 - (time.time_ns() - t["start_ns"]) / 1e9))
    t["restore_ns"] = time.time_ns()
    t["restored_ns"], _ = run_commands(delete)
    return t


def network_outage_ms(raw: dict, t: dict[str, int]) -> float:
    """The longest probe gap (either way) that overlaps the black hole."""
    worst = 0.0
    for stream in Probe.streams(raw)[:2]:
        result = probe_metrics.analyse(stream, fault_ns=t["start_ns"])
        for g in result.gaps:
            if g.end_ns >= t["start_ns"] and g.start_ns <= t["restored_ns"] + 20_000_000:
                worst = max(worst, g.outage_ms)
    return worst


def main(
    quick: Annotated[bool, typer.Option(help="2 black holes per length instead of 5")] = False,
    out: Annotated[Path | None, typer.Option(help="directory for logs")] = None,
) -> None:
    if os.geteuid() != 0:
        print("needs root (network namespaces, Open vSwitch)")
        raise typer.Exit(2)
    outdir = out or Path(tempfile.mkdtemp(prefix="vclab-stall-"))
    reps = 2 if quick else 5
    sink = sink_name(PREFIX)
    started = time.monotonic()
    trials: list[dict] = []
    load = os.getloadavg()[0]
    with Lab(cluster_from_text(CLUSTER), prefix=PREFIX) as lab:
        ends = PlanCabling(lab.plan).link_ends("array1.storage-a")
        run_commands(sink_commands(sink))
        run_commands([["tc", "qdisc", "replace", "dev", e, "clsact"] for e in ends])
        array, host = lab.node("array1"), lab.node("esx1")
        portals = [lab.plan.host("array1").interface(n).ip for n in ("storage-a", "storage-b")]
        target = IscsiTarget(array, portals, {"datastore1": 64 * 2**20}, None,
                             tracker=lab.tracker, workdir=outdir / "target")
        iscsi = None
        probe = Probe(Endpoint(host, lab.plan.host("esx1").interface("storage-a").ip),
                      Endpoint(array, portals[0]), lab.tracker, interval_ms=1.0,
                      workdir=outdir / "probe")
        try:
            target.start()
            iscsi = Iscsi.to(target, host, "datastore1", lab.tracker, portals=portals,
                             io_timeout_ms=IO_TIMEOUT_MS, name="stall", workdir=outdir / "iscsi")
            iscsi.check()
            iscsi.start()
            probe.check()
            probe.start()
            time.sleep(2.0)
            for rep in range(reps):
                for length in LENGTHS_MS:
                    tcp = session_tcp(host)
                    target_tcp = session_tcp(array)
                    before = {"initiator": tcp_counters(host), "target": tcp_counters(array)}
                    t = black_hole(ends, sink, length)
                    time.sleep(SPACING_S)
                    after = {"initiator": tcp_counters(host), "target": tcp_counters(array)}
                    counters = {f"{side}.{k}": after[side].get(k, 0) - v
                                for side in before for k, v in before[side].items()
                                if after[side].get(k, 0) - v}
                    trials.append({"length_ms": length, "rep": rep, **t, **tcp,
                                   "target_rto_ms": target_tcp.get("rto_ms"),
                                   "target_rtt_ms": target_tcp.get("rtt_ms"), "tcp": counters})
        finally:
            probe.stop()
            if iscsi is not None:
                iscsi.stop()
            target.stop()
            run_commands([["tc", "qdisc", "del", "dev", e, "clsact"] for e in ends], check=False)
            run_commands([["ip", "link", "del", sink]], check=False)
        raw_probe = probe.collect()
        raw_io = iscsi.collect()
    rows = [r for r in raw_io.get("rows", [])]
    print(f"storage stall: black hole on one path, iSCSI random 4k depth 1, io_timeout "
          f"{IO_TIMEOUT_MS:.0f} ms, 2 paths (load {load:.1f}, {time.monotonic() - started:.0f} s, "
          f"logs in {outdir})")
    trials.sort(key=lambda x: x["start_ns"])
    for i, tr in enumerate(trials):
        nxt = trials[i + 1]["start_ns"] if i + 1 < len(trials) else None
        window = {**raw_io, "rows": [r for r in rows if nxt is None or r[2] < nxt]}
        m = parse(window, tr["start_ns"])
        tr["stall_ms"] = m.get("fault_stall_ms") or 0.0
        tr["failover_ms"] = m.get("failover_ms")
        tr["outage_ms"] = network_outage_ms(raw_probe, tr)
        # The side whose retransmission timer fired (nstat) is the one that lost the segment
        # the I/O waited for; with neither (or both), the slower timer.
        sides = [side for side in ("initiator", "target") if tr["tcp"].get(f"{side}.TcpExtTCPTimeouts")]
        rtos = {"initiator": tr.get("rto_ms") or 200.0, "target": tr.get("target_rto_ms") or 200.0}
        rto = max(rtos[x] for x in (sides or rtos))
        tr["predicted_rto_ms"] = rto
        p = predict_stall(tr["outage_ms"] or tr["length_ms"], rto,
                          rtt_ms=tr.get("rtt_ms", 0.0), io_timeout_ms=IO_TIMEOUT_MS,
                          other_path=True)
        tr["predicted_ms"], tr["cause"] = p.stall_ms, p.cause
        failover = "-" if tr["failover_ms"] is None else f"{tr['failover_ms']:.0f} ms"
        print(f"  {tr['length_ms']:>3} ms #{tr['rep'] + 1}: outage {tr['outage_ms']:.1f} ms, "
              f"stall {tr['stall_ms']:.1f} ms, rto initiator {tr.get('rto_ms', float('nan')):.0f} "
              f"target {tr.get('target_rto_ms') or float('nan'):.0f} ms (rtt {tr.get('rtt_ms', 0):.2f}/"
              f"{tr.get('target_rtt_ms') or 0:.2f}), predicted {p.stall_ms:.0f} ms ({p.cause}), "
              f"failover {failover}, tcp {tr['tcp']}")
    (outdir / "trials.json").write_text(json.dumps(trials, indent=1))
    for length in LENGTHS_MS:
        mine = [t for t in trials if t["length_ms"] == length]
        med = lambda k: statistics.median(t[k] for t in mine)  # noqa: E731
        rto = statistics.median(t["predicted_rto_ms"] for t in mine)
        causes = sorted({t["cause"] for t in mine})
        print(f"{length} ms: outage {med('outage_ms'):.1f} ms, stall {med('stall_ms'):.0f} ms, "
              f"predicted {med('predicted_ms'):.0f} ms ({'/'.join(causes)}, rto {rto:.0f} ms) "
              f"stall/predicted {statistics.median(t['stall_ms'] / t['predicted_ms'] for t in mine):.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    typer.run(main)
