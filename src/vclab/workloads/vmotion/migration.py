"""vMotion switch-over: the VM really moves from its hypervisor's virtual switch to another's.

A VM is a host whose interfaces are access ports on its hypervisor's virtual switch (plan.py),
so a migration moves those ports: the root-namespace end of each veth leaves the source's OVS
bridge and joins the destination's with the same VLAN tag. It stays the same veth, so the VM's
namespace keeps its interfaces, MACs and addresses, as a migrated guest keeps its vNICs.

The order is vMotion's:
  pre-copy (VmotionReplay, the VM runs) -> pause: the VM's ports lose their carrier (a paused VM
  is silent) -> stop-and-copy (the rest of memory over the vMotion network), while the ports
  leave the source's switch for the destination's in one OVSDB transaction -> resume: the ports
  get their carrier back -> announce: a RARP (what ESXi sends) and a gratuitous ARP (what QEMU
  and Hyper-V send) for each vNIC, from inside the VM's namespace, so every switch on the way
  learns the MAC's new place.
Every step keeps its wall-clock time (ns), so a probe to the VM and a capture of the window line
up with it.

Pure parts (no root): `migration_problems` (the refusal, also for the experiment loader),
`moved_plan` (the lab's bookkeeping after a move), `detach_commands`/`attach_commands`,
`announce_frames`. `LiveMigration` runs it all on a built Lab.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from vclab.errors import VclabError
from vclab.lab.procs import ProcessTracker
from vclab.topology.commands import Vsctl
from vclab.topology.plan import Bridge, BuildPlan, End, Host, Veth
from vclab.topology.spec import Cluster
from vclab.workloads.agent import Agent
from vclab.workloads.base import WorkloadError
from vclab.workloads.vmotion.model import VmotionSpec, simulate

if TYPE_CHECKING:
    from vclab.fabric.mechanisms import Mechanism
    from vclab.lab.face import LabFace
    from vclab.workloads.vmotion.workload import VmotionReplay

StorageMode = Literal["shared", "shared-nothing"]
STORAGE_MODES: tuple[str, ...] = ("shared", "shared-nothing")

ETH_RARP = 0x8035
RARP_REQUEST_REVERSE = 3  # RFC 903; ESXi's announcement uses it with both MACs set to the VM's
ANNOUNCE_ROUNDS = 3  # QEMU announces 5 times 50..350 ms apart; 3 at 50 ms keeps the window short
ANNOUNCE_GAP_S = 0.05


# ---------------------------------------------------------------------------------------------
# Refusal (pure)


def migration_problems(cluster: Cluster, vm: str, to: str) -> list[str]:
    """Why `vm` cannot migrate to hypervisor `to`, in words; empty when it can.

    Both hypervisors need a common vMotion network (memory goes over it), and the destination
    must be on every network the VM uses: its uplinks trunk only its own networks' VLANs, so a
    VM on another network would resume cut off."""
    if vm not in cluster.vms:
        return [f"unknown VM {vm!r}; VMs are: {', '.join(sorted(cluster.vms)) or '(none)'}"]
    if to not in cluster.hypervisors:
        return [f"unknown hypervisor {to!r}; hypervisors are: "
                f"{', '.join(sorted(cluster.hypervisors)) or '(none)'}"]
    spec = cluster.vms[vm]
    source = spec.host
    if source == to:
        return [f"{vm} already runs on {to}"]
    out = []
    vmotion = cluster.networks_of_kind("vmotion")
    if not vmotion:
        out.append("the cluster has no vMotion network (a network of kind vmotion)")
    else:
        src_nets = set(cluster.hypervisors[source].networks)
        dst_nets = set(cluster.hypervisors[to].networks)
        if not src_nets & set(vmotion):
            out.append(f"the source {source} is not on the vMotion network "
                       f"({', '.join(vmotion)}): its memory cannot be sent")
        if not dst_nets & set(vmotion):
            out.append(f"the destination {to} is not on the vMotion network "
                       f"({', '.join(vmotion)}): it cannot receive the VM's memory")
        elif src_nets & set(vmotion) and not src_nets & dst_nets & set(vmotion):
            out.append(f"{source} and {to} share no vMotion network")
    missing = [n for n in spec.networks if n not in cluster.hypervisors[to].networks]
    if missing:
        out.append(f"the destination {to} is not on {vm}'s network{'s' if len(missing) > 1 else ''} "
                   f"{', '.join(missing)}: {vm} would resume cut off from "
                   f"{'them' if len(missing) > 1 else 'it'}")
    return out


def vmotion_network(cluster: Cluster, source: str, to: str) -> str:
    """The vMotion network both hypervisors are on (the first in file order)."""
    both = set(cluster.hypervisors[source].networks) & set(cluster.hypervisors[to].networks)
    return next(n for n in cluster.networks_of_kind("vmotion") if n in both)


def vmotion_rate_bps(cluster: Cluster, source: str, to: str) -> float:
    """Nominal rate of the vMotion path: the slower of the two hypervisors' active NICs
    (active-backup's primary, else the first NIC; a team's other NICs are standby or share)."""
    def nic_rate(host: str) -> float:
        server = cluster.hypervisors[host]
        nic = server.nics[server.team.primary] if server.team.primary else next(iter(server.nics.values()))
        return nic.rate or cluster.defaults.link.rate or float("inf")

    rate = min(nic_rate(source), nic_rate(to))
    return rate if rate != float("inf") else 1e9


def vmotion_spec(cluster: Cluster, vm: str, to: str, storage: StorageMode = "shared",
                 link_rate_bps: float | None = None) -> VmotionSpec:
    """The model of migrating `vm` to `to`: its memory, dirty rate and working set from the
    cluster file; the disk too when storage is not shared."""
    spec = cluster.vms[vm]
    if storage not in STORAGE_MODES:
        raise VclabError(f"storage mode {storage!r} is not one of {', '.join(STORAGE_MODES)}")
    return VmotionSpec(memory_bytes=spec.memory, dirty_rate_bps=spec.dirty_rate,
                       working_set_bytes=spec.working_set,
                       link_rate_bps=link_rate_bps or vmotion_rate_bps(cluster, spec.host, to),
                       disk_bytes=spec.disk if storage == "shared-nothing" else 0)


def moved_cluster(cluster: Cluster, vm: str, to: str) -> Cluster:
    vms = dict(cluster.vms)
    vms[vm] = vms[vm].model_copy(update={"host": to})
    return cluster.model_copy(update={"vms": vms})


# ---------------------------------------------------------------------------------------------
# Bookkeeping and commands (pure)


def moved_plan(plan: BuildPlan, vm: str, to_vswitch: str) -> BuildPlan:
    """The plan after `vm`'s access ports moved to virtual switch `to_vswitch` (OVS or user's
    name). Device names and MACs stay (same veths); each port gets the next free ofport there."""
    host = plan.host(vm)
    dest = plan.bridge(to_vswitch)
    if dest.kind != "vswitch":
        raise VclabError(f"{to_vswitch} is not a hypervisor's virtual switch")
    names = {i.port for i in host.interfaces}
    moving = {p.name: p for b in plan.bridges for p in b.ports if p.name in names}
    ofport = max((p.ofport for p in dest.ports), default=0)
    arrived = []
    for iface in host.interfaces:
        ofport += 1
        arrived.append(replace(moving[iface.port], bridge=dest.name, ofport=ofport))
    bridges: list[Bridge] = []
    for b in plan.bridges:
        ports = tuple(p for p in b.ports if p.name not in names)
        if b.name == dest.name:
            ports += tuple(arrived)
        bridges.append(replace(b, ports=ports) if ports != b.ports else b)
    hosts = tuple(replace(h, vswitch=dest.name, interfaces=tuple(
        replace(i, bridge=dest.name) for i in h.interfaces)) if h.name == vm else h
                  for h in plan.hosts)

    def end(e: End) -> End:
        return replace(e, node=dest.name) if e.in_root and e.ifname in names else e

    veths = tuple(Veth(v.name, end(v.a), end(v.b), v.shape) for v in plan.veths)
    return replace(plan, bridges=tuple(bridges), hosts=hosts, veths=veths)


def detach_commands(plan: BuildPlan, vm: str) -> list[Vsctl]:
    """One ovs-vsctl transaction taking every access port of `vm` off its current switch."""
    args, devices = ["--timeout=30"], []
    for iface in plan.host(vm).interfaces:
        args += ["--", "del-port", iface.bridge, iface.port]
        devices += [iface.bridge, iface.port]
    return [Vsctl(args, devices)]


def attach_commands(plan: BuildPlan, vm: str, mechanism: Mechanism | None = None) -> list[Vsctl]:
    """One ovs-vsctl transaction adding `vm`'s access ports where `plan` (already moved) puts
    them: same VLAN tag, the ofport the plan chose, and the build's external_ids."""
    args, devices = ["--timeout=30"], []
    for iface in plan.host(vm).interfaces:
        bridge = plan.bridge(iface.bridge)
        port = bridge.port(iface.port)
        extra = mechanism.port_options(bridge, port) if mechanism is not None else []
        args += ["--", "add-port", bridge.name, port.name, f"tag={port.vlans[0]}", *extra,
                 "--", "set", "interface", port.name, f"ofport_request={port.ofport}",
                 f'external_ids:vclab-link="{port.link}"', f'external_ids:vclab-peer="{port.peer}"']
        devices += [bridge.name, port.name]
    return [Vsctl(args, devices)]


