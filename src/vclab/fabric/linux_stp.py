"""The `linux-stp` mechanism: physical switches as Linux bridges running the kernel's 802.1D STP,
a second implementation of STP beside OVS's, with the same tuned timers.

The bridge is created down with STP on, every cable enslaved, then brought up, so every port
starts in listening and a looped fabric never floods. Tagged frames cross a bridge without VLAN
filtering as they are; where the kernel has VLAN filtering, each port carries exactly the
VLANs of its OVS twin (trunks) instead. The kernel's STP has no edge ports: ports facing servers
also wait through listening and learning, at start and whenever a NIC's carrier comes back.
Mininet's LinuxBridge is not used (it forgets the bridge name when it sets the priority).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vclab.errors import VclabError
from vclab.fabric.mechanisms import STP_FORWARD_DELAY, STP_HELLO, STP_MAX_AGE, Mechanism, BuiltLab
from vclab.lab.executor import run_short
from vclab.topology.commands import Command, Exec
from vclab.topology.plan import BuildPlan, Bridge
from vclab.topology.render import ipv6_off_commands

# /sys/class/net/BR/brif/PORT/state
STATES = {0: "disabled", 1: "listening", 2: "learning", 3: "forwarding", 4: "blocking"}


def judge(states: dict[str, dict[str, int]]) -> tuple[bool, str]:
    """(settled, what is still moving) from {bridge: {port: state number}}. Pure."""
    moving = []
    for bridge, ports in states.items():
        for port, state in sorted(ports.items()):
            if state in (1, 2):
                moving.append(f"{bridge}:{port} {STATES[state]}")
        if ports and not any(s == 3 for s in ports.values()):
            moving.append(f"{bridge}: no port forwarding yet")
    return not moving, ", ".join(moving)


@dataclass
class LinuxStp(Mechanism):
    hello_time: int = STP_HELLO  # seconds
    max_age: int = STP_MAX_AGE
    forward_delay: int = STP_FORWARD_DELAY
    vlan_filtering: bool | None = None  # None: use it if the kernel has it (checked in prepare)
    timeout: float | None = None
    name = "linux-stp"

    def __post_init__(self) -> None:
        if self.timeout is None:
            self.timeout = 2 * self.forward_delay + self.max_age + 10.0

    def check(self, plan: BuildPlan) -> None:
        lags = plan.lags()
        if lags:
            raise VclabError(
                f"mechanism 'linux-stp' cannot bundle the inter-switch LAG {', '.join(lags)}: the "
                "switch would need a kernel bond; use rstp or stp, or leave the cables without `lag`")
        bonds = [b.link for br in plan.physical for b in br.bonds]
        if bonds:
            raise VclabError(
                f"mechanism 'linux-stp' cannot terminate the LACP teams {', '.join(bonds)}: the "
                "switch would need a kernel bond; use team mode active-backup or balance-slb")

    def on_ovs(self, bridge: Bridge) -> bool:
        return bridge.kind != "physical"

    def prepare(self, lab: BuiltLab) -> None:
        from vclab.doctor import PROBES

        probe = next(p for n, p, _ in PROBES if n == "linux-bridge-stp")
        ok, why = probe()
        if not ok:
            raise VclabError(f"mechanism 'linux-stp' needs the Linux bridge with STP, which this "
                             f"kernel does not offer ({why}); use stp or rstp")
        if self.vlan_filtering is None:
            self.vlan_filtering = _has_vlan_filtering()

    def commands(self, plan: BuildPlan) -> list[Command]:
        cs = lambda seconds: str(seconds * 100)  # noqa: E731  iproute2 takes centiseconds
        out: list[Command] = []
        for bridge in plan.physical:
            b = (bridge.name,)
            out.append(Exec(["ip", "link", "add", bridge.name, "address", bridge.hwaddr, "type",
                             "bridge", "stp_state", "1", "priority", str(bridge.priority or 32768),
                             "hello_time", cs(self.hello_time), "max_age", cs(self.max_age),
                             "forward_delay", cs(self.forward_delay)], b))
            out += ipv6_off_commands([bridge.name])
            if self.vlan_filtering:
                out.append(Exec(["ip", "link", "set", bridge.name, "type", "bridge",
                                 "vlan_filtering", "1", "vlan_default_pvid", "0"], b))
            for port in bridge.ports:
                on = (port.name, bridge.name)
                out.append(Exec(["ip", "link", "set", "dev", port.name, "master", bridge.name], on))
                if port.cost:
                    out.append(Exec(["ip", "link", "set", "dev", port.name, "type", "bridge_slave",
                                     "cost", str(port.cost)], on))
                if self.vlan_filtering:
                    out += [Exec(["bridge", "vlan", "add", "dev", port.name, "vid", str(v)], on)
                            for v in port.vlans]
            out.append(Exec(["ip", "link", "set", "dev", bridge.name, "up"], b))
        return out

    def converged(self, lab: BuiltLab) -> tuple[bool, str]:
        states = {}
        for bridge in lab.plan.physical:
            base = Path("/sys/class/net") / bridge.name / "brif"
            states[bridge.friendly] = {p.name: int((p / "state").read_text())
                                       for p in base.iterdir()} if base.is_dir() else {}
        return judge(states)

    def stop(self, lab: BuiltLab) -> None:
        present = set(os.listdir("/sys/class/net"))
        for bridge in lab.plan.physical:
            if bridge.name in present:
                lab.sh(Exec(["ip", "link", "del", bridge.name], (bridge.name,)), check=False)


def _has_vlan_filtering() -> bool:
    name = f"vcvf{os.getpid() % 100000}"
    if run_short(["ip", "link", "add", name, "type", "bridge"]).returncode != 0:
        return False
    try:
        return run_short(["ip", "link", "set", name, "type", "bridge", "vlan_filtering",
                          "1"]).returncode == 0
    finally:
        run_short(["ip", "link", "del", name])
