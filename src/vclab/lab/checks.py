"""The lab's own checks after a build: who reaches whom on each network, and whether a VM can
reach a management network it is not on (VLAN isolation). Each is a batch of pings from the
hosts' namespaces, tracked and ended by PID like every process the lab starts."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from vclab.lab.agent import Agent

if TYPE_CHECKING:
    from vclab.lab.lab import Lab

_PING_BATCH = 100  # pings in flight at once


def ping(lab: Lab, probes: list[tuple[str, str]], count: int = 1,
         devices: list[str] | None = None) -> list[bool]:
    """Ping (host, address) pairs, all at once: `ping -c COUNT -W 1` (from `devices[i]`
    if given). True where answered."""
    results: list[bool] = []
    for start in range(0, len(probes), _PING_BATCH):
        batch = probes[start:start + _PING_BATCH]
        pings = []
        for k, (host, address) in enumerate(batch):
            args = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1"]
            dev = devices[start + k] if devices else None
            if dev:
                args += ["-I", dev]
            pings.append(Agent(lab.node(host), [*args, address], lab.tracker,
                               f"{host}: ping {address}", stdout=False).spawn())
        for ping in pings:
            proc = ping.proc
            assert proc is not None
            proc.wait()
            results.append(proc.returncode == 0)
            ping.stop(drain_s=0)
    return results

def reachability(lab: Lab, networks: list[str] | None = None) -> dict[str, dict[tuple[str, str], bool]]:
    """Every member pings every other member, per network; a failed pair is retried once."""
    probes, keys = [], []
    for name, net in lab.plan.networks.items():
        if networks is not None and name not in networks:
            continue
        for src, _ in net.members:
            for dst, ip in net.members:
                if src != dst:
                    probes.append((src, ip))
                    keys.append((name, src, dst))
    ok = lab.ping(probes)
    again = [i for i, good in enumerate(ok) if not good]
    for i, good in zip(again, lab.ping([probes[i] for i in again])):
        ok[i] = good
    out: dict[str, dict[tuple[str, str], bool]] = {
        n: {} for n in lab.plan.networks if networks is None or n in networks}
    for (name, src, dst), good in zip(keys, ok):
        out[name][(src, dst)] = good
    return out

def isolation(lab: Lab) -> list[tuple[str, str, bool]]:
    """VLAN isolation: each VM, given a spare address of a management network on each of its
    interfaces, must reach none of that network's members. (vm, network, reached)."""
    vms = [h for h in lab.plan.hosts if h.role == "vm" and h.interfaces]
    out = []
    for net in lab.plan.networks.values():
        if net.kind != "management" or not net.members or not vms:
            continue
        taken = {ipaddress.IPv4Address(ip) for _, ip in net.members}
        spare = (a for a in reversed(list(net.subnet.hosts())) if a not in taken)
        added: list[tuple[str, str, str]] = []  # (vm, interface, address/len)
        try:
            for vm in vms:
                for iface in vm.interfaces:
                    address = f"{next(spare)}/{net.subnet.prefixlen}"
                    lab.host_sh(vm.name, ["ip", "addr", "add", address, "dev", iface.name])
                    added.append((vm.name, iface.name, address))
            probes, devs, owners = [], [], []
            for vm, dev, _ in added:
                for _, ip in net.members:
                    probes.append((vm, ip))
                    devs.append(dev)
                    owners.append(vm)
            reached = lab.ping(probes, count=2, devices=devs)
            for vm in vms:
                out.append((vm.name, net.name,
                            any(r for r, o in zip(reached, owners) if o == vm.name)))
        finally:
            for vm, dev, address in added:
                lab.host_sh(vm, ["ip", "addr", "del", address, "dev", dev], check=False)
    return out
