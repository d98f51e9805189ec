"""A build plan's commands, generated before anything runs (and checked by the unit tests):
one ovs-vsctl transaction per bridge with its loop protection, merged for the build; the
switch ports' IPv6 off; tc shaping of the cables; each host's own set-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vclab.topology.commands import Sysctl, Tc, Vsctl
from vclab.topology.plan import Bond, Bridge, BuildPlan, Host, Shape

if TYPE_CHECKING:
    from vclab.fabric.mechanisms import Mechanism


def ovs_commands(plan: BuildPlan, datapath: str = "netdev", mechanism: Mechanism | None = None,
                 run_id: str = "") -> list[list[str]]:
    """One ovs-vsctl transaction per bridge: the bridge, its loop protection and every port at
    once, so a looped fabric never forwards a frame before STP/RSTP is on; then the
    mechanism's own commands. The readable form: `build_commands` is what a build runs."""
    commands = bridge_transactions(plan, datapath, mechanism, run_id)
    if mechanism is not None:
        commands += mechanism.commands(plan)
    return commands


def build_commands(plan: BuildPlan, datapath: str = "netdev", mechanism: Mechanism | None = None,
                   run_id: str = "", bridges: set[str] | None = None,
                   ports: str = "system", queues: int = 1) -> list[list[str]]:
    """What a build runs: `ovs_commands` with the bridges' transactions merged into one (or a
    few, see `merge_transactions`). ovs-vswitchd reconfigures once per transaction, and a
    reconfiguration walks every bridge and port it has: one per bridge made the build
    quadratic in the cluster's size (19 of 29 s at 64 hypervisors). Every bridge still gets
    its loop protection in the transaction that creates it. `bridges`: only those (one
    server's, in cluster mode); the mechanism's commands then only with every bridge. `ports`:
    the interface type of every veth port (`system`, or `afxdp`: see topology/wire.py), and
    `queues` the receive queues of a veth here."""
    chosen = [b for b in plan.bridges if bridges is None or b.name in bridges]
    commands = merge_transactions(bridge_transactions(plan, datapath, mechanism, run_id, chosen,
                                                      ports, queues))
    if mechanism is not None and bridges is None:
        commands += mechanism.commands(plan)
    return commands


# ovs-vsctl gets its transaction as arguments: stay far below Linux's 2 MiB ARG_MAX (with the
# default 8 MiB stack) whatever the cluster's size.
MAX_TRANSACTION_BYTES = 512 * 1024
MAX_TRANSACTION_TIMEOUT = 300


def merge_transactions(commands: list[list[str]],
                       max_bytes: int = MAX_TRANSACTION_BYTES) -> list[list[str]]:
    """Join consecutive `ovs-vsctl --timeout=T OP ...` transactions into one (ovs-vsctl joins
    operations with `--`, all or nothing), starting a new one before it would pass `max_bytes`
    of arguments. The merged timeout is the sum of the parts' (at most 300 s): as long as
    they were allowed together. Anything else is kept as it is, in order."""
    out: list[list[str]] = []
    current: list[str] | None = None
    devices: list[str] = []
    timeout = size = 0

    def flush() -> None:
        nonlocal current
        if current is not None:
            out.append(Vsctl([f"--timeout={min(timeout, MAX_TRANSACTION_TIMEOUT)}", *current],
                             devices))
            current = None

    for cmd in commands:
        t = _vsctl_timeout(cmd)
        if t is None:
            flush()
            out.append(cmd)
            continue
        ops, cost = cmd[2:], sum(len(a) + 1 for a in cmd[2:])
        if current is not None and size + cost > max_bytes:
            flush()
        if current is None:
            current, timeout, size, devices = list(ops), t, cost, []
        else:
            current += ["--", *ops]
            timeout, size = timeout + t, size + cost + 3
        devices += getattr(cmd, "devices", ())
    flush()
    return out