def move_commands(before: BuildPlan, after: BuildPlan, vm: str,
                  mechanism: Mechanism | None = None) -> list[Vsctl]:
    """Detach and attach in one transaction, for a move with nothing to do in between."""
    detach = detach_commands(before, vm)[0]
    attach = attach_commands(after, vm, mechanism)[0]
    return [Vsctl(detach[1:] + attach[2:], detach.devices + attach.devices)]


# ---------------------------------------------------------------------------------------------
# Announcement frames (scapy)


def announce_frames(mac: str, ip: str) -> list:
    """A RARP and a gratuitous ARP from (mac, ip), both broadcast, so every switch in the VLAN
    learns where the MAC is now. The RARP carries no IP (as ESXi's); the gratuitous ARP is a
    request for the VM's own address (RFC 5227's announcement)."""
    from scapy.layers.l2 import ARP, Ether

    rarp = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff", type=ETH_RARP) / ARP(
        op=RARP_REQUEST_REVERSE, hwsrc=mac, psrc="0.0.0.0", hwdst=mac, pdst="0.0.0.0")
    garp = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00", pdst=ip)
    return [rarp, garp]


def _announcer(targets: list[tuple[str, str, str]], rounds: int, gap_s: float) -> None:
    """Inside the VM's namespace: open a raw socket per interface, say ready, and announce
    every (iface, mac, ip) each time a line arrives on stdin (scapy takes a second to import,
    so it is loaded before the switch-over, not during it)."""
    import scapy.arch  # noqa: F401  (sets conf.L2socket for this platform)
    from scapy.config import conf

    socks = [(conf.L2socket(iface=iface), [bytes(f) for f in announce_frames(mac, ip)])
             for iface, mac, ip in targets]
    print("ready", flush=True)
    while sys.stdin.readline():
        sent: list[int] = []
        for k in range(rounds):
            if k:
                time.sleep(gap_s)
            for sock, frames in socks:
                for frame in frames:
                    sock.send(frame)
            sent.append(time.time_ns())
        print(json.dumps({"event": "sent", "t": sent[0], "sent_ns": sent}), flush=True)


