"""Root-namespace interface changes by ioctl: no process start, so the moment is known."""

from __future__ import annotations

import array
import fcntl
import socket
import struct

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SIOCETHTOOL, ETHTOOL_GLINK = 0x8946, 0x0000000A


def link_updown(ifname: str, up: bool) -> None:
    """Set a root-namespace interface up or down with one ioctl: a fault whose applied time is
    known to ~0.1 ms, where `ip link set` costs a process start (5-20 ms on a busy host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH", ifname.encode(), 0).ljust(40, b"\0")
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        flags = flags | IFF_UP if up else flags & ~IFF_UP
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", ifname.encode(), flags).ljust(40, b"\0"))


def link_carrier(ifname: str) -> bool:
    """The interface's carrier (ETHTOOL_GLINK). Asking also makes the kernel publish a carrier
    change still waiting for its link-watch worker (veth's get_link syncs it), so listeners such
    as ovs-vswitchd hear of it now, not when that worker gets a CPU."""
    value = array.array("B", struct.pack("II", ETHTOOL_GLINK, 0))
    address, _ = value.buffer_info()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCETHTOOL, struct.pack("16sP", ifname.encode(), address).ljust(40, b"\0"))
    return bool(struct.unpack("II", value.tobytes())[1])