def _vsctl_timeout(cmd: list[str]) -> int | None:
    """T of `ovs-vsctl --timeout=T OP ...` (no other global option), else None."""
    if len(cmd) < 3 or cmd[0] != "ovs-vsctl" or not cmd[1].startswith("--timeout="):
        return None
    if cmd[2].startswith("-"):
        return None
    try:
        return int(cmd[1].split("=", 1)[1])
    except ValueError:
        return None


def bridge_transactions(plan: BuildPlan, datapath: str = "netdev",
                        mechanism: Mechanism | None = None, run_id: str = "",
                        bridges: list[Bridge] | None = None,
                        ports: str = "system", queues: int = 1) -> list[list[str]]:
    """One ovs-vsctl transaction per bridge (of `bridges`, default all)."""
    commands = []
    for bridge in plan.bridges if bridges is None else bridges:
        if mechanism is not None and not mechanism.on_ovs(bridge):
            continue  # e.g. linux-stp: the mechanism's own commands make this switch
        options = mechanism.bridge_options(bridge) if mechanism is not None else []
        # A mechanism may choose the fail mode (sdn: secure, nothing forwards without rules).
        fail_mode = [] if any(o.startswith("fail_mode=") for o in options) else ["fail_mode=standalone"]
        cmd = ["--timeout=30", "add-br", bridge.name, "--", "set", "bridge",
               bridge.name, f"datapath_type={datapath}", *fail_mode,
               f"other_config:datapath-id={bridge.dpid}", f"other_config:hwaddr={bridge.hwaddr}",
               f"external_ids:vclab-name={bridge.friendly}",
               f"external_ids:vclab-kind={bridge.kind}"]
        if run_id:
            cmd.append(f"external_ids:vclab-run={run_id}")
        cmd += options
        for port in bridge.ovs_ports():
            vlan = ([f"tag={port.vlans[0]}"] if port.role == "access" else
                    ["vlan_mode=trunk", "trunks=" + ",".join(map(str, port.vlans))])
            extra = mechanism.port_options(bridge, port) if mechanism is not None else []
            if isinstance(port, Bond):
                cmd += ["--", "add-bond", bridge.name, port.name, *port.members, *vlan,
                        *_bond_columns(port), *extra]
                members = [bridge.port(m) for m in port.members]
            else:
                cmd += ["--", "add-port", bridge.name, port.name, *vlan, *extra]
                members = [port]
            for iface in members:
                cmd += ["--", "set", "interface", iface.name, f"ofport_request={iface.ofport}",
                        f'external_ids:vclab-link="{iface.link}"',
                        f'external_ids:vclab-peer="{iface.peer}"']
                cmd += port_type_options(ports, queues)
                if mechanism is not None:
                    cmd += mechanism.interface_options(bridge, iface)
        if mechanism is not None:
            cmd += mechanism.transaction(bridge)
        names = [bridge.name, *(p.name for p in bridge.ovs_ports()),
                 *(m for p in bridge.ovs_ports() if isinstance(p, Bond) for m in p.members)]
        commands.append(Vsctl(cmd, names))
    return commands


def port_type_options(ports: str, queues: int = 1) -> list[str]:
    """Interface columns of a veth port of this type. `afxdp` in native mode: veths run XDP
    in their own NAPI (generic mode copies every frame into an skb first). A veth has one
    receive queue per CPU and the sender's CPU picks it: each needs its own AF_XDP socket, or
    what lands on the others is dropped (`queues`: how many a veth has here)."""
    if ports == "afxdp":
        return ["type=afxdp", "options:xdp-mode=native", f"options:n_rxq={queues}"]
    return []


def _bond_columns(bond: Bond) -> list[str]:
    if bond.mode == "lacp":
        # lb-output-action: the userspace datapath picks the member itself, from a table the
        # main loop rewrites when a member goes down (no revalidation round: 0-2 ms measured).
        # Datapaths without it fall back to recirculation.
        return ["bond_mode=balance-tcp", "lacp=active", "other_config:lacp-time=fast",
                "other_config:lb-output-action=true"]
    cols = [f"bond_mode={bond.mode}"]
    if bond.primary:
        cols.append(f"other_config:bond-primary={bond.primary}")
    return cols


