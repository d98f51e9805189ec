"""What this kernel and userland offer, probed for real, and what each missing piece means.

Each probe creates a throw-away object and removes it: the only reliable way to know whether
e.g. netem or 802.1Q works is to try, since a kernel without loadable modules may list a feature
it cannot load. The objects are named `vcd_<PID in hex>_...` (see `probe_name`): two runs starting
at once never delete each other's, and `vclab clean` removes those of a probe that was killed."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from vclab.lab.executor import run_short


PROBE_NAME = re.compile(r"^vcd_([0-9a-f]+)_")


def probe_name(suffix: str, pid: int | None = None) -> str:
    """`vcd_<pid hex>_<suffix>`: at most 14 characters with the suffixes used here
    (interface names allow 15)."""
    return f"vcd_{os.getpid() if pid is None else pid:x}_{suffix}"


def probe_owner(name: str) -> int | None:
    """The PID whose probe created an object of this name, or None if it is no probe's."""
    m = PROBE_NAME.match(name)
    return int(m.group(1), 16) if m else None


@dataclass(frozen=True)
class Capability:
    name: str
    available: bool
    detail: str
    missing_means: str  # what an experiment loses without it

    def as_dict(self) -> dict:
        return asdict(self)


def _ok(args: list[str]) -> tuple[bool, str]:
    """Whether it succeeded, and the last line it said (why it failed)."""
    p = run_short(args)
    said = (p.stderr or p.stdout).strip().splitlines()
    return p.returncode == 0, said[-1] if said else ""


def _quiet(args: list[str]) -> None:
    run_short(args)


