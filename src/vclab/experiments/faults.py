"""Faults that apply themselves, record when they really happened, and undo themselves.

A fault is turned into commands first (pure, tested without root), then applied; the applied
time is the wall clock right after the command that made it effective returned, with the
command's own duration kept as its uncertainty. Cables are veth pairs whose two ends are both in
the root namespace (switch ports and virtual-switch uplinks), so a fault never enters a host
(with AF_XDP ports, each cable is wired through a namespace of its own: topology/wire.py; the
commands are the same, the executor runs their tc there)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from vclab.errors import VclabError
from vclab.experiments.spec import Fault
from vclab.lab.executor import Executor
from vclab.topology.commands import Exec, LinkState, Ofctl, Tc
from vclab.topology.wire import sink_name

# An ifb left down: whatever is redirected to it is dropped (gact is missing). One per lab,
# named with the lab's prefix, so two runs side by side never remove each other's.
SINK = sink_name()




class Cabling(Protocol):
    """What faults need to know of a built cluster: cable ends by the user's names."""

    def link_ends(self, link: str) -> tuple[str, str]:
        """Root-namespace interface names of both ends of `tor-a/tor-b#1` or `esx1.vmnic0`."""

    def switch_links(self, switch: str) -> list[str]:
        """Every cable of a physical switch, by name."""

    def management_links(self, host: str) -> list[str]:
        """The cables that carry a server's management traffic (its NICs)."""

    plan: object  # the BuildPlan: storage-partition finds a host's storage ports in it

    # Setting one end down takes both ends' carrier at once (see PlanCabling.carrier_shared).
    carrier_shared: bool

    def end_on(self, link: str, switch: str) -> str:
        """The end of one of `switch`'s cables that belongs to the switch."""


def _down(ifname: str, peer: str | None = None) -> LinkState:
    return LinkState(ifname, up=False, peer=peer)


def _up(ifname: str) -> LinkState:
    return LinkState(ifname, up=True)


def silent_commands(ifname: str, sink: str = SINK) -> list[list[str]]:
    """Drop everything `ifname` transmits while its carrier stays up: BPDUs, LACP and BFD too,
    which an OpenFlow drop rule would not catch (OVS handles them before the flow table)."""
    return [
        Tc("qdisc", "replace", ifname, "clsact"),
        Tc("filter", "replace", ifname, "egress", "protocol", "all", "prio", "1",
           "handle", "800::1", "u32", "match", "u32", "0", "0",
           "action", "mirred", "egress", "redirect", "dev", sink),
    ]


def restore_commands(ifname: str) -> list[list[str]]:
    return [Tc("qdisc", "del", ifname, "clsact")]


def sink_commands(sink: str = SINK) -> list[list[str]]:
    return [Exec(["ip", "link", "add", sink, "type", "ifb"], (sink,))]


def storage_ports(build_plan, host: str) -> list[tuple[str, str]]:
    """(virtual switch, access port) of each of `host`'s storage networks. Pure."""
    h = build_plan.host(host)
    return [(i.bridge, i.port) for i in h.interfaces
            if build_plan.networks[i.network].kind == "storage"]


def port_config_commands(bridge: str, port: str, passing: bool) -> list[list[str]]:
    """Stop (or resume) a virtual switch port's traffic both ways with carrier up: OpenFlow
    port config no-receive/no-forward, honoured by the userspace datapath. Inside the switch,
    so the host's namespace is never entered and the mechanism's own flows stay untouched."""
    words = ("receive", "forward") if passing else ("no-receive", "no-forward")
    return [Ofctl("mod-port", bridge, port, w) for w in words]