class Announcer:
    """The announcing process in the VM's namespace, started before the switch-over."""

    def __init__(self, node: Any, host: Host, tracker: ProcessTracker, rounds: int = ANNOUNCE_ROUNDS,
                 gap_s: float = ANNOUNCE_GAP_S) -> None:
        self.node, self.host, self.tracker = node, host, tracker
        self.rounds, self.gap_s = rounds, gap_s
        self.agent: Agent | None = None

    def start(self, timeout: float = 30.0) -> None:
        args = [sys.executable, "-m", "vclab.workloads.vmotion.migration", "announce",
                "--rounds", str(self.rounds), "--gap", str(self.gap_s)]
        for i in self.host.interfaces:
            args += ["--target", f"{i.name},{i.mac},{i.ip}"]
        self.agent = Agent(self.node, args, self.tracker, f"announce:{self.host.name}",
                           stdin=True).spawn()
        self._expect("ready", timeout)

    def _expect(self, what: str, timeout: float):
        assert self.agent is not None
        try:
            return self.agent.expect(what, timeout)
        except WorkloadError as e:
            self.stop()
            raise WorkloadError(f"announcer in {self.host.name} did not answer {what}: {e}") from None

    def announce(self, timeout: float = 10.0) -> list[int]:
        """Send every round; returns when each round left (ns)."""
        assert self.agent is not None
        self.agent.send("go")
        return self._expect("sent", timeout).fields["sent_ns"]

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop(drain_s=0)
            self.agent = None


