"""What the runner stores beside the results so they explain themselves later: the host and the
versions of every tool that took part (a failover time means little without the OVS version)."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

import vclab
from vclab.lab.executor import MISSING, TIMED_OUT, run_short

# tool -> the command that prints its version; a tool that is missing is simply not listed
TOOLS: dict[str, list[str]] = {
    "openvswitch": ["ovs-vswitchd", "--version"],
    "iperf3": ["iperf3", "--version"],
    "tgt": ["tgtadm", "--version"],
    "mininet": ["mn", "--version"],
    "iproute2": ["ip", "-V"],
}
PACKAGES = ("os-ken", "scapy", "pydantic", "matplotlib", "numpy", "rich", "typer", "cython-iscsi", "PYSCSI")


def version_from(text: str) -> str | None:
    """The first version number in a tool's banner: 'ovs-vswitchd (Open vSwitch) 3.1.0' -> 3.1.0."""
    m = re.search(r"\d+\.\d+(?:\.\d+)*(?:[-+~][\w.]+)?", text)
    return m.group(0) if m else None


def _tool_version(args: list[str]) -> str | None:
    p = run_short(args, timeout=5)
    if p.returncode in (MISSING, TIMED_OUT):
        return None
    out = (p.stdout or p.stderr).strip().splitlines()
    return version_from(out[0]) if out else None


def software_versions() -> dict[str, str]:
    found = {"vclab": vclab.__version__, "python": platform.python_version(), "kernel": platform.release()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    for name, args in TOOLS.items():
        version = _tool_version(args)
        if version:
            found[name] = version
    return found


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "?"


def host_info() -> dict[str, object]:
    return {"hostname": platform.node(), "os": _os_name(), "kernel": platform.release(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "memory": _memory()}
