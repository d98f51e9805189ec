"""Cables as wires in a namespace of their own, for AF_XDP switch ports. Pure: commands only.

Why: on the userspace datapath, `system` ports (AF_PACKET) are polled by ovs-vswitchd's main
thread, which also handles every carrier change, OpenFlow message and revalidation. Under the
default experiment's load that thread batches frames 8-14 ms apart (docs/noise.md): the probes'
one-way delay has a median of 2-5 ms and every failover is rounded to the loop's pace. `afxdp`
ports are polled by a PMD thread instead (measured on this machine, one shaped cable with
200 Mbit/s of TCP beside: ping RTT 0.11 ms mean, 1.3 ms max, against 0.29 / 2.0 ms).

But AF_XDP transmits past the qdisc layer: tc on the switch's own port would shape nothing. So
each cable A<->B becomes

    OVS port A (root) <-> veth "B" [wire namespace] veth "A" <-> OVS port B (root)

and in the wire namespace an ingress u32 match-all filter redirects (`mirred egress
redirect`) every frame from one veth to the other. The wire-side veth named after an end
transmits what that end sends: its egress qdisc is where `tc ... dev A` belongs, exactly as
the end's own qdisc was before. So shaping, sdn's class queues and silent faults keep their
commands and only run in the wire namespace (`tc -n WIRE`); carrier faults keep setting the
root ends down (each takes its wire peer's carrier with it, so both switches see it).
"""

from __future__ import annotations

from vclab.topology.commands import Exec, Tc
from vclab.topology.plan import BuildPlan


def sink_name(prefix: str = "vc") -> str:
    """The ifb that silent faults redirect frames to (left down: they are dropped, as gact is
    missing here). One per lab, named with its prefix; with wires, one in the wire namespace
    under the same name."""
    return f"{prefix}sink0"[:15]


def wire_name(prefix: str) -> str:
    """The wire namespace of a lab with this name prefix."""
    return f"{prefix}wire"[:15]


def splice_commands(plan: BuildPlan, wire: str, sink: str) -> list[list[str]]:
    """Turn every cable (two root-namespace veth ends, already created as one pair) into two
    pairs through `wire`: A keeps its peer, which moves into the wire namespace (it is named
    B, as the end whose frames it carries on); B is made anew, with its MAC, peered with a
    wire-side "A". Then the redirects both ways. Run before Open vSwitch adds the ports.
    `sink`: the silent faults' frame sink, made in the wire namespace too (mirred redirects
    within one namespace)."""
    ns = ["ip", "netns", "exec", wire]
    cmds: list[list[str]] = [
        Exec(["ip", "netns", "add", wire]),
        # before any veth arrives: no IPv6 chatter on a cable (a moved or new device takes
        # the namespace's defaults)
        Exec([*ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
              "net.ipv6.conf.default.disable_ipv6=1"]),
        Exec(["ip", "-n", wire, "link", "set", "lo", "up"]),
        Exec(["ip", "-n", wire, "link", "add", sink, "type", "ifb"]),
    ]
    for v in plan.cables():
        a, b = v.a.ifname, v.b.ifname
        cmds += [
            Exec(["ip", "link", "set", b, "netns", wire], (b,)),
            Exec(["ip", "link", "add", b, "address", v.b.mac, "type", "veth", "peer", "name",
                  a, "netns", wire], (b,)),
            Exec(["ip", "link", "set", b, "up"], (b,)),  # OVS does not bring afxdp ports up
            Exec(["ip", "-n", wire, "link", "set", a, "up"]),
            Exec(["ip", "-n", wire, "link", "set", b, "up"]),
            # The receive path moves an 802.1Q tag into the frame's metadata, and XDP on the
            # far veth only sees the bytes: without tx VLAN offload the tag goes back into
            # the frame on its way out (else OVS receives trunk frames untagged).
            Exec([*ns, "ethtool", "-K", a, "txvlan", "off"]),
            Exec([*ns, "ethtool", "-K", b, "txvlan", "off"]),
        ]
    return cmds


def redirect_commands(plan: BuildPlan) -> list[Tc]:
    """For `tc -n WIRE -batch`: what arrives on one side of a wire leaves on the other. The
    frames OVS sends out A arrive on the wire-side veth named B and leave by the one named A."""
    out: list[Tc] = []
    for cable in plan.cables():
        for sender, receiver in ((cable.a.ifname, cable.b.ifname),
                                 (cable.b.ifname, cable.a.ifname)):
            out += [Tc("qdisc", "replace", receiver, "ingress"),
                    Tc("filter", "replace", receiver, "parent", "ffff:", "protocol", "all",
                       "prio", "1", "handle", "800::1", "u32", "match", "u32", "0", "0",
                       "action", "mirred", "egress", "redirect", "dev", sender)]
    return out