def ipv6_off_commands(ifnames: list[str]) -> list[list[str]]:
    """Switch ports carry no IP, so give them no IPv6 (no link-local address, no routes).

    ovs-vswitchd re-reads the whole routing table after every link change in its namespace
    (lib/route-table.c), in the main thread that also forwards every frame of the userspace
    datapath. With three IPv6 routes per port, each cable fault or repair stalled all traffic
    for that long; without them the re-read is a few routes. `-e`: a kernel without IPv6 has
    no such keys, and nothing to switch off."""
    if not ifnames:
        return []
    return [Sysctl([f"net/ipv6/conf/{name}/disable_ipv6=1" for name in sorted(ifnames)], ifnames)]


def tc_commands(plan: BuildPlan) -> list[list[str]]:
    """Shape every cable on both ends (each end shapes what leaves it): HTB for the rate, netem
    under it for delay and loss. Mininet's TCLink is not used: it ignores rates above 1 Gbit/s
    and carries on without delay when netem is missing, both silently."""
    commands = []
    seen = set()
    for veth in plan.veths:
        if veth.shape is None:
            continue
        for end in (veth.a, veth.b):
            if not end.in_root or end.ifname in seen:
                continue
            seen.add(end.ifname)
            commands += shape_commands(end.ifname, veth.shape)
    return commands


def shape_commands(dev: str, shape: Shape) -> list[list[str]]:
    out: list[list[str]] = []
    parent = ["root"]
    if shape.rate:
        rate = int(shape.rate)
        # A burst of 1 ms at the rate (at least 64 KiB, one TSO segment) keeps HTB accurate at
        # high rates without letting a long burst through at low ones.
        burst = max(rate // 8 // 1000, 65536)
        out += [Tc("qdisc", "replace", dev, "root", "handle", "5:", "htb", "default", "1"),
                Tc("class", "replace", dev, "parent", "5:", "classid", "5:1", "htb",
                   "rate", f"{rate}bit", "burst", str(burst), "cburst", str(burst),
                   "quantum", "200000")]
        parent = ["parent", "5:1"]
    if shape.needs_netem:
        netem = [*parent, "handle", "10:", "netem"]
        if shape.delay:
            netem += ["delay", f"{shape.delay:g}ms"]
        if shape.loss:
            netem += ["loss", f"{shape.loss:g}%"]
        out.append(Tc("qdisc", "replace", dev, *netem))
    return out


def host_commands(host: Host, tx_offload_off: bool = False, mtu: int | None = None) -> list[list[str]]:
    """Run inside the host's namespace after its interfaces exist. `mtu`: what a tunnel
    between servers leaves of a frame (cluster mode), or None to keep the default."""
    cmds = [["ip", "link", "set", "lo", "up"],
            # No IPv6 chatter (router solicitations, DAD) in the measurements.
            ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
            ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            # A host on several networks answers ARP only on the network the address is on, as
            # a hypervisor's vmk ports do; otherwise a VLAN-isolation check sees the host answer
            # for its management address on the VM network.
            ["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"],
            ["sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2"]]
    if host.role == "vm":
        # A vMotion pauses a VM by taking its carrier away (lab.move_vm); a paused guest keeps
        # its ARP cache, so the kernel must not drop it on carrier loss (`-e`: kernels before
        # 5.16 have no such key, and never drop it).
        cmds.append(["sysctl", "-qew", "net.ipv4.conf.all.arp_evict_nocarrier=0"])
    for i in host.interfaces:
        cmds.append(["ip", "addr", "replace", f"{i.ip}/{i.prefixlen}", "dev", i.name])
        if mtu is not None:
            cmds.append(["ip", "link", "set", i.name, "mtu", str(mtu)])
        cmds.append(["ip", "link", "set", i.name, "up"])
        if tx_offload_off:
            # Without OVS userspace TSO, TCP through the netdev datapath hangs on bad checksums.
            cmds.append(["ethtool", "-K", i.name, "tx", "off"])
    return cmds
