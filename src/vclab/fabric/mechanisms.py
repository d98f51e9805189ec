"""Loop protection of the physical fabric, one small class per mechanism.

A mechanism adds columns to the bridges and ports when they are created (`bridge_options`,
`port_options`, `interface_options`, `transaction`: STP/RSTP must be on before the first frame,
or a looped fabric floods), may add commands once the fabric exists (`commands`), may run
something beside the fabric (`prepare` before the build, `start` after it, `stop` at teardown:
the sdn controller), and says when the fabric has settled (`converged`, polled by the build
instead of sleeping a fixed time). Only physical switches run a mechanism: virtual switches are
loop-free by construction.

Silent ("gray") failures, where a cable drops everything but carrier stays up:
- rstp / stp / linux-stp notice only through missing BPDUs: after 3 hellos (RSTP, 6 s with
  OVS's 2 s hello) or max-age (STP, 6 s with our timers), then the alternate path still waits
  through listening and learning (STP: 2 x forward delay).
- sdn runs BFD on every inter-switch link; OVS clears the port's LIVE flag when BFD goes down
  and the fast-failover buckets watching it move on in the datapath (3 x the BFD interval).
- NIC teams: active-backup and balance-slb watch carrier only (and BFD if the member has it;
  vclab turns it on for the sdn mechanism's bonds, see Sdn); LACP (`team: lacp`, fast rate)
  notices a silent member when its partner's LACPDUs stop: 3 x 1 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from vclab.errors import VclabError
from vclab.topology.commands import Exec, Tc
from vclab.topology.plan import BuildPlan, Bond, Bridge, Port, describe_loop, find_loop


class BuiltLab(Protocol):
    """What a mechanism needs of a built lab: its plan, and a way to run root commands."""

    plan: BuildPlan

    def sh(self, args: list[str], check: bool = True) -> str: ...

    def tc(self, cmds: list[Tc], check: bool = True) -> None:
        """tc commands, batched, each where its device's qdiscs are (topology/wire.py)."""


class Mechanism:
    name = ""
    timeout = 30.0  # seconds to wait for `converged` before the build gives up

    def __str__(self) -> str:
        return self.name

    def check(self, plan: BuildPlan) -> None:
        """Refuse a fabric this mechanism cannot make safe (raise VclabError)."""

    def bridge_options(self, bridge: Bridge) -> list[str]:
        return []

    def port_options(self, bridge: Bridge, port: Port | Bond) -> list[str]:
        return []

    def interface_options(self, bridge: Bridge, port: Port) -> list[str]:
        """Interface columns (BFD lives there, not on the port)."""
        return []

    def transaction(self, bridge: Bridge) -> list[str]:
        """More ovs-vsctl operations for the bridge's own transaction (e.g. its controller)."""
        return []

    def on_ovs(self, bridge: Bridge) -> bool:
        """False when this mechanism makes the switch something else (a Linux bridge)."""
        return True

    def commands(self, plan: BuildPlan) -> list[list[str]]:
        return []

    def prepare(self, lab: BuiltLab) -> None:
        """After the pre-flight checks, before anything is built (refuse here with VclabError)."""

    def start(self, lab: BuiltLab) -> None:
        """After the build (bridges, cables, shaping, hosts), before convergence is polled."""

    def stop(self, lab: BuiltLab) -> None:
        """At teardown, before the bridges are deleted; must not raise."""

    def vm_will_move(self, lab: BuiltLab, plan: BuildPlan, cluster=None) -> None:
        """A vMotion's pre-copy starts; `plan` is the lab once the VM has moved. A chance to
        get ready without changing anything (the VM still runs where it is)."""

    def vm_moving(self, lab: BuiltLab, plan: BuildPlan, cluster=None) -> None:
        """A paused VM's ports are leaving for another virtual switch (vMotion's switch-over);
        `plan` is the lab once they are there. Learning fabrics need nothing: the VM's
        announcement teaches them. Must not wait: vm_moved does, before the VM resumes."""

    def vm_moved(self, lab: BuiltLab) -> None:
        """Return once the fabric delivers to the VM's new place (just before it resumes)."""

    def timeline_events(self) -> list[dict]:
        """What the mechanism's own control plane did: [{t_ns, kind, detail}] (sdn's
        controller actions), stored with the repetition's events."""
        return []

    def action(self, lab: BuiltLab, what: str) -> None:
        raise VclabError(f"mechanism {self.name!r} has no controller to {what}")

    def converged(self, lab: BuiltLab) -> tuple[bool, str]:
        """(settled, what is still moving)."""
        return True, ""