def plan(fault: Fault, cabling: Cabling, sink: str = SINK) -> tuple[list[list[str]], list[list[str]]]:
    """(commands that apply the fault, commands that undo it). Pure."""
    # A real cable cut, or a dead switch, takes the carrier of both ends at one instant. With a
    # veth pair one close does that (its peer's carrier goes in the same call), so a cut closes
    # one end only. Closing both made the fault two closes long: a close first stops the
    # device's traffic, then waits for its queues to drain (1-jiffy sleeps under load), and only
    # then drops the carrier. Measured in the default experiment's uplink cut, 0.5-22 ms for
    # the pair (sdn 5.6 + 5.6 ms) while the probes already lost frames. The far end is then
    # asked for its carrier, which publishes its carrier loss at once, as its own close did,
    # rather than when the kernel's link-watch worker gets a CPU. Undo and repair raise both
    # ends (a no-op for the one still up).
    shared = getattr(cabling, "carrier_shared", False)
    if fault.link is not None:
        a, b = cabling.link_ends(fault.link)
        ends = {"both": (a, b), "forward": (a,), "reverse": (b,)}[fault.direction]
        if fault.action in ("down", "flap"):
            down = [_down(a, peer=b)] if shared else [_down(a), _down(b)]
            return down, [_up(x) for x in (a, b)]
        if fault.action == "up":
            return [_up(x) for x in (a, b)], []
        if fault.action == "silent":
            apply = [c for x in ends for c in silent_commands(x, sink)]
            return apply, [c for x in ends for c in restore_commands(x)]
        if fault.action == "restore":
            return [c for x in (a, b) for c in restore_commands(x)], []
    if fault.switch is not None:
        links = cabling.switch_links(fault.switch)
        ends = [e for link in links for e in cabling.link_ends(link)]
        if shared:
            down = []
            for link in links:
                a, b = cabling.link_ends(link)
                own = cabling.end_on(link, fault.switch)
                down.append(_down(own, peer=b if own == a else a))
        else:
            down = [_down(x) for x in ends]
        up = [_up(x) for x in ends]
        return (down, up) if fault.action == "fail" else (up, [])
    if fault.host is not None and fault.action in ("storage-partition", "storage-rejoin"):
        ports = storage_ports(cabling.plan, fault.host)
        cut = [c for b, p in ports for c in port_config_commands(b, p, passing=False)]
        mend = [c for b, p in ports for c in port_config_commands(b, p, passing=True)]
        return (cut, mend) if fault.action == "storage-partition" else (mend, [])
    if fault.host is not None:
        # a crash cuts every cable of the server as isolation does (its processes are killed
        # by apply()); only the cables come back at teardown
        ends = [e for link in cabling.management_links(fault.host) for e in cabling.link_ends(link)]
        down, up = [_down(x) for x in ends], [_up(x) for x in ends]
        return (down, up) if fault.action in ("isolate", "crash") else (up, [])
    raise ValueError(f"no commands for {fault}")


@dataclass
class AppliedFault:
    """What really happened: the record that outage figures are measured against."""

    name: str
    kind: str
    target: str
    action: str
    scheduled_ms: float
    applied_ns: int = 0  # wall clock (CLOCK_REALTIME), comparable with probe timestamps
    applied_ms: float = 0.0  # relative to the start of the repetition
    uncertainty_ms: float = 0.0  # how long the applying command took
    undone_ms: float | None = None
    detail: dict = field(default_factory=dict)


def run_commands(cmds: list[list[str]], check: bool = True,
                 executor: Executor | None = None,
                 each_ms: list[float] | None = None) -> tuple[int, float]:
    """Run in order (on this machine unless an executor says where); return (wall-clock ns
    after the last one, seconds they took). A LinkState is one ioctl, so no process start
    blurs the applied time; a close can still wait for its device's queues (up to ~20 ms
    under load, see plan): `each_ms` gets how long each command took. An object that
    already exists (the sink) is not a failure."""
    run = (executor or Executor()).run
    t0 = time.perf_counter()
    for cmd in cmds:
        t = time.perf_counter()
        try:
            run(cmd)
        except VclabError as e:
            if check and "File exists" not in str(e):
                raise RuntimeError(str(e)) from None
        if each_ms is not None:
            each_ms.append(round((time.perf_counter() - t) * 1e3, 3))
    return time.time_ns(), time.perf_counter() - t0


def crash_victims(tracked, hosts: list[str], spare: set[int]) -> list:
    """The tracked processes a crash of these hosts ends: every one the lab started in their
    namespaces, except the namespaces' own shells (and `spare`), which the lab needs to tear
    down. One entry per PID. Pure."""
    from vclab.lab.procs import Role

    out, seen = [], set()
    for t in tracked:
        if t.node in hosts and t.role is Role.NODE and t.pid not in spare and t.pid not in seen:
            seen.add(t.pid)
            out.append(t)
    return out


