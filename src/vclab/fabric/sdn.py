"""The `sdn` mechanism: physical switches as OpenFlow 1.3 bridges run by vclab's own controller.

The build writes the controller's FabricSpec from the plan (`fabric_spec`, pure), starts the
controller on 127.0.0.1 before the bridges exist (so they connect at once), creates the
physical bridges with `fail_mode=secure` (nothing forwards, so nothing loops, until the
controller's rules are in), runs BFD on every inter-switch cable so a silent cable clears the
port's LIVE flag that the fast-failover buckets watch, and applies the per-network egress
classes (fabric/qos.py) on every physical switch port and, as vSphere's NIOC does on a
distributed switch, on every server's uplinks: a saturating flow on one network cannot starve
another below its share where the contention really is, at the hypervisor's own NIC (network
kind is a fabric-independent idea, but only this mechanism applies it: rstp/stp runs are the
no-QoS baseline the shipped experiments compare against). The fabric has converged when every
switch holds all the groups and flows the controller computes for it and every BFD session is
up. The controller is a process of the lab (tracked by PID), and the runner's controller faults
kill and restart it: the switches keep forwarding on their rules meanwhile.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vclab.errors import VclabError
from vclab.fabric.mechanisms import Mechanism, BuiltLab
from vclab.lab.agent import THIS_MACHINE, Agent
from vclab.lab.procs import Role
from vclab.topology.commands import Ofctl, Tc
from vclab.topology.plan import Bond, BuildPlan, Bridge, Port

CONTROLLER_ID = "@vcctl"


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _uplinks_in_order(vswitch: Bridge) -> list[Port]:
    """A server's NICs, the one its team prefers first (active-backup's primary)."""
    ups = [p for p in vswitch.ports if p.role == "uplink"]
    primary = next((b.primary for b in vswitch.bonds if b.primary), None)
    return sorted(ups, key=lambda p: (p.name != primary, p.ofport))


def vswitch_uplinks(plan: BuildPlan) -> list[tuple[str, tuple[int, ...], float | None]]:
    """(device, VLANs it carries, cable rate in bit/s) of every server's NIC on its own virtual
    switch: where NIOC's shares go (qos.uplink_qos_commands). Pure."""
    return [(p.name, p.vlans, p.shape.rate if p.shape else None)
            for b in plan.vswitches for p in b.ports if p.role == "uplink"]


def fabric_spec(plan: BuildPlan, cluster, datapath: str = "netdev"):
    """The controller's view of a planned cluster (controller.model.FabricSpec). Pure."""
    from vclab.fabric.controller import model

    physical = {b.name: b for b in plan.physical}
    peer_of = plan.cable_peers()
    port_of = {p.name: p for b in plan.physical for p in b.ports}
    switches = tuple(model.Switch(b.friendly, int(b.dpid, 16)) for b in plan.physical)
    links, seen = [], set()
    for v in plan.veths:
        if v.a.node in physical and v.b.node in physical and v.name not in seen:
            seen.add(v.name)
            a, b = port_of[v.a.ifname], port_of[v.b.ifname]
            links.append(model.Link(v.name, physical[a.bridge].friendly, a.ofport,
                                    physical[b.bridge].friendly, b.ofport, a.name, b.name))
    attachments = []
    for host in plan.hosts:
        if host.role == "vm" or host.vswitch is None:
            continue
        vswitch = plan.bridge(host.vswitch)
        behind = [h for h in plan.hosts if h.vswitch == host.vswitch]  # itself and its VMs
        uplinks = [(up, port_of[peer_of[up.name]]) for up in _uplinks_in_order(vswitch)]
        # A storage array's portals carry one VLAN each and are not a team: one attachment
        # per portal, or the fabric would deliver a VLAN to a portal that does not carry it.
        groups = ([[u] for u in uplinks] if host.role == "storage" else [uplinks])
        for group in groups:
            vlans = tuple(sorted({v for up, _ in group for v in up.vlans}))
            macs = {vlan: tuple(i.mac for h in behind for i in h.interfaces if i.vlan == vlan)
                    for vlan in vlans}
            name = host.name if len(groups) == 1 else group[0][0].link
            attachments.append(model.Attachment(
                name, tuple(model.Uplink(physical[d.bridge].friendly, d.ofport, d.name)
                            for _, d in group),
                vlans, {v: m for v, m in macs.items() if m}))
    networks, taken = [], set()
    for net in plan.networks.values():
        dscp = model.default_dscp(net.kind, taken)
        taken.add(dscp)
        spec_net = cluster.networks[net.name] if cluster is not None else None
        share = (spec_net.share or 0.0) if spec_net is not None else 0.0
        cap = spec_net.cap / 1e6 if spec_net is not None and spec_net.cap else None
        networks.append(model.Network(net.name, net.vlan, net.kind, float(share), dscp, cap))
    rates = [v.shape.rate for v in plan.veths if v.shape is not None and v.shape.rate]
    options = model.Options(use_set_queue=datapath == "system",
                            link_mbps=min(rates) / 1e6 if rates else 1000.0)
    spec = model.FabricSpec(switches, tuple(links), tuple(attachments), tuple(networks), options)
    model.validate(spec)
    return spec