# ---------------------------------------------------------------------------------------------
# The whole migration on a built lab


def switchover_outage(raw: dict[str, Any], off_ns: int, on_ns: int) -> dict[str, Any]:
    """The VM's outage across the switch-over from a probe's logs (Probe.collect()).

    The VM is surely off the network from the moment its ports were detached (`off_ns`) to the
    moment the attach began (`on_ns`): the outage is the gap, in each direction, that covers the
    middle of that stretch (the worse direction's), not merely the gap nearest in time, which
    on a busy fabric may be a congestion gap. Also the noise floor: the largest gap in the
    probe's stretch before the pause, where the migration's pre-copy shares the fabric."""
    from vclab.workloads.probe import metrics as probe_metrics
    from vclab.workloads.probe.workload import Probe

    ab, ba, _ = Probe.streams(raw)
    mid = (off_ns + on_ns) // 2
    out: dict[str, Any] = {"outage_ms": 0.0, "outage_error_ms": None, "start_rel_ms": None,
                           "end_rel_ms": None, "noise_floor_ms": 0.0}
    for stream in (ab, ba):
        result = probe_metrics.analyse(stream, fault_ns=off_ns)
        covering = [g for g in result.gaps if g.start_ns <= mid <= g.end_ns]
        before = [g.outage_ms for g in result.gaps if g.end_ns < off_ns]
        out["noise_floor_ms"] = max(out["noise_floor_ms"], max(before, default=0.0))
        if covering and covering[0].outage_ms > out["outage_ms"]:
            g = covering[0]
            out.update(outage_ms=g.outage_ms, outage_error_ms=g.error_ms,
                       start_rel_ms=(g.start_ns - off_ns) / 1e6, end_rel_ms=(g.end_ns - off_ns) / 1e6)
    return out


def switchover_steps(t: dict[str, int]) -> dict[str, float]:
    """Step times (ms) relative to the pause, from the switch-over's ns timestamps."""
    origin = t["pause_ns"]
    return {k.removesuffix("_ns") + "_ms": (v - origin) / 1e6 for k, v in sorted(t.items(), key=lambda kv: kv[1])}


def switch_over(lab: Any, vm: str, to: str, copy: Callable[[], None],
                hooks: list[Callable[[str, str], None]] = ()) -> dict[str, int]:
    """Move the VM's ports; while it is paused, `copy` (the stop-and-copy round), then each
    hook(vm, to). Returns the lab's timings of the move."""
    def between() -> None:
        copy()
        for hook in hooks:
            hook(vm, to)

    return lab.move_vm(vm, to, between=between)