class NoProtection(Mechanism):
    """Plain learning switches. Only for loop-free fabrics."""

    name = "none"

    def check(self, plan: BuildPlan) -> None:
        loop = find_loop(plan)
        if loop:
            raise VclabError(
                f"mechanism 'none' would leave the loop {describe_loop(loop)} open and the first "
                "broadcast would circle forever: use rstp or stp, or remove one of those links")


def parse_port_table(text: str) -> list[tuple[str, str, str]]:
    """(interface, role, state) rows of `ovs-appctl rstp/show` or `stp/show` output (one bridge
    or several)."""
    rows, in_table = [], False
    for line in text.splitlines():
        words = line.split()
        if words[:3] == ["Interface", "Role", "State"]:
            in_table = True
        elif in_table and words and set(words[0]) == {"-"} and len(words) >= 3:
            continue  # the dashes under the header
        elif in_table and len(words) >= 5 and re.fullmatch(r"\d+\.\d+", words[4]):
            rows.append((words[0], words[1], words[2]))
        else:
            in_table = False
    return rows



def spanning_tree_options(kind: str, bridge: Bridge, hello: int | None, max_age: int | None,
                          forward_delay: int | None) -> list[str]:
    """OVS options of a physical bridge running `kind` (stp or rstp): priority and timers."""
    if bridge.kind != "physical":
        return []
    opts = [f"{kind}_enable=true"]
    if bridge.priority is not None:
        opts.append(f"other_config:{kind}-priority={bridge.priority}")
    for key, value in (("hello-time", hello), ("max-age", max_age), ("forward-delay", forward_delay)):
        if value is not None:
            opts.append(f"other_config:{kind}-{key}={value}")
    return opts


def spanning_tree_port_options(kind: str, bridge: Bridge, port: Port | Bond) -> list[str]:
    """Server-facing ports forward at once: RSTP edge ports; OVS's STP has none, so they leave
    STP (like portfast with BPDU filter). Inter-switch links take the spec's path cost."""
    if bridge.kind != "physical":
        return []
    if port.role == "downlink":
        return ["other_config:rstp-port-admin-edge=true" if kind == "rstp" else "other_config:stp-enable=false"]
    if port.cost:
        return [f"other_config:{kind}-path-cost={port.cost}"]
    return []

class SpanningTree(Mechanism):
    """What STP and RSTP share: options named after the protocol, timers from the subclass."""

    hello_time: int | None
    max_age: int | None
    forward_delay: int | None

    def bridge_options(self, bridge: Bridge) -> list[str]:
        return spanning_tree_options(self.name, bridge, self.hello_time, self.max_age, self.forward_delay)

    def port_options(self, bridge: Bridge, port: Port | Bond) -> list[str]:
        return spanning_tree_port_options(self.name, bridge, port)