@dataclass
class Sdn(Mechanism):
    """vclab's OpenFlow controller: every path pre-installed with fast-failover groups."""

    # BFD min_tx/min_rx on inter-switch cables: a silent one is seen in 3x this. 10 ms false-
    # alarms on a loaded 2-core machine (ovs-vswitchd stalls of 0.1-1 s while it installs
    # hundreds of rules or reconfigures); 50 ms still finds a silent cable in ~150 ms.
    bfd_ms: int = 50
    # BFD on server NICs too (both ends are OVS: the server's vswitch and the switch port), so
    # a silent NIC is seen like a silent inter-switch cable: the team moves off it and the
    # groups stop delivering through it (like vSphere's beacon probing, in ~150 ms). Off by
    # default: 28 sessions at 50 ms on the default cluster false-alarm on a loaded 2-core host
    # (every port flapped at load 4), and each false alarm is an outage of its own.
    bfd_nics: bool = False
    timeout: float = 30.0
    bfd_steady: float = 1.0  # seconds without a BFD flap before the fabric counts as settled
    port: int = 0  # the controller's OpenFlow port on 127.0.0.1; chosen in prepare()
    datapath: str = "netdev"
    name = "sdn"
    spec: object = field(default=None, repr=False)
    pid: int = 0
    _started_pid: int = field(default=0, repr=False)  # the controller seen handling signals
    _controller: Agent | None = field(default=None, repr=False)
    log: Path | None = None
    _workdir: Path | None = field(default=None, repr=False)
    _qos_ports: list[str] = field(default_factory=list, repr=False)
    _expected: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    _flaps: tuple[int, float] = (-1, 0.0)  # (total BFD flaps seen, when that total changed)
    _generation: int = 0  # of fabric.json, numbered by each rewrite

    def check(self, plan: BuildPlan) -> None:
        lags = plan.lags()
        if lags:
            raise VclabError(
                f"mechanism 'sdn' cannot use the inter-switch LAG {', '.join(lags)}: OpenFlow "
                "rules cannot output to a bond (only OVS's NORMAL action reaches one); leave the "
                "cables without `lag`, the controller protects each with a fast-failover group")
        lacp = [b.link for br in plan.physical for b in br.bonds]
        if lacp:
            raise VclabError(
                f"mechanism 'sdn' cannot serve the LACP teams {', '.join(lacp)}: a LACP bond on "
                "the switch forwards by OVS's own learning, not by the controller's rules; use "
                "team mode active-backup or balance-slb with sdn")

    # ---- what the bridges are created with ----
    def bridge_options(self, bridge: Bridge) -> list[str]:
        if bridge.kind != "physical":
            return []
        return ["protocols=OpenFlow13", "fail_mode=secure", "other_config:disable-in-band=true",
                f"controller={CONTROLLER_ID}{bridge.name}"]

    def transaction(self, bridge: Bridge) -> list[str]:
        if bridge.kind != "physical":
            return []
        # max_backoff 1 s: a restarted controller is back within a second, not OVS's 8.
        return ["--", f"--id={CONTROLLER_ID}{bridge.name}", "create", "controller",
                f'target="tcp:127.0.0.1:{self.port}"', "connection_mode=out-of-band",
                "max_backoff=1000"]

    def interface_options(self, bridge: Bridge, port: Port) -> list[str]:
        if port.role == "isl" or (self.bfd_nics and port.role in ("uplink", "downlink")):
            return ["bfd:enable=true", f"bfd:min_tx={self.bfd_ms}", f"bfd:min_rx={self.bfd_ms}"]
        return []

    def port_options(self, bridge: Bridge, port: Port | Bond) -> list[str]:
        return []

    # ---- the controller process ----
    def prepare(self, lab: BuiltLab) -> None:
        import importlib.util

        if importlib.util.find_spec("os_ken") is None:
            raise VclabError("mechanism 'sdn' needs os-ken (pip install os-ken)")
        self.datapath = getattr(lab, "datapath", "") or "netdev"
        self.port = free_port()
        self.spec = fabric_spec(lab.plan, getattr(lab, "cluster", None), self.datapath)
        from vclab.fabric.controller import core

        for sw in self.spec.switches:
            msgs = core.switch_messages(self.spec, sw.name, core.flood_tree(self.spec))
            keys = {core.key(m) for m in msgs}
            self._expected[sw.name] = (sum(k[0] == "group" for k in keys),
                                       sum(k[0] == "flow" for k in keys))
        self._workdir = Path(lab.workdir)
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._write_fabric()
        self.log = self._workdir / "controller.log"
        self._start_controller(lab)

    def _start_controller(self, lab: BuiltLab) -> None:
        assert self._workdir is not None and self.log is not None
        # Its stderr file is appended to: a restarted controller's tail follows the killed one's.
        self._controller = Agent(
            THIS_MACHINE, [sys.executable, "-m", "vclab.fabric.controller", "--fabric",
                           str(self._workdir / "fabric.json"), "--port", str(self.port),
                           "--log", str(self.log)], lab.tracker,
            f"vclab controller :{self.port}", stderr=self._workdir / "controller.stderr",
            stdout=False, append=True, role=Role.CONTROLLER).spawn()
        self.pid = self._controller.pid

    def controller_alive(self, lab: BuiltLab) -> bool:
        # It may end behind its Agent's back: a host-crash fault kills by PID, a teardown
        # ends it through the tracker.
        return (self._controller is not None and self._controller.running()
                and lab.tracker.entry(self.pid) is not None)

    def action(self, lab: BuiltLab, what: str) -> None:
        if what == "kill":
            if self._controller is not None:
                self._controller.stop(drain_s=0)
        elif what == "restart":
            if self._controller is not None:
                self._controller.stop(drain_s=0)
            self._start_controller(lab)
        else:
            raise VclabError(f"controller action is kill or restart, not {what!r}")

    def _signal(self, lab: BuiltLab, sig: int) -> None:
        """Send the running controller `sig` once it can take it. A controller (re)started a
        moment ago has no handler for SIGHUP or SIGUSR1 yet, and their default action ends it:
        a migration during a controller restart killed the new controller (chaos test, seed
        899062). Its 'started' event is written after its handlers are set and after it read
        the fabric file, so wait for that (a restart takes about a second), then signal."""
        import os

        if not self.controller_alive(lab):
            return
        deadline = time.monotonic() + 10.0
        while self._started_pid != self.pid:
            if any(e.get("kind") == "started" and e.get("pid") == self.pid for e in self.events()):
                self._started_pid = self.pid
                break
            if time.monotonic() > deadline or not self.controller_alive(lab):
                return  # it never came up: the run's checks report the dead controller
            time.sleep(0.01)
        os.kill(self.pid, sig)

    def vm_will_move(self, lab: BuiltLab, plan: BuildPlan, cluster=None) -> None:
        """A vMotion's pre-copy starts: `plan` is the lab once the VM is on its destination.
        The controller builds that fabric now (fabric.next.json, SIGUSR1) and sends nothing,
        so the switch-over's reload is a comparison and a few flow mods."""
        import signal as _signal

        assert self._workdir is not None
        from vclab.fabric.controller import model

        doc = model.to_dict(fabric_spec(plan, cluster, self.datapath))
        doc["generation"] = self._generation + 1
        tmp = self._workdir / "fabric.next.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(self._workdir / "fabric.next.json")
        self._signal(lab, _signal.SIGUSR1)

    def vm_moving(self, lab: BuiltLab, plan: BuildPlan, cluster=None) -> None:
        """The VM is paused and its ports are leaving: `plan` is where they will be. The
        controller places MACs from the spec, so the spec is written again from that plan
        (next generation) and the controller reloads it (SIGHUP) while the memory copy runs:
        it sends only the moved MACs' flows, pointing at the destination's uplinks."""
        import signal as _signal

        assert self._workdir is not None
        self.spec = fabric_spec(plan, cluster, self.datapath)
        self._write_fabric()
        self._signal(lab, _signal.SIGHUP)  # a killed controller reads the new file on restart

    def vm_moved(self, lab: BuiltLab) -> None:
        """Before the VM resumes: wait until every switch holds the generation vm_moving
        wrote (status.json, barrier-confirmed), so the fabric delivers to the destination the
        moment the VM's first frame or its RARP leaves, with no controller on the data path."""
        if not self.controller_alive(lab):
            return
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            status = self.status()
            if status.get("pid") == self.pid and status.get("generation", -1) >= self._generation:
                return
            time.sleep(0.002)
        raise VclabError(f"the controller did not install generation {self._generation} of the "
                         f"fabric after the VM moved (see {self.log} and {self._status_path()})")

    def status(self) -> dict:
        """The controller's status.json ({} before it wrote one, or mid-replace)."""
        try:
            return json.loads(self._status_path().read_text())
        except (OSError, ValueError):
            return {}

    def events(self) -> list[dict]:
        """Every action of every controller process of this lab (events.jsonl), in order."""
        path = self._workdir / "events.jsonl" if self._workdir else None
        if path is None or not path.exists():
            return []
        out = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a kill
        return out

    def timeline_events(self) -> list[dict]:
        return controller_timeline(self.events())

    def _status_path(self) -> Path:
        assert self._workdir is not None
        return self._workdir / "status.json"

    def _write_fabric(self) -> None:
        from vclab.fabric.controller import model

        assert self._workdir is not None
        self._generation += 1
        doc = model.to_dict(self.spec)
        doc["generation"] = self._generation
        tmp = self._workdir / "fabric.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(self._workdir / "fabric.json")  # the controller never reads half a file

    # ---- after the build ----
    def qos_commands(self, lab: BuiltLab) -> list[list[str]]:
        """Every HTB tree this mechanism puts on the lab: per network on each physical switch
        port (filled by the controller's DSCP marks, or set_queue on the kernel datapath) and
        NIOC's per network shares on each server uplink (filled by VLAN)."""
        from vclab.fabric import qos

        wired = getattr(lab, "ports", "system") == "afxdp"  # topology/wire.py
        subnets = ({n.vlan: str(n.subnet) for n in lab.plan.networks.values()} if wired
                   else None)
        return (qos.fabric_qos_commands(self.spec)
                + qos.uplink_qos_commands(vswitch_uplinks(lab.plan), self.spec.networks,
                                          kernel_datapath=self.datapath == "system",
                                          subnets=subnets))

    def start(self, lab: BuiltLab) -> None:
        self.apply_qos(lab)

    def apply_qos(self, lab: BuiltLab) -> None:
        # After the cables' own shaping, which each tree replaces at the same rate. One tc
        # process for all: hundreds of commands on a bigger cluster.
        cmds = self.qos_commands(lab)
        if cmds:
            lab.tc(cmds)
        self._qos_ports = sorted({c.dev for c in cmds})

    def clear_qos(self, lab: BuiltLab, check: bool = False) -> None:
        """Put the plain cable shaping back where apply_qos put a tree (a port without a
        rate gets no qdisc of its own again)."""
        from vclab.topology.render import shape_commands

        shapes = {e.ifname: v.shape for v in lab.plan.veths for e in (v.a, v.b) if e.in_root}
        cmds: list[Tc] = []
        for dev in self._qos_ports:
            shape = shapes.get(dev)
            cmds += (shape_commands(dev, shape) if shape is not None and shape.rate else
                     [Tc("qdisc", "del", dev, "root")])
        if cmds:
            lab.tc(cmds, check=check)
        self._qos_ports = []

    def stop(self, lab: BuiltLab) -> None:
        if self._controller is not None:
            self._controller.stop(drain_s=0)
        # The trees are plain tc on the lab's veths and leave with them; putting the cable
        # shaping back costs one tc process and leaves the ports as the build made them.
        self.clear_qos(lab)

    def converged(self, lab: BuiltLab) -> tuple[bool, str]:
        if not self.controller_alive(lab):
            tail = self.log.read_text()[-2000:] if self.log and self.log.exists() else ""
            stderr = self._workdir / "controller.stderr" if self._workdir else None
            if stderr is not None and stderr.exists():
                tail += stderr.read_text()[-2000:]
            raise VclabError(f"the vclab controller exited during the build:\n{tail}")
        moving = []
        flaps = 0
        # The running controller's own word (status.json) that each switch holds what it sent:
        # rules a killed controller left behind are still in the switches (fail_mode=secure),
        # and OVSDB's is_connected is refreshed only every few seconds.
        status = self.status()
        ours = status.get("pid") == self.pid
        for bridge in lab.plan.physical:
            switch = status.get("switches", {}).get(bridge.friendly, {}) if ours else {}
            if not switch.get("in_sync"):
                moving.append(f"{bridge.friendly}: controller has not installed its rules")
            groups, flows = self._expected[bridge.friendly]
            of13 = ("-O", "OpenFlow13")
            have_g = count_lines(lab.sh(Ofctl("dump-groups", bridge.name, options=of13),
                                        check=False), "group_id=")
            have_f = count_lines(lab.sh(Ofctl("dump-flows", bridge.name, options=of13),
                                        check=False), "cookie=")
            if have_g < groups or have_f < flows:
                moving.append(f"{bridge.friendly}: {have_g}/{groups} groups, {have_f}/{flows} flows")
        # Both ends of a cable run BFD: a server's team and its single-NIC ports stay off a
        # NIC until the vswitch end's session is up too, not only the switch end's.
        sessions = bfd_sessions(lab.sh(["ovs-vsctl", "--format=json", "--columns=name,bfd_status",
                                        "list", "interface"], check=False))
        for bridge in lab.plan.bridges:
            for port in bridge.ports:
                if self.interface_options(bridge, port):
                    status = sessions.get(port.name, {})
                    flaps += int(status.get("flap_count") or 0)
                    if status.get("state") != "up":
                        moving.append(f"{bridge.friendly}:{port.name} BFD {status.get('state', 'off')}")
        # A session that came up and went down again is a fabric still shaking (or a host too
        # loaded for this BFD interval): the controller would be moving the flood tree.
        now = time.monotonic()
        if flaps != self._flaps[0]:
            self._flaps = (flaps, now)
        if not moving and now - self._flaps[1] < self.bfd_steady:
            moving.append(f"BFD steady for {now - self._flaps[1]:.1f} s of {self.bfd_steady:g}")
        return not moving, ", ".join(moving)


