"""Egress QoS for the fabric ports, as commands (argv lists) to run; nothing is run here.

Each network gets its own HTB class with its guaranteed share of the port (`min-rate`), able to
borrow up to the port rate or to the network's cap. OVS creates the classes (`qos
type=linux-htb`: queue n is tc class 1:(n+1), queue 0 = class 1:1 takes whatever no filter
claims). On the kernel datapath the controller's `set_queue` picks the queue. The userspace
(netdev) datapath ignores `set_queue`, so there the controller marks each network's DSCP and a
tc u32 filter per network moves its frames into its class. Measured on OVS 3.1 netdev: the
filter sees the IP header at offset 0 even though the frame leaves VLAN-tagged.
"""

from __future__ import annotations

from vclab.controller.model import FabricSpec, Network


def queue_of(spec: FabricSpec, net: Network) -> int:
    """OpenFlow queue id of a network (0 is the default class)."""
    return list(spec.networks).index(net) + 1


def port_qos_commands(ifname: str, networks: tuple[Network, ...], link_mbps: float,
                      use_set_queue: bool = False) -> list[list[str]]:
    """HTB queues on one OVS port, plus (netdev) the DSCP filters that fill them."""
    rate = int(link_mbps * 1e6)
    rest = max(100.0 - sum(n.share for n in networks), 1.0)  # unclassified traffic's share
    cmd = ["ovs-vsctl", "--", "set", "port", ifname, "qos=@q", "--", "--id=@q", "create", "qos",
           "type=linux-htb", f"other-config:max-rate={rate}"]
    cmd += [f"queues:{q}=@q{q}" for q in range(len(networks) + 1)]
    shares = [(rest, None)] + [(n.share, n.cap_mbps) for n in networks]
    for q, (share, cap) in enumerate(shares):
        ceiling = int(min(cap * 1e6, rate)) if cap else rate
        cmd += ["--", f"--id=@q{q}", "create", "queue",
                f"other-config:min-rate={int(rate * share / 100)}",
                f"other-config:max-rate={ceiling}"]
    out = [cmd]
    if not use_set_queue:
        for q, net in enumerate(networks, start=1):
            out += dscp_filter_commands(ifname, net.dscp, f"1:{q + 1:x}", prio=q)
    return out


def dscp_filter_commands(ifname: str, dscp: int, classid: str, prio: int) -> list[list[str]]:
    """u32 filters sending IPv4 and IPv6 frames with `dscp` to `classid`.

    Each filter also checks the IP version nibble so ARP and other non-IP frames never match."""
    base = ["tc", "filter", "add", "dev", ifname, "parent", "1:", "protocol", "all"]
    v4 = base + ["prio", str(2 * prio - 1), "u32", "match", "u8", "0x40", "0xf0", "at", "0",
                 "match", "u8", f"{dscp << 2:#04x}", "0xfc", "at", "1", "flowid", classid]
    v6 = base + ["prio", str(2 * prio), "u32", "match", "u16", f"{0x6000 | dscp << 6:#06x}",
                 "0xffc0", "at", "0", "flowid", classid]
    return [v4, v6]


def fabric_qos_commands(spec: FabricSpec) -> list[list[str]]:
    """Commands for every fabric-switch port whose kernel name the spec gives."""
    names = [lk.a_ifname for lk in spec.links] + [lk.b_ifname for lk in spec.links]
    names += [up.ifname for att in spec.attachments for up in att.uplinks]
    out: list[list[str]] = []
    for ifname in names:
        if ifname:
            out += port_qos_commands(ifname, spec.networks, spec.options.link_mbps,
                                     spec.options.use_set_queue)
    return out


def meter_commands(spec: FabricSpec, bridge: str) -> list[list[str]]:
    """The same meters the controller installs, for a fabric run without it (e.g. RSTP)."""
    out = []
    for i, net in enumerate(spec.networks):
        if net.cap_mbps:
            kbps = int(net.cap_mbps * 1000)
            out.append(["ovs-ofctl", "-O", "OpenFlow13", "add-meter", bridge,
                        f"meter={i + 1},kbps,burst,band=type=drop,rate={kbps},"
                        f"burst_size={max(kbps // 10, 1)}"])
    return out


def removal_commands(ifname: str, qos_uuid: str, queue_uuids: list[str]) -> list[list[str]]:
    """Undo `port_qos_commands`: QoS and Queue rows outlive their port, so name them by UUID
    (read them with `ovs-vsctl get port IF qos` and `ovs-vsctl get qos UUID queues`)."""
    cmd = ["ovs-vsctl", "--if-exists", "clear", "port", ifname, "qos",
           "--", "--if-exists", "destroy", "qos", qos_uuid]
    for uuid in queue_uuids:
        cmd += ["--", "--if-exists", "destroy", "queue", uuid]
    return [cmd]