@dataclass
class Rstp(SpanningTree):
    """IEEE 802.1w on every physical switch; ports facing servers are edge ports (as a real
    hypervisor-facing port is configured), so they forward at once."""

    hello_time: int | None = None  # seconds; None = OVS's defaults (2 / 20 / 15)
    max_age: int | None = None
    forward_delay: int | None = None
    timeout: float = 30.0
    name = "rstp"

    def converged(self, lab: BuiltLab) -> tuple[bool, str]:
        """Every port forwarding or blocked, or a designated port still proposing to a blocked
        (alternate/backup) far end: OVS's alternate ports never answer a proposal (its
        ALTERNATE_PORT state compares fdWhile with forwardDelay(), the hello time under RSTP,
        not FwdDelay), so that end would forward only when its 3 s edge delay runs out. No
        frame crosses that cable either way meanwhile, and losing the other cable then fails
        over as fast as from the settled state (measured: 23 ms against 26 ms)."""
        peer = lab.plan.cable_peers()
        ports = {}
        for bridge in lab.plan.physical:
            for iface, role, state in parse_port_table(lab.sh(appctl("rstp/show", bridge))):
                ports[iface] = (bridge.friendly, role, state)
        moving = []
        for iface, (switch, role, state) in ports.items():
            final = state == "Forwarding" or (state == "Discarding" and role in ("Alternate", "Backup", "Disabled"))
            if not final and (role, state) == ("Designated", "Discarding"):
                far = ports.get(peer.get(iface, ""))
                final = far is not None and far[1] in ("Alternate", "Backup") and far[2] == "Discarding"
            if not final:
                moving.append(f"{switch}:{iface} {role} {state}")
        return not moving, ", ".join(moving)


# 802.1D timers tuned down as far as the standard allows (2 x (forward delay - 1) >= max age
# >= 2 x (hello + 1)); OVS's defaults (2 / 20 / 15 s) make one failover take 30-50 s.
STP_HELLO, STP_MAX_AGE, STP_FORWARD_DELAY = 1, 6, 4


@dataclass
class Stp(SpanningTree):
    """IEEE 802.1D on every physical switch. OVS's STP has no edge ports: ports facing servers
    leave STP instead (like portfast with BPDU filter), so only inter-switch links wait through
    listening and learning. Timers default to the tuned ones above; pass None for OVS's."""

    hello_time: int | None = STP_HELLO
    max_age: int | None = STP_MAX_AGE
    forward_delay: int | None = STP_FORWARD_DELAY
    timeout: float | None = None  # None: twice the forward delay plus the max age, plus 10 s
    name = "stp"

    def __post_init__(self) -> None:
        if self.timeout is None:
            self.timeout = 2 * (self.forward_delay or 15) + (self.max_age or 20) + 10.0

    def converged(self, lab: BuiltLab) -> tuple[bool, str]:
        moving = []
        for bridge in lab.plan.physical:
            rows = parse_port_table(lab.sh(appctl("stp/show", bridge)))
            for iface, role, state in rows:
                if state not in ("forwarding", "blocking", "disabled"):
                    moving.append(f"{bridge.friendly}:{iface} {role} {state}")
            if rows and not any(state == "forwarding" for _, _, state in rows):
                # Every port blocking is the moment before listening starts, not an end state.
                moving.append(f"{bridge.friendly}: no port forwarding yet")
        return not moving, ", ".join(moving)


def appctl(command: str, bridge: Bridge, target: str = "") -> Exec:
    """`ovs-appctl COMMAND TARGET` (default: the bridge) to the ovs-vswitchd holding `bridge`."""
    return Exec(["ovs-appctl", command, target or bridge.name], (bridge.name,))


def lacp_pending(lab: BuiltLab) -> list[str]:
    """The physical switches' LACP bonds whose partner has not agreed yet (`ovs-appctl
    lacp/show`): until then OVS keeps every member disabled, a state a spanning tree would
    report as settled (a disabled port) while nothing crosses."""
    pending = []
    for bridge in lab.plan.physical:
        for bond in bridge.bonds:
            shown = lab.sh(appctl("lacp/show", bridge, bond.name), check=False)
            status = next((line.split(":", 1)[1].split() for line in shown.splitlines()
                           if line.strip().startswith("status:")), [])
            if "negotiated" not in status:
                pending.append(f"{bridge.friendly}:{bond.link} LACP {' '.join(status) or 'not up'}")
    return pending

