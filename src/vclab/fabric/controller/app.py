"""The os-ken shell around core.py: one short handler per OpenFlow event, one place that sends.

Every decision is made in core.py from (FabricSpec, ports known down). This module only keeps
that state, learns it from the switches, and sends what `core.changes` says differs. Normal
forwarding needs no packet-in: the only frames that come to us are our own LLDP probes, which
check the cabling against the spec.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from os_ken import cfg
from os_ken.base import app_manager
from os_ken.controller import event, ofp_event
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, HANDSHAKE_DISPATCHER,
                                       MAIN_DISPATCHER, set_ev_cls)
from os_ken.lib import hub
from os_ken.lib.packet import ethernet, lldp, packet
from os_ken.ofproto import ofproto_v1_3

from vclab.fabric.controller import core, model, trace

# os-ken builds apps without arguments: the fabric file comes through its config object, as
# the listen address does (__main__ passes --vclab-fabric).
cfg.CONF.register_cli_opts([cfg.StrOpt("vclab-fabric", default="", help="fabric JSON")])

LLDP_MAC = "01:80:c2:00:00:0e"

# Refusals we provoke on purpose when we cannot know what a switch holds (core.changes).
_EXPECTED_ERRORS = {
    (ofproto_v1_3.OFPET_GROUP_MOD_FAILED, ofproto_v1_3.OFPGMFC_GROUP_EXISTS),
    (ofproto_v1_3.OFPET_GROUP_MOD_FAILED, ofproto_v1_3.OFPGMFC_UNKNOWN_GROUP),
    (ofproto_v1_3.OFPET_METER_MOD_FAILED, ofproto_v1_3.OFPMMFC_METER_EXISTS),
    (ofproto_v1_3.OFPET_METER_MOD_FAILED, ofproto_v1_3.OFPMMFC_UNKNOWN_METER),
}


def port_live(port: Any) -> bool:
    """OVS clears LIVE when carrier is lost and also when BFD says the link is down."""
    of = ofproto_v1_3
    return bool(port.state & of.OFPPS_LIVE) and not port.state & of.OFPPS_LINK_DOWN \
        and not port.config & of.OFPPC_PORT_DOWN


def port_carrier(port: Any) -> bool:
    """The cable has carrier (whatever BFD says)."""
    of = ofproto_v1_3
    return not port.state & of.OFPPS_LINK_DOWN and not port.config & of.OFPPC_PORT_DOWN


def lldp_frame(dpid: int, port: int) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=LLDP_MAC, src="02:7c:1a:b0:00:00",
                                       ethertype=core.ETH_LLDP))
    pkt.add_protocol(lldp.lldp([
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED,
                       chassis_id=f"dpid:{dpid:016x}".encode()),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT, port_id=str(port).encode()),
        lldp.TTL(ttl=120),
        lldp.End(),
    ]))
    pkt.serialize()
    return bytes(pkt.data)


def parse_lldp(data: bytes) -> tuple[int, int] | None:
    """(dpid, port) of the switch that sent one of our probes, or None."""
    try:
        probe = packet.Packet(data).get_protocol(lldp.lldp)
        chassis, port = probe.tlvs[0].chassis_id.decode(), probe.tlvs[1].port_id.decode()
        if not chassis.startswith("dpid:"):
            return None
        return int(chassis[5:], 16), int(port)
    except (AttributeError, IndexError, ValueError, TypeError):
        return None


# How long a repaired inter-switch cable is trusted on carrier alone (for the flood tree: ARP
# and a moved VM's RARP cross it at once, as they do under RSTP) while its BFD session comes
# up (OVS sends once a second until then: up to ~2 s). Unicast needs no trust: core._ff sends
# a copy across such a cable. A session still down after this is a cable that passes carrier
# but not frames: BFD's word counts again.
TRUST_CARRIER_S = 3.0


class EventConverge(event.EventBase):
    """Converge once the events queued before this one are handled (see _converge_soon)."""


class EventTrustCheck(event.EventBase):
    """Time to stop trusting the carrier of cables whose BFD never came up."""


class EventPrepare(event.EventBase):
    """SIGUSR1: a VM will move; fabric.next.json is the fabric once it has."""


class EventReload(event.EventBase):
    """SIGHUP, turned into an event so the reload runs in the app's own loop, never beside a
    handler that is halfway through the same state."""


def read_fabric(path: str) -> tuple[model.FabricSpec, int]:
    """The spec and its generation (the build numbers each rewrite; 0 when absent)."""
    text = Path(path).read_text()
    return model.loads(text, path), int(json.loads(text).get("generation", 0))


class Status:
    """The controller's structured word to vclab, next to the fabric file: `status.json`
    (replaced whole on every change: state, generation, per-switch sync, counts) and
    `events.jsonl` (one line per action, wall-clock ns), so nothing needs to scrape the log."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "status.json"
        self.events = directory / "events.jsonl"
        self.doc: dict[str, Any] = {"pid": os.getpid(), "state": "starting", "generation": -1,
                                    "loaded_generation": -1, "switches": {},
                                    "counts": {"port_changes": 0, "converges": 0,
                                               "messages": 0, "reloads": 0, "built": 0}}

    def event(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"t_ns": time.time_ns(), "kind": kind, "pid": os.getpid(), **fields})
        try:
            with open(self.events, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass  # the status is for vclab's records; forwarding must not depend on it

    def publish(self) -> None:
        self.doc["updated_ns"] = time.time_ns()
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.doc, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError:
            pass


class FabricController(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, fabric_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fabric_file = fabric_file if fabric_file is not None else self.CONF.vclab_fabric
        self.logger = logging.getLogger("vclab.controller")
        self.spec, self.generation = read_fabric(self.fabric_file)
        self.compiler = core.Compiler()
        self.datapaths: dict[str, Any] = {}
        # {switch: {key: (message, content)}}; None: the switch's state is unknown
        self.installed: dict[str, dict | None] = {}
        self.down: set[tuple[str, int]] = set()
        self.carrier: dict[tuple[str, int], bool] = {}
        # fabric ports with carrier back and BFD not up yet -> until when we trust carrier
        self.trusted: dict[tuple[str, int], float] = {}
        self.tree: frozenset | None = None  # flood tree the connected switches hold
        self.barriers: set[tuple[str, int]] = set()  # tree step in flight: wait for these
        self.syncs: dict[tuple[str, int], int] = {}  # barrier -> generation it confirms
        self._converge_queued = False
        self.status = Status(Path(self.fabric_file).resolve().parent)
        self.status.doc["loaded_generation"] = self.generation
        self.status.event("started", generation=self.generation)
        gaps = trace.unprotected(self.spec, core.fabric_messages(self.spec))
        for gap in gaps:
            self.logger.warning("not protected in the datapath: %s", gap)
        self.logger.info("fabric %s: %d switches, %d cables, %d servers; %s",
                         self.fabric_file, len(self.spec.switches), len(self.spec.links),
                         len(self.spec.attachments),
                         "every single cable/NIC failure is covered" if not gaps
                         else f"{len(gaps)} cases not covered")

    # ------------------------------------------------------------ events

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        switch = self.spec.by_dpid(dp.id)
        if switch is None:
            self.logger.warning("dpid %016x is not in the fabric spec: ignored", dp.id)
            return
        self.logger.info("switch %s (dpid %016x) connected", switch.name, dp.id)
        self.status.event("connected", switch=switch.name)
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_description(self, ev: Any) -> None:
        dp = ev.msg.datapath
        switch = self.spec.by_dpid(dp.id)
        if switch is None:
            return
        ports = {p.port_no: p for p in ev.msg.body}
        self._check_port_names(switch.name, ports)
        for port_no in self._spec_ports(switch.name):
            p = ports.get(port_no)
            self._set_live(switch.name, port_no, p is not None and port_live(p))
            self.carrier[(switch.name, port_no)] = p is not None and port_carrier(p)
        self.datapaths[switch.name] = dp
        self.installed[switch.name] = None  # reconnect or restart: overwrite, never wipe
        self.converge()
        self._send_lldp(list(self.datapaths))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status(self, ev: Any) -> None:
        dp, port = ev.msg.datapath, ev.msg.desc
        switch = self.spec.by_dpid(dp.id)
        if switch is None or port.port_no not in self._spec_ports(switch.name):
            return
        live, carrier = port_live(port), port_carrier(port)
        where = (switch.name, port.port_no)
        was_carrier = self.carrier.get(where, live)
        self.carrier[where] = carrier
        trust = self._trust(where, live, carrier, was_carrier)
        changed = self._set_live(switch.name, port.port_no, live)
        if changed or trust:
            state = "up" if live else ("carrier up, BFD not yet: trusted" if trust and carrier
                                       else "down")
            self.logger.info("port %s:%d (%s) %s", switch.name, port.port_no,
                             port.name.decode(errors="replace"), state)
            self.status.doc["counts"]["port_changes"] += 1
            self.status.event("port", switch=switch.name, port=port.port_no,
                              name=port.name.decode(errors="replace"), live=live,
                              carrier=carrier, trusted=where in self.trusted)
            self._converge_soon()
            if live and port.port_no in self.spec.fabric_ports(switch.name):
                self._send_lldp([switch.name], port.port_no)

    def _converge_soon(self) -> None:
        """Converge now, or, when more events already wait in the queue (a whole switch's
        ports change within milliseconds), once after them: one computation and one batch
        per switch for the lot, instead of one per port."""
        if self._converge_queued:
            return
        # Never block on our own queue from inside its loop: a full queue converges now.
        if not self.events.empty() and self._events_sem.acquire(blocking=False):
            self._converge_queued = True
            self.events.put((EventConverge(), None))
        else:
            self.converge()

    @set_ev_cls(EventConverge)
    def converge_requested(self, ev: EventConverge) -> None:
        self._converge_queued = False
        self.converge()

    @set_ev_cls(EventTrustCheck)
    def trust_check(self, ev: EventTrustCheck) -> None:
        now = time.monotonic()
        expired = [where for where, until in self.trusted.items() if until <= now]
        for where in expired:
            del self.trusted[where]
            self.logger.info("port %s:%d: BFD not up after %.0f s, carrier no longer trusted",
                             *where, TRUST_CARRIER_S)
            self.status.event("port", switch=where[0], port=where[1], live=False,
                              carrier=self.carrier.get(where, False), trusted=False)
        if expired:
            self.converge()

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def switch_gone(self, ev: Any) -> None:
        switch = self.spec.by_dpid(ev.datapath.id or 0)
        if switch is not None and self.datapaths.get(switch.name) is ev.datapath:
            # Its rules stay and keep forwarding (fail_mode=secure); we resync on reconnect.
            self.logger.info("switch %s disconnected", switch.name)
            self.status.event("disconnected", switch=switch.name)
            del self.datapaths[switch.name]
            self.installed.pop(switch.name, None)
            self.barriers = {b for b in self.barriers if b[0] != switch.name}
            self.syncs = {b: g for b, g in self.syncs.items() if b[0] != switch.name}
            self.converge()

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, ev: Any) -> None:
        switch = self.spec.by_dpid(ev.msg.datapath.id)
        if switch is None:
            return
        barrier = (switch.name, ev.msg.xid)
        if barrier in self.syncs:
            generation = self.syncs.pop(barrier)
            self.status.event("in_sync", switch=switch.name, generation=generation)
            self._publish()
        if barrier in self.barriers:
            self.barriers.discard(barrier)
            if not self.barriers:
                self.converge()

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev: Any) -> None:
        msg = ev.msg
        here = self.spec.by_dpid(msg.datapath.id)
        sender = parse_lldp(msg.data)
        if here is None or sender is None:
            return
        there = self.spec.by_dpid(sender[0])
        in_port = msg.match["in_port"]
        expected = next((lk.end(here.name)[1:] for lk in self.spec.links_of(here.name)
                         if lk.end(here.name)[0] == in_port), None)
        seen = (there.name if there else f"dpid {sender[0]:x}", sender[1])
        if expected == seen:
            self.logger.info("cabling ok: %s:%d <- %s:%d", here.name, in_port, *seen)
        else:
            self.logger.warning("cabling differs from the spec: %s:%d hears %s:%d, expected %s",
                                here.name, in_port, *seen, expected)

    @set_ev_cls(ofp_event.EventOFPErrorMsg,
                [HANDSHAKE_DISPATCHER, CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def error(self, ev: Any) -> None:
        msg = ev.msg
        expected = (msg.type, msg.code) in _EXPECTED_ERRORS
        self.logger.log(logging.DEBUG if expected else logging.ERROR,
                        "switch %016x refused xid %s: type %d code %d", msg.datapath.id,
                        msg.xid, msg.type, msg.code)

    # ------------------------------------------------------------ the one place that sends

    def converge(self) -> None:
        """Bring every connected switch to the state core computes for what we know now.

        Each switch that was sent anything is also sent a barrier: its reply says the switch
        holds this generation (status.json), and for a tree step, that the next may go."""
        if self.barriers:
            return  # a tree step is in flight; barrier_reply calls us again
        started = time.perf_counter()
        down = frozenset(self.down - set(self.trusted))
        steps = core.tree_steps(self.tree, core.flood_tree(self.spec, down))
        tree = steps[0]
        self.status.doc["counts"]["converges"] += 1
        for name, dp in self.datapaths.items():
            desired = self.compiler.desired(self.spec, name, tree)
            msgs = core.changed_entries(self.installed.get(name), desired, dp)
            for msg in msgs:
                dp.send_msg(msg)
            self.installed[name] = {k: (m, text) for k, m, text in desired}
            if not msgs:
                continue
            barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
            dp.send_msg(barrier)
            self.syncs[(name, barrier.xid)] = self.generation
            if len(steps) > 1:
                self.barriers.add((name, barrier.xid))
            self.status.doc["counts"]["messages"] += len(msgs)
            kinds = [type(m).__name__ for m in msgs]
            self.status.event("sent", switch=name, messages=len(msgs),
                              groups=kinds.count("OFPGroupMod"), flows=kinds.count("OFPFlowMod"),
                              generation=self.generation, tree=_tree_names(tree),
                              ms=round((time.perf_counter() - started) * 1e3, 2))
            self.logger.info("%s: sent %d changes (flood tree %s)", name, len(msgs),
                             _tree_names(tree))
        self.tree = tree
        self.status.doc["counts"]["built"] = self.compiler.built
        self._publish()
        if len(steps) > 1 and not self.barriers:
            self.converge()

    @set_ev_cls(EventReload)
    def reload_requested(self, ev: EventReload) -> None:
        self.reload()

    @set_ev_cls(EventPrepare)
    def prepare_requested(self, ev: EventPrepare) -> None:
        self.prepare()

    def prepare(self) -> None:
        """A vMotion started its pre-copy: build what every switch will hold once the VM is on
        its destination (fabric.next.json), sending nothing. The switch-over's reload then
        only compares and sends: the VM is paused meanwhile, so that wait is VM downtime."""
        started = time.perf_counter()
        try:
            spec, generation = read_fabric(str(Path(self.fabric_file).with_name("fabric.next.json")))
        except Exception as exc:
            self.logger.warning("prepare: no usable fabric.next.json: %s", exc)
            return
        built = self.compiler.built
        tree = self.tree or frozenset()
        for name in self.datapaths:
            self.compiler.desired(spec, name, tree)
        ms = (time.perf_counter() - started) * 1e3
        self.status.event("prepared", generation=generation, built=self.compiler.built - built,
                          ms=round(ms, 2))
        self.logger.info("prepared generation %d in %.0f ms", generation, ms)

    def reload(self) -> None:
        """The build rewrote the fabric file (a VM is moving to another hypervisor): read it
        again and send each switch only what changed, the moved MACs' flows. vclab waits for
        status.json's generation to reach the file's before the VM resumes."""
        try:
            spec, generation = read_fabric(self.fabric_file)
        except Exception as exc:  # a bad rewrite must not take the fabric down
            self.logger.error("reload of %s failed, keeping the old fabric: %s", self.fabric_file, exc)
            self.status.event("reload_failed", error=str(exc))
            return
        started = time.perf_counter()
        self.spec, self.generation = spec, generation
        self.status.doc["loaded_generation"] = generation
        self.status.doc["counts"]["reloads"] += 1
        self.converge()
        self.status.event("reloaded", generation=generation,
                          ms=round((time.perf_counter() - started) * 1e3, 2))
        self._publish()
        self.logger.info("reloaded %s (generation %d)", self.fabric_file, generation)

    def _publish(self) -> None:
        """status.json: per switch whether it holds what we sent (every barrier back), and
        the generation every connected switch holds."""
        pending = {name for name, _ in self.syncs}
        doc = self.status.doc
        doc["switches"] = {
            s.name: {"connected": s.name in self.datapaths,
                     "in_sync": s.name in self.datapaths and s.name not in pending
                     and self.installed.get(s.name) is not None,
                     "groups": sum(k[0] == "group" for k in self.installed.get(s.name) or ()),
                     "flows": sum(k[0] == "flow" for k in self.installed.get(s.name) or ())}
            for s in self.spec.switches}
        synced = all(v["in_sync"] for v in doc["switches"].values())
        doc["state"] = "converged" if synced and not self.barriers else "converging"
        if synced:
            doc["generation"] = self.generation
        doc["down"] = sorted(f"{sw}:{p}" for sw, p in self.down)
        self.status.publish()

    # ------------------------------------------------------------ helpers

    def _spec_ports(self, switch: str) -> set[int]:
        return set(self.spec.fabric_ports(switch)) | {p for _, p in self.spec.server_ports(switch)}

    def _trust(self, where: tuple[str, int], live: bool, carrier: bool, was_carrier: bool) -> bool:
        """Start or stop trusting a fabric port's carrier; True if that changed. Only a cable
        whose carrier just came back is trusted (its BFD is on its way up); one that loses BFD
        with carrier kept is a silent failure and never is."""
        if where[1] not in self.spec.fabric_ports(where[0]):
            return False
        if live or not carrier:
            return self.trusted.pop(where, None) is not None
        if carrier and not was_carrier:
            self.trusted[where] = time.monotonic() + TRUST_CARRIER_S
            hub.spawn_after(TRUST_CARRIER_S + 0.05, self.send_event, self.name, EventTrustCheck())
            return True
        return False

    def _set_live(self, switch: str, port: int, live: bool) -> bool:
        """Record a port's liveness; True if that is news."""
        was_live = (switch, port) not in self.down
        if live:
            self.down.discard((switch, port))
        else:
            self.down.add((switch, port))
        return was_live != live

    def _check_port_names(self, switch: str, ports: dict[int, Any]) -> None:
        names = {lk.end(switch)[0]: (lk.a_ifname if lk.a == switch else lk.b_ifname)
                 for lk in self.spec.links_of(switch)}
        names.update({up.port: up.ifname for att in self.spec.attachments for up in att.uplinks
                      if up.switch == switch})
        for port_no, want in sorted(names.items()):
            have = ports.get(port_no)
            if have is None:
                self.logger.warning("%s has no port %d (spec: %s)", switch, port_no, want or "?")
            elif want and have.name.decode(errors="replace") != want:
                self.logger.warning("%s port %d is %s, spec says %s", switch, port_no,
                                    have.name.decode(errors="replace"), want)

    def _send_lldp(self, switches: list[str], only_port: int | None = None) -> None:
        for name in switches:
            dp = self.datapaths.get(name)
            if dp is None:
                continue
            p, of = dp.ofproto_parser, dp.ofproto
            for port in self.spec.fabric_ports(name):
                if only_port in (None, port) and (name, port) not in self.down:
                    dp.send_msg(p.OFPPacketOut(dp, buffer_id=of.OFP_NO_BUFFER,
                                               in_port=of.OFPP_CONTROLLER,
                                               actions=[p.OFPActionOutput(port)],
                                               data=lldp_frame(dp.id, port)))


def _tree_names(tree: frozenset) -> list[str]:
    return sorted("-".join(sorted(e)) for e in tree)
