"""Loop protection of the physical fabric, one small class per mechanism.

A mechanism adds columns to the bridges and ports when they are created (`bridge_options`,
`port_options`: STP/RSTP must be on before the first frame, or a looped fabric floods), may add
commands once the fabric exists (`commands`), and says when the fabric has settled
(`converged`, polled by the build instead of sleeping a fixed time). Only physical switches run
a mechanism: virtual switches are loop-free by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from vclab.errors import VclabError
from vclab.topology.plan import BuildPlan, Bond, Bridge, Port, describe_loop, find_loop


class Runner(Protocol):
    """What a mechanism needs of a built lab: its plan, and a way to run root commands."""

    plan: BuildPlan

    def sh(self, args: list[str], check: bool = True) -> str: ...


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

    def commands(self, plan: BuildPlan) -> list[list[str]]:
        return []

    def converged(self, lab: Runner) -> tuple[bool, str]:
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


@dataclass
class Rstp(Mechanism):
    """IEEE 802.1w on every physical switch; ports facing servers are edge ports (as a real
    hypervisor-facing port is configured), so they forward at once."""

    hello_time: int | None = None  # seconds; None = OVS's defaults (2 / 20 / 15)
    max_age: int | None = None
    forward_delay: int | None = None
    timeout: float = 30.0
    name = "rstp"

    def bridge_options(self, bridge: Bridge) -> list[str]:
        if bridge.kind != "physical":
            return []
        opts = ["rstp_enable=true"]
        if bridge.priority is not None:
            opts.append(f"other_config:rstp-priority={bridge.priority}")
        for key, value in (("rstp-hello-time", self.hello_time), ("rstp-max-age", self.max_age),
                           ("rstp-forward-delay", self.forward_delay)):
            if value is not None:
                opts.append(f"other_config:{key}={value}")
        return opts

    def port_options(self, bridge: Bridge, port: Port | Bond) -> list[str]:
        if bridge.kind != "physical":
            return []
        if port.role == "downlink":
            return ["other_config:rstp-port-admin-edge=true"]
        if isinstance(port, Port) and port.cost:
            return [f"other_config:rstp-path-cost={port.cost}"]
        return []

    def converged(self, lab: Runner) -> tuple[bool, str]:
        moving = []
        for bridge in lab.plan.physical:
            for iface, role, state in parse_port_table(lab.sh(["ovs-appctl", "rstp/show", bridge.name])):
                final = state == "Forwarding" or (state == "Discarding" and role in ("Alternate", "Backup", "Disabled"))
                if not final:
                    moving.append(f"{bridge.friendly}:{iface} {role} {state}")
        return not moving, ", ".join(moving)


@dataclass
class Stp(Mechanism):
    """IEEE 802.1D on every physical switch. OVS's STP has no edge ports: ports facing servers
    leave STP instead (like portfast with BPDU filter), so only inter-switch links wait through
    listening and learning."""

    hello_time: int | None = None
    max_age: int | None = None
    forward_delay: int | None = None
    timeout: float | None = None  # None: twice the forward delay plus the max age, plus 10 s
    name = "stp"

    def __post_init__(self) -> None:
        if self.timeout is None:
            self.timeout = 2 * (self.forward_delay or 15) + (self.max_age or 20) + 10.0

    def bridge_options(self, bridge: Bridge) -> list[str]:
        if bridge.kind != "physical":
            return []
        opts = ["stp_enable=true"]
        if bridge.priority is not None:
            opts.append(f"other_config:stp-priority={bridge.priority}")
        for key, value in (("stp-hello-time", self.hello_time), ("stp-max-age", self.max_age),
                           ("stp-forward-delay", self.forward_delay)):
            if value is not None:
                opts.append(f"other_config:{key}={value}")
        return opts

    def port_options(self, bridge: Bridge, port: Port | Bond) -> list[str]:
        if bridge.kind != "physical":
            return []
        if port.role == "downlink":
            return ["other_config:stp-enable=false"]
        if isinstance(port, Port) and port.cost:
            return [f"other_config:stp-path-cost={port.cost}"]
        return []

    def converged(self, lab: Runner) -> tuple[bool, str]:
        moving = []
        for bridge in lab.plan.physical:
            rows = parse_port_table(lab.sh(["ovs-appctl", "stp/show", bridge.name]))
            for iface, role, state in rows:
                if state not in ("forwarding", "blocking", "disabled"):
                    moving.append(f"{bridge.friendly}:{iface} {role} {state}")
            if rows and not any(state == "forwarding" for _, _, state in rows):
                # Every port blocking is the moment before listening starts, not an end state.
                moving.append(f"{bridge.friendly}: no port forwarding yet")
        return not moving, ", ".join(moving)


MECHANISMS: dict[str, type[Mechanism]] = {"rstp": Rstp, "stp": Stp, "none": NoProtection}
LATER = ("linux-stp", "sdn")  # named by the spec, added by the mechanisms issue


def get_mechanism(name: str | Mechanism) -> Mechanism:
    if isinstance(name, Mechanism):
        return name
    if name in MECHANISMS:
        return MECHANISMS[name]()
    if name in LATER:
        raise VclabError(f"mechanism {name!r} is not available yet; choose one of: "
                         f"{', '.join(MECHANISMS)}")
    raise VclabError(f"unknown mechanism {name!r}; choose one of: {', '.join(MECHANISMS)}")