def kill_now(victims) -> list[str]:
    """SIGKILL, no SIGTERM first: a crashed host says goodbye to nobody (a lock agent that got
    SIGTERM would release its locks). Returns `label (pid)` of those that were alive."""
    import os
    import signal

    from vclab.lab.procs import alive

    killed = []
    for t in victims:
        if alive(t.pid, t.started):
            try:
                os.kill(t.pid, signal.SIGKILL)
                killed.append(f"{t.label} ({t.pid})")
            except ProcessLookupError:
                pass
    return killed


def fault_name(fault: Fault) -> str:
    return f"{fault.target_kind} {fault.target} {fault.action or fault.controller}"


def apply(fault: Fault, cabling: Cabling, t0_ns: int,
          controller: Callable[[str], None] | None = None,
          sink: str = SINK,
          crash: Callable[[str], list[str]] | None = None,
          executor: Executor | None = None) -> tuple[AppliedFault, list[list[str]]]:
    """Apply now; returns the record and the commands that undo it. A host crash first calls
    `crash(host)` (kill its processes; what it killed goes in the record), then cuts its
    cables: the applied time is after both, the uncertainty covers both."""
    record = AppliedFault(fault_name(fault), fault.target_kind, fault.target,
                          fault.action or str(fault.controller), fault.at)
    if fault.controller is not None:
        t_start = time.perf_counter()
        if controller is None:
            raise RuntimeError("controller faults need the sdn mechanism")
        controller(fault.controller)
        now, took = time.time_ns(), time.perf_counter() - t_start
        undo: list[list[str]] = []
    else:
        cmds, undo = plan(fault, cabling, sink)
        t_start = time.perf_counter()
        if fault.action == "crash":
            if crash is None:
                raise RuntimeError("host crashes need the lab's processes (crash=)")
            record.detail["killed"] = crash(fault.host)
            record.detail["killed_ns"] = time.time_ns()
        each: list[float] = []
        now, took = run_commands(cmds, executor=executor, each_ms=each)
        took = time.perf_counter() - t_start
        record.detail["commands"] = [" ".join(c) for c in cmds]
        record.detail["commands_ms"] = each
    record.applied_ns = now
    record.applied_ms = (now - t0_ns) / 1e6
    record.uncertainty_ms = took * 1e3
    return record, undo


def single_failures(cluster) -> list[tuple[dict, dict]]:
    """Every switch, inter-switch link and NIC (server NIC, storage portal) of the cluster, as
    (fail, undo) fault fields: the seed's "no single failure interrupts VM operation", checked."""
    out = []
    for sw in cluster.switches:
        out.append(({"switch": sw, "action": "fail"}, {"switch": sw, "action": "recover"}))
    for link in cluster.link_list():
        out.append(({"link": link.name, "action": "down"}, {"link": link.name, "action": "up"}))
    for host, server in cluster.servers().items():
        for nic in server.nics:
            out.append(({"link": f"{host}.{nic}", "action": "down"}, {"link": f"{host}.{nic}", "action": "up"}))
    for array, spec in cluster.storage.items():
        for net in spec.portals:
            out.append(({"link": f"{array}.{net}", "action": "down"}, {"link": f"{array}.{net}", "action": "up"}))
    return out


def expand_schedule(experiment, cluster) -> list[Fault]:
    """The flat, time-ordered schedule: flaps become down/up pairs, sweeps become one failure
    after another, each undone after `hold` and followed by the same time to recover."""
    from vclab.experiments.spec import Sweep

    out: list[Fault] = []
    for item in experiment.faults:
        if isinstance(item, Sweep):
            t = item.at
            for fail, undo in single_failures(cluster):
                out.append(Fault(at=t, **fail))
                out.append(Fault(at=t + item.hold, **undo))
                t += 2 * item.hold
        elif item.action == "flap":
            for k in range(item.count):
                start = item.at + k * item.period
                out.append(item.model_copy(update={"at": start, "action": "down", "period": None, "count": None}))
                out.append(item.model_copy(update={"at": start + item.period / 2, "action": "up",
                                                   "period": None, "count": None}))
        else:
            out.append(item)
    return sorted(out, key=lambda f: f.at)


def schedule_end_ms(faults: list[Fault]) -> float:
    return max((f.at for f in faults), default=0.0)
