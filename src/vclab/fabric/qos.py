"""Egress QoS as tc commands (argv lists) to run; nothing is run here.

One HTB tree per port, wherever it is used (fabric switch ports, hypervisor uplinks):

    root 1: (default 1:1)
      1:fffe     the cable's rate
        1:1      traffic no network claims: the shares' remainder
        1:(q+1)  network q (1-based): its share guaranteed (`rate`), borrowing up to the cable
                 rate or its cap (`ceil`); spare bandwidth is lent in proportion to the shares

The numbering is OVS's own (queue q = class 1:(q+1)), so on the kernel datapath OpenFlow
`set_queue` picks the class (it sets the skb priority). The userspace (netdev) datapath ignores
`set_queue`; there filters fill the classes:
- fabric switch ports: the controller marks each network's DSCP where frames enter the fabric,
  and a u32 filter per network matches it (OVS 3.1 netdev: u32 offset 0 is the IP header even
  though the frame leaves VLAN-tagged);
- hypervisor uplinks (vSphere's NIOC: shares on the virtual switch's uplinks, before the cable):
  a frame's VLAN is its network. netdev sends the 802.1Q tag in the packet data, so a u32 filter
  matches TPID and VLAN id just before the IP header (flower and basic are not in every kernel;
  measured: 20/20 pings per VLAN in their class). The kernel datapath carries the tag as skb
  metadata, which only `basic match meta(vlan)` sees (not measured here: no kernel datapath).

The tree replaces the root qdisc, so it replaces the cable's own shaping at the same rate;
`topology.plan.shape_commands` puts the plain cable back.

Bounded class queues on netdev: ovs-vswitchd sends on every port through ONE AF_PACKET socket
whose send buffer is net.core.wmem_default at its start (208 KiB on Debian). Frames waiting in
any port's qdisc hold that buffer, and once it is full every send on every port fails (EAGAIN,
dropped before any classifier sees it): a saturating UDP flow starved the storage class anyway
(storage TCP 0.1-0.4 Mbit/s of a 100 Mbit/s cable with its 40 % class). scripts/install.sh
raises wmem_default to 8 MiB before OVS starts, and each class queue is bounded, so one
flooded class holds little of it (qos-contention: storage 47 Mbit/s of its 30 %).

The bound is in bytes (bfifo), not frames, and as deep as a TCP stream at the cable's rate
needs. It was 8 frames (pfifo). With TSO a "frame" in a qdisc is anything from a 64-byte
probe to a 64 KiB segment, and the baseline mechanisms' cable queue holds 1000 of them, so
only sdn dropped under a burst. Measured on the default cluster (sdn, esx1's first uplink cut
during a vMotion, `tc -s qdisc` every 0.5 s):
- 8 frames: 114 drops in one class on esx1's second uplink and tor-b's inter-switch port in
  the 1.5 s after the cut; the vmotion probe lost 90 probes in that second;
- 250 KB (4 ms of the cable): 96-106 probes lost, since TCP fills any tail-drop queue;
- 2 MiB: no drop at all. The probes lost only what the cut itself cost (2-13 each), and the
  outage spread shrank (vmotion 8-13 ms, was 8-16; vm-web 8-12, was 9-24).
Four full class queues still fit in the 8 MiB send buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vclab.fabric.controller.model import FabricSpec, Network
from vclab.topology.commands import Ofctl, Tc

NETDEV_QUEUE_BYTES = 2 * 1024 * 1024  # per class, userspace datapath (see above)
FRAME = 1518  # bytes of a full-size tagged frame: the HTB quantum unit


# TCP payload per tagged full-size frame: 1448 of 1518 bytes (20 IP + 32 TCP with timestamps,
# 18 Ethernet + 4 tag; the preamble and gap do not exist on a veth).
TCP_GOODPUT = 1448 / 1518


def share_floor_bps(share: float, rate_bps: float, tolerance: float = 0.1) -> float:
    """The least TCP goodput a class with `share` % of a `rate_bps` cable must measure to
    count as having had its share: the share's frames minus their headers, minus `tolerance`
    (HTB's token timing and iperf3's interval edges on a busy machine)."""
    return share / 100 * rate_bps * TCP_GOODPUT * (1 - tolerance)


def queue_of(spec: FabricSpec, net: Network) -> int:
    """OpenFlow queue id of a network (0 is the default class)."""
    return list(spec.networks).index(net) + 1


def _burst(rate_bps: float) -> int:
    # 1 ms at the rate, at least 64 KiB (one TSO segment), as the cable shaping does.
    return max(int(rate_bps) // 8 // 1000, 65536)


def htb_tree_commands(dev: str, rate_bps: float, networks: Sequence[Network],
                      classify: str = "dscp", bounded: bool = False,
                      subnets: dict[int, str] | None = None) -> list[list[str]]:
    """The HTB tree on `dev` with one class per network, and the filters that fill them.

    classify: "dscp" (u32 on the IP header), "vlan" (u32 on the 802.1Q tag in the packet
    data: netdev), "vlan-meta" (the tag as skb metadata: kernel datapath), "subnet" (u32 on
    the IPv4 source, the network's subnet from `subnets` by VLAN: a wired cable, see
    subnet_filter_command) or "queue" (no filters: OpenFlow set_queue chooses). bounded:
    each class gets a bfifo of NETDEV_QUEUE_BYTES (userspace datapath); else the device's
    default queue."""
    if classify not in ("dscp", "vlan", "vlan-meta", "subnet", "queue"):
        raise ValueError(f"classify is dscp, vlan, vlan-meta, subnet or queue, not {classify!r}")
    rate = int(rate_bps)
    burst = _burst(rate)
    rest = max(100.0 - sum(n.share for n in networks), 1.0)  # unclassified traffic's share
    out = [Tc("qdisc", "replace", dev, "root", "handle", "1:", "htb", "default", "1"),
           Tc("class", "replace", dev, "parent", "1:", "classid", "1:fffe", "htb",
              "rate", f"{rate}bit", "ceil", f"{rate}bit", "burst", str(burst), "cburst", str(burst))]
    for q, (share, cap_mbps) in enumerate([(rest, None)] + [(n.share, n.cap_mbps) for n in networks]):
        ceil = int(min(cap_mbps * 1e6, rate)) if cap_mbps else rate
        guaranteed = max(int(rate * share / 100), 8000)  # HTB needs a rate; a share of 0 borrows only
        classid = f"1:{q + 1:x}"
        # Quantum in proportion to the share: what is spare is lent by shares, as NIOC does.
        quantum = FRAME * max(1, round(share / 5))
        out.append(Tc("class", "replace", dev, "parent", "1:fffe", "classid", classid,
                      "htb", "rate", f"{guaranteed}bit", "ceil", f"{ceil}bit",
                      "burst", str(_burst(guaranteed)), "cburst", str(burst), "quantum", str(quantum)))
        if bounded:
            out.append(Tc("qdisc", "replace", dev, "parent", classid, "handle", f"{q + 0x10:x}:",
                          "bfifo", "limit", str(NETDEV_QUEUE_BYTES)))
    for q, net in enumerate(networks, start=1):
        classid = f"1:{q + 1:x}"
        if classify == "dscp":
            out += dscp_filter_commands(dev, net.dscp, classid, prio=q)
        elif classify in ("vlan", "vlan-meta"):
            out.append(vlan_filter_command(dev, net.vlan, classid, prio=q,
                                           in_data=classify == "vlan"))
        elif classify == "subnet" and subnets and net.vlan in subnets:
            out.append(subnet_filter_command(dev, subnets[net.vlan], classid, prio=q))
    return out


def subnet_filter_command(ifname: str, subnet: str, classid: str, prio: int) -> list[str]:
    """A filter sending IPv4 frames from `subnet` to `classid`: a network's frames by its
    addresses. On a wired cable (topology/wire.py) the frame has crossed a veth's receive
    path, which moves the 802.1Q tag into metadata, and this kernel has no classifier that
    reads it there (no basic/flower): each network has its own subnet, so the source
    address says the same. Non-IPv4 frames (ARP) go to the default class."""
    # protocol all, and the version nibble checked instead: with the tag in metadata, tc
    # takes the frame's protocol to be 802.1Q
    return Tc("filter", "add", ifname, "parent", "1:", "protocol", "all", "prio", str(prio),
              "u32", "match", "u8", "0x40", "0xf0", "at", "0", "match", "ip", "src", subnet,
              "flowid", classid)


def port_qos_commands(ifname: str, networks: Sequence[Network], link_mbps: float,
                      use_set_queue: bool = False) -> list[list[str]]:
    """The tree on one fabric switch port: netdev fills it by DSCP, the kernel by set_queue."""
    return htb_tree_commands(ifname, link_mbps * 1e6, networks,
                             "queue" if use_set_queue else "dscp",
                             bounded=not use_set_queue)


def dscp_filter_commands(ifname: str, dscp: int, classid: str, prio: int) -> list[list[str]]:
    """u32 filters sending IPv4 and IPv6 frames with `dscp` to `classid`.

    Each filter also checks the IP version nibble so ARP and other non-IP frames never match."""
    base = ["parent", "1:", "protocol", "all"]
    v4 = Tc("filter", "add", ifname, *base, "prio", str(2 * prio - 1), "u32", "match", "u8",
            "0x40", "0xf0", "at", "0", "match", "u8", f"{dscp << 2:#04x}", "0xfc", "at", "1",
            "flowid", classid)
    v6 = Tc("filter", "add", ifname, *base, "prio", str(2 * prio), "u32", "match", "u16",
            f"{0x6000 | dscp << 6:#06x}", "0xffc0", "at", "0", "flowid", classid)
    return [v4, v6]


def vlan_filter_command(ifname: str, vlan: int, classid: str, prio: int,
                        in_data: bool = True) -> list[str]:
    """A filter sending frames of `vlan` to `classid`.

    In the packet data the tag sits right before the network header, which is where u32
    offsets count from: TPID at -6, VLAN id (low 12 bits of the TCI) at -4. The TPID check
    keeps untagged frames out (their -6 is inside the source MAC)."""
    base = ["parent", "1:", "protocol", "all", "prio", str(prio)]
    if in_data:
        return Tc("filter", "add", ifname, *base, "u32", "match", "u16", "0x8100", "0xffff",
                  "at", "-6", "match", "u16", f"{vlan:#06x}", "0x0fff", "at", "-4",
                  "flowid", classid)
    return Tc("filter", "add", ifname, *base, "basic", "match",
              f"meta(vlan mask 0xfff eq {vlan})", "classid", classid)


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


def uplink_qos_commands(uplinks: Iterable[tuple[str, Sequence[int], float | None]],
                        networks: Sequence[Network], kernel_datapath: bool = False,
                        subnets: dict[int, str] | None = None) -> list[list[str]]:
    """NIOC: the tree on each (device, VLANs it carries, cable rate) uplink of a virtual
    switch, classified by VLAN (by the network's subnet when `subnets` is given: wired
    cables). Only the networks an uplink carries get a class; an uplink that carries one
    network or none with a share, or has no rate to share out, is left as it is (a storage
    array's portal carries one VLAN)."""
    out: list[list[str]] = []
    classify = "subnet" if subnets else "vlan-meta" if kernel_datapath else "vlan"
    for dev, vlans, rate_bps in uplinks:
        mine = [n for n in networks if n.vlan in vlans]
        if not rate_bps or len(mine) < 2 or not any(n.share for n in mine):
            continue
        out += htb_tree_commands(dev, rate_bps, mine, classify, bounded=not kernel_datapath,
                                 subnets=subnets)
    return out


def meter_commands(spec: FabricSpec, bridge: str) -> list[list[str]]:
    """The same meters the controller installs, for a fabric run without it (e.g. RSTP)."""
    out = []
    for i, net in enumerate(spec.networks):
        if net.cap_mbps:
            kbps = int(net.cap_mbps * 1000)
            out.append(Ofctl("add-meter", bridge,
                             f"meter={i + 1},kbps,burst,band=type=drop,rate={kbps},"
                             f"burst_size={max(kbps // 10, 1)}", options=("-O", "OpenFlow13")))
    return out
