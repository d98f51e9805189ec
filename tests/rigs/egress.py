"""Where vclab's processes send: every IPv4/IPv6 destination (and raw-frame interface) in an
`strace -f -y` log, with the network namespace the sending thread was in, so a run can be
shown to keep its traffic inside the lab's namespaces or on loopback.

    strace -f -y --seccomp-bpf -e trace=<STRACE_SYSCALLS> -o trace.txt vclab run exp.yaml
    sends, binds = parse_trace(Path("trace.txt").read_text(), root_netns=os.readlink("/proc/self/ns/net"))
    leaks(sends, subnets)   # [] when nothing left the lab

The namespace of each thread is followed through clone/fork (inherited, or new with
CLONE_NEWNET), unshare(CLONE_NEWNET) and setns: `-y` names the namespace an fd refers to
(`net:[4026531833]`, or the `/run/netns/NAME` it was opened from). A socket keeps the namespace
it was created in; this reads the sender's namespace at send time, which is the same for every
vclab process (each enters its host before it opens a socket).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

STRACE_SYSCALLS = "connect,sendto,sendmsg,sendmmsg,bind,unshare,setns,clone,clone3,fork,vfork"
ROOT = "root"

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$", re.S)
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(.*)$", re.S)
_INET = re.compile(r'sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
_INET6 = re.compile(r'sa_family=AF_INET6, sin6_port=htons\((\d+)\),[^}]*?inet_pton\(AF_INET6, "([^"]+)"')
_PACKET = re.compile(r'sa_family=AF_PACKET,[^}]*?sll_ifindex=(?:if_nametoindex\("([^"]+)"\)|(\d+))')
_NSFD = re.compile(r"^\d+<([^>]*)>")
_SENDS = ("connect", "sendto", "sendmsg", "sendmmsg")
_CLONES = ("clone", "clone3", "fork", "vfork")


@dataclass(frozen=True)
class Send:
    """One destination named in a syscall (or the local address of a bind)."""

    pid: int
    syscall: str
    family: str   # inet, inet6 or packet
    address: str  # an IP address, or for packet sockets the interface name (or index)
    port: int
    netns: str    # ROOT, `net:[inode]`, `netns NAME` or `new(PID)`
    line: int     # 1-based line of the trace where the call started
    result: str   # "0", "64", "-1 ENETUNREACH (Network is unreachable)"

    def __str__(self) -> str:
        where = f"{self.address}:{self.port}" if self.family != "packet" else f"dev {self.address}"
        return (f"pid {self.pid} {self.syscall} {where} from {self.netns} "
                f"(trace line {self.line}, = {self.result})")


def _calls(text: str) -> list[tuple[int, int, str, str, str]]:
    """(line, pid, syscall, args, result) of every finished call, in the order the calls
    started; an `<unfinished ...>` call is joined with its `<... resumed>` rest."""
    pending: dict[int, tuple[int, str]] = {}
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        m = _LINE.match(raw)
        if not m:
            continue
        pid, body = int(m.group(1)), m.group(2)
        if body.startswith(("---", "+++")):
            continue
        start = n
        resumed = _RESUMED.match(body)
        if resumed:
            if pid not in pending:
                continue
            start, head = pending.pop(pid)
            body = head + resumed.group(2)
        elif body.endswith("<unfinished ...>"):
            pending[pid] = (n, body[: -len("<unfinished ...>")].rstrip())
            continue
        call = _CALL.match(body)
        if call:
            out.append((start, pid, call.group(1), call.group(2), (call.group(3) + call.group(4)).strip()))
    out.sort(key=lambda c: c[0])
    return out


def _target_netns(args: str, root_netns: str) -> str | None:
    m = _NSFD.match(args)
    if not m:
        return None
    target = m.group(1)
    if target == root_netns:
        return ROOT
    if target.startswith("net:["):
        return target
    if "/netns/" in target:
        return f"netns {target.rsplit('/', 1)[1]}"
    return None  # another kind of namespace (mnt, pid, ...): the network one is unchanged


def addresses(args: str) -> list[tuple[str, str, int]]:
    """(family, address, port) of every socket address in a syscall's arguments."""
    found = [(m.start(), "inet", m.group(2), int(m.group(1))) for m in _INET.finditer(args)]
    found += [(m.start(), "inet6", m.group(2), int(m.group(1))) for m in _INET6.finditer(args)]
    found += [(m.start(), "packet", m.group(1) or m.group(2), 0) for m in _PACKET.finditer(args)]
    return [(f, a, p) for _, f, a, p in sorted(found)]


def parse_trace(text: str, root_netns: str) -> tuple[list[Send], list[Send]]:
    """(destinations of connect/sendto/sendmsg/sendmmsg, local addresses of bind) in `strace
    -f -y` output; `root_netns` is the root namespace as -y prints it (readlink of
    /proc/self/ns/net outside any lab)."""
    netns: dict[int, str] = {}
    sends: list[Send] = []
    binds: list[Send] = []
    for line, pid, name, args, result in _calls(text):
        ns = netns.setdefault(pid, ROOT)  # a thread never seen being born is the traced root
        ok = not result.startswith("-")
        if name in _CLONES:
            if ok and result.isdigit():
                netns[int(result)] = f"new({result})" if "CLONE_NEWNET" in args else ns
        elif name == "unshare":
            if ok and "CLONE_NEWNET" in args:
                netns[pid] = f"new({pid})"
        elif name == "setns":
            target = _target_netns(args, root_netns)
            if ok and target is not None:
                netns[pid] = target
        elif name in _SENDS or name == "bind":
            for family, address, port in addresses(args):
                entry = Send(pid, name, family, address, port, ns, line, result)
                (binds if name == "bind" else sends).append(entry)
    return sends, binds


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def leaks(sends: Iterable[Send], subnets: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network],
          lab_links: str | None = None) -> list[tuple[Send, str]]:
    """The sends that could leave the lab, each with why: loopback (and the unspecified
    address, which the kernel sends to loopback) is fine from anywhere; a lab subnet only from
    inside a namespace (from the root one it would be routed by the machine's own table);
    anything else never. Raw frames are fine inside a namespace, or in the root one on a link
    whose name starts with `lab_links`."""
    nets = [ipaddress.ip_network(s) for s in subnets]
    out = []
    for s in sends:
        if s.family == "packet":
            if s.netns == ROOT and not (lab_links and s.address.startswith(lab_links)):
                out.append((s, "raw frames on a root-namespace interface that is not the lab's"))
            continue
        ip = _ip(s.address)
        if ip is None:
            out.append((s, "unreadable address"))
        elif ip.is_loopback or ip.is_unspecified:
            continue
        elif any(ip.version == n.version and ip in n for n in nets):
            if s.netns == ROOT:
                out.append((s, "a lab address, but sent from the root namespace"))
        else:
            out.append((s, "outside the lab's subnets and loopback"))
    return out


def exposed(binds: Iterable[Send]) -> list[Send]:
    """Binds in the root namespace to anything but loopback: a listener the outside could
    reach (inside a lab namespace any address is private to the lab)."""
    out = []
    for b in binds:
        ip = _ip(b.address)
        if b.netns == ROOT and b.family != "packet" and not (ip is not None and ip.is_loopback):
            out.append(b)
    return out