def bfd_sessions(listing: str) -> dict[str, dict[str, str]]:
    """{interface: its bfd_status map} from `ovs-vsctl --format=json --columns=name,bfd_status
    list interface`: one process for every session, where a `get` per port cost ~10 ms each."""
    try:
        data = json.loads(listing)["data"]
    except (ValueError, KeyError, TypeError):
        return {}
    return {name: dict(status[1]) for name, status in data if isinstance(status, list)}


def count_lines(text: str, marker: str) -> int:
    return sum(marker in line for line in text.splitlines())


# events.jsonl kind -> the repetition event kind (a row of the report's timeline)
CONTROLLER_KINDS = {"port": "controller_port", "sent": "controller_sent",
                    "prepared": "controller_prepared",
                    "in_sync": "controller_in_sync", "reloaded": "controller_reloaded",
                    "connected": "controller_connected", "disconnected": "controller_disconnected",
                    "started": "controller_started", "reload_failed": "controller_reload_failed"}


def controller_timeline(events: list[dict]) -> list[dict]:
    """The controller's events.jsonl lines as repetition events: {t_ns, kind, detail}. Pure."""
    out = []
    for e in events:
        kind = CONTROLLER_KINDS.get(e.get("kind", ""))
        if kind is None or not isinstance(e.get("t_ns"), int):
            continue
        detail = {k: v for k, v in e.items() if k not in ("t_ns", "kind")}
        out.append({"t_ns": e["t_ns"], "kind": kind, "detail": detail})
    return out
