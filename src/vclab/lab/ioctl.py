"""Root-namespace interface changes by ioctl: no process start, so the moment is known."""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def link_updown(ifname: str, up: bool) -> None:
    """Set a root-namespace interface up or down with one ioctl: a fault whose applied time is
    known to ~0.1 ms, where `ip link set` costs a process start (5-20 ms on a busy host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH", ifname.encode(), 0).ljust(40, b"\0")
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        flags = flags | IFF_UP if up else flags & ~IFF_UP
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", ifname.encode(), flags).ljust(40, b"\0"))