class LiveMigration:
    """Migrate `vm` to hypervisor `to` on a built Lab: vMotion replay over the vMotion network,
    the real switch-over, and (optionally) a probe to the VM and a capture of the window.

        m = LiveMigration(lab, "web1", "esx2", outdir, probe_from="web2", capture=True)
        result = m.run()   # timings, probe outage beside the model's downtime, pcap paths
    """

    def __init__(self, lab: LabFace, vm: str, to: str, outdir: Path, *,
                 storage: StorageMode = "shared", probe_from: str | None = None,
                 probe_network: str | None = None, capture: bool = False,
                 measure_s: float = 2.0, interval_ms: float = 1.0, after_s: float = 0.5,
                 name: str | None = None, model: VmotionSpec | None = None) -> None:
        self.lab, self.vm, self.to, self.outdir = lab, vm, to, Path(outdir)
        self.storage, self.probe_from, self.capture = storage, probe_from, capture
        self.probe_network = probe_network
        self.measure_s, self.interval_ms, self.after_s = measure_s, interval_ms, after_s
        self.name = name or f"{vm}-to-{to}"
        self.model = model  # instead of the VM's memory, dirty rate and disk from the cluster
        self.source = lab.cluster.vms[vm].host if vm in lab.cluster.vms else ""
        # Called as hook(vm, to) inside the switch-over, after the stop-and-copy and before the
        # VM's ports join the destination (the locking workload hands the VM's lock over).
        self.on_switchover: list[Callable[[str, str], None]] = []
        self._replay: VmotionReplay | None = None  # made by prepare(), run by run()
        self._armed: tuple[Announcer, Any, str] | None = None  # started by prepare(), too

    def check(self) -> None:
        problems = migration_problems(self.lab.cluster, self.vm, self.to)
        if problems:
            raise VclabError(f"cannot migrate {self.vm} to {self.to}: " + "; ".join(problems))
        if self.probe_from is not None:
            net = self._probe_network()
            members = {h for h, _ in self.lab.plan.networks[net].members}
            if self.probe_from not in members or self.probe_from == self.vm:
                raise VclabError(f"{self.probe_from} cannot probe {self.vm}: it is not another "
                                 f"member of {net}")

    def _probe_network(self) -> str:
        return self.probe_network or self.lab.cluster.vms[self.vm].networks[0]

    def _make_replay(self) -> VmotionReplay:
        from vclab.workloads.vmotion.workload import VmotionReplay

        lab = self.lab
        self.outdir.mkdir(parents=True, exist_ok=True)
        net = vmotion_network(lab.cluster, self.source, self.to)
        replay = VmotionReplay(lab.node(self.source), lab.node(self.to),
                               lab.plan.host(self.to).interface(net).ip, self._nominal(),
                               lab.tracker, self.outdir, name=self.name, switchover=True)
        replay.check()
        return replay

    def _nominal(self) -> VmotionSpec:
        return self.model or vmotion_spec(self.lab.cluster, self.vm, self.to, self.storage)

    def prepare(self) -> None:
        """What a scheduled migration does before the run's clock starts, so that at its time
        it only copies. Done at that time, the path's rate measurement met the experiment's
        faults (87 Mbit/s of 500 once, an uplink cut in the middle) and scapy's first import
        (~5 s) delayed the first repetition's copy: the copy began 4-9 s after the schedule.
        The announcer and the capture wait here too: started at that time, they took 0.6 s each
        (a Python process in the VM, the sniffer's sockets) and the copy began 1.9 s late,
        after the uplink cut it was scheduled to meet; so does the sender, connected."""
        self.check()
        if self.capture:
            import scapy.all  # noqa: F401  (slow the first time; the capture needs it)
        self._replay = self._make_replay()
        self._replay.measure_rate(seconds=self.measure_s)
        self._replay.spawn()
        self._armed = self._arm()

    def _arm(self) -> tuple[Announcer, Any, str]:
        """The announcer (waiting for its cue) and the capture of the announcements (or why
        there is none), started."""
        from vclab.workloads.capture import Capture

        lab = self.lab
        vm_host = lab.plan.host(self.vm)
        announcer = Announcer(lab.node(self.vm), vm_host, lab.tracker)
        announcer.start()
        capture, capture_error = None, ""
        if self.capture:
            # Where the announcement must be seen: the VM's own ports (the same devices
            # before and after), both hypervisors' uplinks and the switch ports facing them.
            # Each end of a cable is captured because a port shows what arrives on it: the
            # userspace datapath's own transmissions bypass the kernel's capture taps.
            ports = [i.port for i in vm_host.interfaces]
            for hv in (self.source, self.to):
                ports += [p.name for p in lab.plan.bridge(hv).ports if p.role == "uplink"]
                ports += [p.name for b in lab.plan.physical for p in b.ports
                          if p.role == "downlink" and p.peer == hv]
            capture = Capture(ports, self.outdir / f"{self.name}-capture", tracker=lab.tracker)
            try:
                capture.check()
                capture.start()
            except WorkloadError as e:
                # The capture is evidence, not the measurement: migrate without it.
                capture_error = str(e)
                capture.stop()
                capture = None
        return announcer, capture, capture_error

    def close(self) -> None:
        """End what prepare() started when run() never came (the repetition ended first)."""
        armed, self._armed = self._armed, None
        replay, self._replay = self._replay, None
        if replay is not None:
            replay.stop()
        if armed is not None:
            announcer, capture, _ = armed
            if capture is not None:
                capture.stop()
            announcer.stop()

    def run(self) -> dict[str, Any]:
        from vclab.workloads.capture import Capture
        from vclab.workloads.probe.workload import Endpoint, Probe

        self.check()
        lab, cluster, tracker = self.lab, self.lab.cluster, self.lab.tracker
        nominal = self._nominal()
        replay, self._replay = self._replay or self._make_replay(), None
        vm_host = lab.plan.host(self.vm)
        prepared = self._armed is not None
        armed, self._armed = self._armed, None
        announcer = capture = probe = None
        capture_error = ""
        t: dict[str, int] = {}
        try:
            if replay.measured_rate_bps is None:  # not prepared: measure now
                replay.measure_rate(seconds=self.measure_s)
            announcer, capture, capture_error = armed or self._arm()
            if self.probe_from is not None:
                pnet = self._probe_network()
                probe = Probe(Endpoint(lab.node(self.probe_from),
                                       lab.plan.host(self.probe_from).interface(pnet).ip),
                              Endpoint(lab.node(self.vm), vm_host.interface(pnet).ip), tracker,
                              interval_ms=self.interval_ms, workdir=self.outdir / f"{self.name}-probe")
                probe.check()
                probe.start()
                if not prepared:
                    time.sleep(0.5)  # a stretch without fault for the noise floor
                # Prepared, the copy starts at its scheduled time: the pre-copy's own stretch
                # (seconds before the pause) gives the probe's noise floor.
            lab.vm_will_move(self.vm, self.to)  # a controller builds the destination's rules
            replay.start()
            t["pause_ns"] = replay.pause()

            def stop_and_copy() -> None:
                t["copied_ns"] = replay.resume()

            t.update(switch_over(lab, self.vm, self.to, stop_and_copy, self.on_switchover))
            sent = announcer.announce()
            t["announced_ns"] = sent[0]
            if not replay.wait(timeout=60):
                raise WorkloadError("the vMotion sender did not finish after the switch-over")
            time.sleep(self.after_s)
        finally:
            if probe is not None:
                probe.stop()
            if capture is not None:
                capture.stop()
            if announcer is not None:
                announcer.stop()
            replay.stop()
        vm_result = replay.parse(replay.collect())
        result: dict[str, Any] = {
            "vm": self.vm, "from": self.source, "to": self.to, "storage": self.storage,
            "nominal_rate_bps": nominal.link_rate_bps,
            "model_nominal": _model_summary(simulate(nominal)),
            "vmotion": vm_result,
            "switchover_ns": dict(t),
            "steps_ms": switchover_steps(t),
            # How long the VM was off the network by the switch-over's own clock: from the
            # start of the detach to the first announcement (an upper bound: the detach takes
            # effect somewhere inside its transaction).
            "switchover_ms": (t["announced_ns"] - t["detach_start_ns"]) / 1e6,
            "announced_rounds_ns": sent,
        }
        if probe is not None:
            result["probe"] = switchover_outage(probe.collect(), t["detached_ns"], t["attach_start_ns"])
            result["outage_ms"] = result["probe"]["outage_ms"]
            probe.cleanup()
        if capture is not None:
            result["capture"] = Capture.parse(capture.collect())
        elif capture_error:
            result["capture_error"] = capture_error
        (self.outdir / f"{self.name}.json").write_text(json.dumps(result, indent=1, default=str))
        return result


def _model_summary(m) -> dict[str, Any]:
    return {"total_s": m.total_s, "downtime_s": m.downtime_s, "precopy_rounds": m.precopy_rounds,
            "bytes_sent": m.bytes_sent}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vclab.workloads.vmotion.migration")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("announce", help="announce the VM's MACs on each stdin line")
    a.add_argument("--target", action="append", required=True, help="IFACE,MAC,IP")
    a.add_argument("--rounds", type=int, default=ANNOUNCE_ROUNDS)
    a.add_argument("--gap", type=float, default=ANNOUNCE_GAP_S)
    args = ap.parse_args(argv)
    targets = [tuple(t.split(",")) for t in args.target]
    _announcer(targets, args.rounds, args.gap)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