def _ovs_kernel_datapath() -> tuple[bool, str]:
    ok, out = _ok(["ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".", "datapath_types"])
    if not ok:
        return False, "ovs-vswitchd is not running"
    if "system" not in out:
        return False, f"datapath types {out}"
    # The type is listed even without the kernel module: try a bridge and read its error.
    br = probe_name("br")
    _quiet(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", br])  # a dead namesake's
    try:
        ok, _ = _ok(["ovs-vsctl", "--timeout=5", "add-br", br, "--", "set", "bridge", br,
                     "datapath_type=system"])
        if not ok:
            return False, "cannot create a system bridge"
        _, err = _ok(["ovs-vsctl", "--timeout=5", "get", "Interface", br, "error"])
        _, ofport = _ok(["ovs-vsctl", "--timeout=5", "get", "Interface", br, "ofport"])
        if ofport.strip() in ("-1", "[]") or (err and err not in ("[]", '""')):
            return False, "no openvswitch kernel module"
        return True, "openvswitch kernel module present"
    finally:
        _quiet(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", br])


def _with_veth(check) -> tuple[bool, str]:
    a, b = probe_name("a"), probe_name("b")
    _quiet(["ip", "link", "del", a])
    try:  # from the add on: Ctrl-C while `ip` runs may come after it created the pair
        ok, out = _ok(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        if not ok:
            return False, f"no veth: {out}"
        return check(a)
    finally:
        _quiet(["ip", "link", "del", a])


def _afxdp() -> tuple[bool, str]:
    """An AF_XDP port in native mode on a veth of a netdev bridge: OVS lists `afxdp` whether or
    not the kernel lets it bind, so add one and read its error."""
    ok, types = _ok(["ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".", "iface_types"])
    if not ok:
        return False, "ovs-vswitchd is not running"
    if "afxdp" not in types:
        return False, "this Open vSwitch was built without AF_XDP"

    def check(dev: str) -> tuple[bool, str]:
        br = probe_name("br")
        _quiet(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", br])
        try:
            _quiet(["ip", "link", "set", dev, "up"])
            ok, out = _ok(["ovs-vsctl", "--timeout=10", "add-br", br, "--", "set", "bridge", br,
                           "datapath_type=netdev", "--", "add-port", br, dev, "--", "set",
                           "interface", dev, "type=afxdp", "options:xdp-mode=native"])
            if not ok:
                return False, out
            _, err = _ok(["ovs-vsctl", "--timeout=5", "get", "Interface", dev, "error"])
            _, ofport = _ok(["ovs-vsctl", "--timeout=5", "get", "Interface", dev, "ofport"])
            if ofport.strip() in ("-1", "[]") or (err and err not in ("[]", '""')):
                return False, f"an afxdp port does not bind here: {err}"
            return True, "native-mode AF_XDP ports bind on veths"
        finally:
            _quiet(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", br])
    return _with_veth(check)


def _qdisc(kind: str, *params: str):
    def check(dev: str) -> tuple[bool, str]:
        ok, out = _ok(["tc", "qdisc", "add", "dev", dev, "root", kind, *params])
        return ok, "works" if ok else out
    return lambda: _with_veth(check)


def _vlan() -> tuple[bool, str]:
    def check(dev: str) -> tuple[bool, str]:
        ok, out = _ok(["ip", "link", "add", "link", dev, "name", f"{dev}.5", "type", "vlan", "id", "5"])
        _quiet(["ip", "link", "del", f"{dev}.5"])
        return ok, "works" if ok else out
    return _with_veth(check)


def _link_kind(kind: str, *extra: str):
    def probe() -> tuple[bool, str]:
        name = probe_name("x")
        _quiet(["ip", "link", "del", name])
        try:
            ok, out = _ok(["ip", "link", "add", name, "type", kind, *extra])
        finally:  # Ctrl-C in a run's first second must not leave the probe's device
            _quiet(["ip", "link", "del", name])
        return ok, "works" if ok else out
    return probe


def _tool(name: str):
    def probe() -> tuple[bool, str]:
        path = shutil.which(name)
        return (path is not None, path or "not installed")
    return probe


def _module(name: str):
    def probe() -> tuple[bool, str]:
        spec = importlib.util.find_spec(name)
        return (spec is not None, spec.origin if spec and spec.origin else "not importable")
    return probe


def _tso() -> tuple[bool, str]:
    ok, out = _ok(["ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".",
                   "other_config:userspace-tso-enable"])
    on = ok and out.strip('"') == "true"
    return on, "enabled" if on else "off"


SEND_BUFFER = 8 << 20  # bytes; what scripts/install.sh sets net.core.wmem_default to


def ovs_send_buffer(ss_output: str) -> int | None:
    """The send buffer (bytes) of ovs-vswitchd's one packet socket for sending (protocol 0)
    from `ss -0 -a -p -m`; None when it has none yet (no userspace-datapath port so far)."""
    for line in ss_output.splitlines():
        if '"ovs-vswitchd"' in line and "[0]:*" in line:
            m = re.search(r"\btb(\d+)", line)
            if m:
                return int(m.group(1))
    return None


def _send_buffer() -> tuple[bool, str]:
    ok, out = _ok(["ss", "-0", "-a", "-p", "-m"])
    size = ovs_send_buffer(out) if ok else None
    if size is None:
        size = int(Path("/proc/sys/net/core/wmem_default").read_text())
        where = "net.core.wmem_default (OVS has no packet socket yet)"
    else:
        where = "ovs-vswitchd's packet socket"
    return size >= SEND_BUFFER, f"{size // 1024} KiB, {where}"


RECEIVE_BUFFER = 8 << 20  # bytes; what scripts/install.sh sets net.core.rmem_default to


def ovs_receive_buffer(ss_output: str) -> int | None:
    """The smallest receive buffer (bytes) among ovs-vswitchd's per-port packet sockets (the
    ones bound to an interface) from `ss -0 -a -p -m`; None when it has no port yet."""
    sizes = [int(m.group(1)) for line in ss_output.splitlines()
             if '"ovs-vswitchd"' in line and "[0]:*" not in line
             and (m := re.search(r"\brb(\d+)", line))]
    return min(sizes) if sizes else None


def _receive_buffer() -> tuple[bool, str]:
    ok, out = _ok(["ss", "-0", "-a", "-p", "-m"])
    size = ovs_receive_buffer(out) if ok else None
    default = int(Path("/proc/sys/net/core/rmem_default").read_text())
    if size is None:
        size, where = default, "net.core.rmem_default (OVS has no port yet)"
    else:
        # A lab built now gets the current default: that is what the next measurement sees.
        size, where = default, f"net.core.rmem_default; smallest existing port socket {size // 1024} KiB"
    return size >= RECEIVE_BUFFER, f"{size // 1024} KiB, {where}"


# name, probe, what its absence means
PROBES = [
    ("ovs-kernel-datapath", _ovs_kernel_datapath,
     "OVS runs on the userspace datapath (netdev): OpenFlow set_queue is ignored, QoS uses tc "
     "filters on DSCP instead; throughput is lower"),
    ("ovs-userspace-tso", _tso,
     "TCP through the userspace datapath hangs: run scripts/install.sh, which enables it"),
    ("ovs-send-buffer", _send_buffer,
     "userspace datapath: a flooded cable starves every other port (frames queued on it fill "
     "ovs-vswitchd's one packet-socket send buffer): run scripts/install.sh, which raises "
     "net.core.wmem_default and restarts Open vSwitch"),
    ("ovs-receive-buffer", _receive_buffer,
     "userspace datapath: probes are lost with no fault at all (each port's packet socket "
     "holds only three 64 KiB TSO frames, so any storage or vMotion burst while ovs-vswitchd "
     "is busy overflows it): run scripts/install.sh, which raises net.core.rmem_default"),
    ("ovs-afxdp", _afxdp,
     "no AF_XDP ports: ovs-vswitchd's main thread polls every port itself, and its load "
     "shows in every failover (docs/noise.md)"),
    ("bonding-driver", _link_kind("bond"),
     "no kernel bonds: NIC teams are OVS bonds (they work on both datapaths)"),
    ("vlan-8021q", _vlan,
     "no VLAN devices: VLANs are tagged by the hypervisors' OVS virtual switches (as vclab does anyway)"),
    ("netem", _qdisc("netem", "delay", "1ms"),
     "no netem: link delay/loss unavailable; links have bandwidth limits only"),
    ("htb", _qdisc("htb"), "no HTB: no per-class QoS shares and no link rate via htb"),
    ("tbf", _qdisc("tbf", "rate", "1mbit", "burst", "10kb", "latency", "50ms"),
     "no TBF: link rates use HTB only"),
    ("linux-bridge-stp", _link_kind("bridge", "stp_state", "1"),
     "no Linux bridge STP: the linux-stp mechanism is unavailable"),
    ("mininet", _module("mininet"), "cannot build clusters: install Debian's mininet package"),
    ("os-ken", _module("os_ken"), "the sdn mechanism (vclab controller) is unavailable"),
    ("iperf3", _tool("iperf3"), "no bulk-load workload"),
    ("tgtd", _tool("tgtd"), "no iSCSI target: the storage workload is unavailable"),
    ("libiscsi", _tool("iscsi-ls"), "no iSCSI initiator: the storage workload is unavailable"),
    ("tcpdump", _tool("tcpdump"), "no packet captures of failover windows"),
]


def probe_all() -> list[Capability]:
    out = []
    for name, probe, means in PROBES:
        try:
            ok, detail = probe()
        except Exception as e:  # a probe must never stop the report
            ok, detail = False, f"probe failed: {e}"
        out.append(Capability(name, ok, detail, means))
    return out


def has(caps: list[Capability], name: str) -> bool:
    return any(c.name == name and c.available for c in caps)


def best_datapath(caps: list[Capability]) -> str:
    """`system` (kernel) where the module exists, else `netdev` (userspace)."""
    return "system" if has(caps, "ovs-kernel-datapath") else "netdev"
