"""Build a cluster for real: Mininet hosts on Open vSwitch, from a BuildPlan. With nodes.py,
the only code that imports Mininet.

Mininet creates the hosts (a shell in a namespace each) and the veths; everything else is the
plan's command lists (ovs-vsctl, tc, host set-up) run as generated. Mininet's own switch start-up,
TCLink and clean-up are not used: the plan creates each bridge with its loop protection in one
transaction, TCLink silently ignores rates above 1 Gbit/s and missing netem, and Mininet's
clean-up kills processes by name. Every process a node starts is tracked by PID; a failed or
interrupted build (Ctrl-C, SIGTERM) removes what it created before the exception leaves `Lab`.

    with Lab(cluster) as lab:
        lab.reachability()   # {network: {(src, dst): reached}}
        lab.isolation()      # [(vm, management network, reached)]

Cluster mode (`Lab(cluster, servers=["localhost=10.0.0.1", "b"])`): the nodes are Mininet's
cluster edition's `RemoteHost` / `RemoteOVSSwitch` in a `MininetCluster`, each on the server
`placement.place` chose; the cables between servers are VXLAN tunnels; every root command goes
to the server holding what it names (ssh + sudo for the remote ones, as Mininet's own).
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from mininet.link import Link
from mininet.net import Mininet

from vclab import PREFIX
from vclab.doctor import PROBES
from vclab.errors import VclabError
from vclab.fabric.mechanisms import Mechanism, lacp_pending
from vclab.fabric.registry import get_mechanism
from vclab.lab import checks
from vclab.lab.executor import Executor
from vclab.lab.nodes import PresetIntf, VclabHost, VclabSwitch, cluster_classes
from vclab.lab.procs import ProcessTracker, Role, alive
from vclab.lab.signals import interrupts
from vclab.lab.placement import (TUNNEL_MTU, Placement, Server, TunnelEnd, parse_servers,
                                  place, tunnel_commands)
from vclab.topology.plan import BuildPlan, build_plan
from vclab.topology.commands import LinkState, Tc
from vclab.topology.render import build_commands, host_commands, ipv6_off_commands, tc_commands
from vclab.topology.wire import redirect_commands, sink_name, splice_commands, wire_name
from vclab.topology.spec import Cluster


def _probe(name: str) -> tuple[bool, str]:
    probe = next(p for n, p, _ in PROBES if n == name)
    return probe()


class Lab:
    """A built cluster. `Lab(cluster, mechanism=None, cli=False)` as a context manager builds
    on enter and removes everything on exit (with `cli=True`, the Mininet CLI opens first)."""

    def __init__(self, cluster: Cluster, mechanism: str | Mechanism | None = None,
                 cli: bool = False, run_id: str | None = None,
                 state_dir: Path | None = None, prefix: str = PREFIX,
                 workdir: Path | None = None, servers: str | list[str] | None = None,
                 pins: dict[str, str] | None = None, ssh_user: str | None = None,
                 ports: str | None = None) -> None:
        # `prefix` lets two labs (e.g. tests of different helpers) run side by side; it must
        # start with vclab's own prefix so `vclab clean` still recognises everything.
        if not prefix.startswith(PREFIX):
            raise VclabError(f"a lab's name prefix must start with {PREFIX!r}, not {prefix!r}")
        self.cluster = cluster
        self.prefix = prefix
        # the switch ports' type asked for: afxdp, system or auto (default: VCLAB_PORTS, else
        # system); _choose_ports decides at the build what this machine allows
        self.ports_wanted = ports or os.environ.get("VCLAB_PORTS", "system")
        if self.ports_wanted not in ("afxdp", "system", "auto"):
            raise VclabError(f"switch ports {self.ports_wanted!r}: allowed are afxdp, system "
                             "and auto (VCLAB_PORTS)")
        self.plan: BuildPlan = build_plan(cluster, prefix)
        self.mechanism: Mechanism = get_mechanism(mechanism or cluster.mechanism)
        self.mechanism.check(self.plan)
        # Cluster mode: None builds on this machine alone, as plain Mininet.
        self.placement: Placement | None = (
            place(self.plan, parse_servers(servers), pins) if servers else None)
        self.ssh_user = ssh_user or os.environ.get("SUDO_USER") or None
        self.executor = Executor(self.placement, self.ssh_user)
        if self.placement is not None and self.placement.remote and \
                self.mechanism.name in ("sdn", "linux-stp"):
            raise VclabError(
                f"mechanism {self.mechanism.name!r} does not run across servers yet (sdn's "
                "controller listens on 127.0.0.1; linux-stp reads this machine's /sys): use "
                "rstp or stp, or one server")
        self.cli = cli
        self.run_id = run_id or f"up-{os.getpid()}-{secrets.token_hex(3)}"
        self.tracker = ProcessTracker(self.run_id, state_dir)
        # Where a mechanism keeps its files (the sdn controller's fabric spec and log).
        self.workdir = Path(workdir) if workdir else Path(tempfile.gettempdir()) / f"vclab-{self.run_id}"
        self.net: Mininet | None = None
        self.datapath = ""
        self.ports, self.ports_why = "system", ""  # the switch ports' type (_choose_ports)
        self._wire_ns: str | None = None  # the cables' namespace, once made (topology/wire.py)
        self.build_seconds = 0.0
        self.converge_seconds = 0.0
        self._owned = False  # True once the names were checked free: teardown may remove them
        self._stopped = False
        # Ctrl-C and SIGTERM unwind the build through `finally`, from start() to stop().
        self._signals = ExitStack()

    # ---- context manager ----
    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.cli and exc_type is None:
                self.interact()
        finally:
            self.stop()

    # ---- running commands ----
    def sh(self, args: list[str], check: bool = True, stdin: str | None = None,
           server: str | None = None) -> str:
        """Run a command in the root namespace; a failure raises VclabError with its stderr.
        In cluster mode it runs on `server`, by default the one holding what it names."""
        return self.executor.run_on(self._server(args, server), args, check, stdin)

    def tc(self, cmds: list[Tc], check: bool = True) -> None:
        """Run tc commands in as few `tc -batch` processes as there are (server, namespace)
        pairs to run them in: hundreds of commands on a bigger cluster."""
        groups: dict[tuple[str | None, str | None], list[Tc]] = {}
        for c in cmds:
            where = self._server(c, None)
            groups.setdefault((where.name if where else None, self.executor.tc_netns.get(c.dev)),
                              []).append(c)
        for (server, ns), batch in groups.items():
            self.sh(["tc", *(["-n", ns] if ns else []), "-batch", "-"], check=check,
                    server=server, stdin="".join(c.batch_line + "\n" for c in batch))

    def host_sh(self, host: str, args: list[str], check: bool = True) -> str:
        """Run a command inside a host's namespace, without going through its shell."""
        server = self.placement.nodes[host] if self.placement is not None else None
        return self.sh(["mnexec", "-a", str(self.node(host).pid), *args], check=check,
                       server=server)

    def _server(self, args: list[str], server: str | None) -> Server | None:
        """The remote server a command must run on, or None for this machine."""
        return self.executor.server(args, server)

    @property
    def servers(self) -> list[str]:
        """The servers the lab runs on ([localhost] without cluster mode)."""
        if self.placement is None:
            return ["localhost"]
        return [s.name for s in self.placement.servers]

    def node(self, name: str):
        """A Mininet node by host name, bridge name (vcs0) or the user's switch name (tor-a)."""
        assert self.net is not None, "the lab is not built"
        if name in self.net.nameToNode:
            return self.net.nameToNode[name]
        return self.net.nameToNode[self.plan.bridge(name).name]

    # ---- build ----
    def start(self) -> None:
        started = time.monotonic()
        self._preflight()
        self._signals.enter_context(interrupts.interruptible())
        try:
            self._build()
            self._converge()
        except BaseException:
            self.stop()
            raise
        self.build_seconds = time.monotonic() - started

    def _preflight(self) -> None:
        """Everything that can refuse the build, before anything is created."""
        if os.geteuid() != 0:
            raise VclabError("building a cluster needs root (network namespaces, Open vSwitch)")
        kernel, _ = _probe("ovs-kernel-datapath")
        self.datapath = "system" if kernel else "netdev"
        missing = self.plan.needs_netem()
        if missing:
            netem, why = _probe("netem")
            if not netem:
                raise VclabError(
                    f"delay or loss on {', '.join(missing)} needs netem, which this kernel does "
                    f"not offer ({why}); remove delay/loss from those links or run where "
                    "`vclab doctor` lists netem")
        self._tx_offload_off = False
        if self.datapath == "netdev":
            tso, _ = _probe("ovs-userspace-tso")
            self._tx_offload_off = not tso
        self.ports, self.ports_why = self._choose_ports()
        if self.ports == "afxdp":
            # AF_XDP has no TSO: the hosts segment and checksum their own frames
            self._tx_offload_off = True
        taken = []
        for server in self.servers:
            remote = self._server([], server) is not None
            if remote:
                try:
                    self.sh(["true"], server=server)
                except VclabError as e:
                    raise VclabError(
                        f"cannot run commands as root on server {server!r}: ssh without a "
                        f"password and `sudo -n` are needed ({e})") from None
            bridges = set(self.sh(["ovs-vsctl", "--timeout=5", "list-br"], server=server).split())
            links = set((self.sh(["ls", "/sys/class/net"], server=server) if remote
                         else "\n".join(os.listdir("/sys/class/net"))).split())
            mine = self._on(server)
            taken += [b.name for b in self.plan.bridges if b.name in mine and b.name in bridges | links]
            taken += [n for n in self.plan.root_links() if n in mine and n in links]
        if os.path.exists(f"/var/run/netns/{wire_name(self.prefix)}"):
            taken.append(f"namespace {wire_name(self.prefix)}")
        if taken:
            raise VclabError(
                f"{', '.join(taken[:6])}{' ...' if len(taken) > 6 else ''} already exist: another "
                "vclab cluster is up, or a killed one left them; `vclab clean` removes them")
        self._owned = True
        self.mechanism.prepare(self)  # e.g. sdn: the controller listens before bridges exist

    def _choose_ports(self) -> tuple[str, str]:
        """`afxdp` switch ports with wired cables (topology/wire.py) or `system` ones, and why.
        `afxdp` refuses to build where it cannot; `auto` falls back to system ports."""
        wanted = self.ports_wanted
        if wanted == "system":
            return "system", "system ports asked for"
        refused = []
        if self.datapath != "netdev":
            refused.append("the kernel datapath needs no userspace polling")
        if self.placement is not None:
            refused.append("cluster mode's tunnels are system ports")
        if not all(self.mechanism.on_ovs(b) for b in self.plan.bridges):
            refused.append(f"{self.mechanism.name} switches are not Open vSwitch bridges")
        if not refused:
            ok, why = _probe("ovs-afxdp")
            if not ok:
                refused.append(why)
        if refused:
            if wanted == "afxdp":
                raise VclabError("AF_XDP switch ports (VCLAB_PORTS=afxdp) cannot be used: "
                                 + "; ".join(refused))
            return "system", "; ".join(refused)
        return "afxdp", "AF_XDP ports polled by a PMD thread, cables wired through a namespace"

    def _on(self, server: str) -> set[str]:
        """The bridges and root-namespace devices of the plan that live on `server`."""
        if self.placement is None:
            return {b.name for b in self.plan.bridges} | set(self.plan.root_links())
        return {d for d, s in self.placement.devices.items() if s == server}

    def _mininet(self) -> Mininet:
        """Plain Mininet, or in cluster mode Mininet's cluster edition with vclab's placement."""
        common = dict(topo=None, controller=None, build=False, waitConnected=False, link=Link,
                      intf=PresetIntf)
        if self.placement is None:
            return Mininet(host=VclabHost, switch=VclabSwitch, **common)
        cluster, host, switch = cluster_classes()
        servers = self.placement.servers
        # precheck=False: _preflight already ran a command as root on each server over ssh,
        # with an error vclab can report (Mininet's precheck exits the process).
        return cluster(host=host, switch=switch, servers=[s.name for s in servers],
                       serverIP={s.name: s.address for s in servers},
                       user=self.ssh_user or "root", precheck=False, **common)

    def _node_params(self, name: str) -> dict:
        params = dict(tracker=self.tracker)
        if self.placement is not None:
            server = self.placement.server(self.placement.nodes[name])
            params.update(server=server.name, serverIP=server.address,
                          user=self.ssh_user or "root")
        return params

    def _make_tunnel_end(self, end: TunnelEnd, vni: int) -> None:
        """One end of a cable between servers, on its server (before OVS adds it as a port)."""
        for cmd in tunnel_commands(end, vni):
            self.sh(cmd, server=end.server)

    def _build(self) -> None:
        plan = self.plan
        self.net = net = self._mininet()
        for host in plan.hosts:
            net.addHost(host.name, ip=None, **self._node_params(host.name))
        for bridge in plan.bridges:
            net.addSwitch(bridge.name, dpid=bridge.dpid, failMode="standalone",
                          datapath="user" if self.datapath == "netdev" else "kernel",
                          **self._node_params(bridge.name))
        ofport = {(p.bridge, p.name): p.ofport for b in plan.bridges for p in b.ports}
        placement = self.placement
        for veth in plan.veths:
            if placement is not None and placement.crosses(veth.a.node, veth.b.node):
                continue  # a tunnel, below
            net.addLink(veth.a.node, veth.b.node, intfName1=veth.a.ifname,
                        intfName2=veth.b.ifname, addr1=veth.a.mac, addr2=veth.b.mac,
                        port1=ofport.get((veth.a.node, veth.a.ifname)),
                        port2=ofport.get((veth.b.node, veth.b.ifname)))
        for tunnel in placement.tunnels if placement is not None else ():
            for end in (tunnel.a, tunnel.b):
                self._make_tunnel_end(end, tunnel.vni)
        if self.ports == "afxdp":
            self._wire()
        for server in self.servers:  # before OVS adds (and brings up) the ports
            mine = self._on(server)
            for cmd in ipv6_off_commands([n for n in plan.root_links() if n in mine]):
                self.sh(cmd, server=server)
        if placement is None:
            ovs = build_commands(plan, self.datapath, self.mechanism, self.run_id,
                                 ports=self.ports, queues=self._veth_queues())
        else:
            # One transaction per server (each ovs-vswitchd knows only its own bridges), then
            # the mechanism's commands, each sent where the devices it names are.
            ovs = [cmd for server in self.servers for cmd in build_commands(
                plan, self.datapath, self.mechanism, self.run_id,
                bridges=placement.bridges_on(server, plan))]
            ovs += self.mechanism.commands(plan)
        for cmd in ovs:
            self.sh(cmd)
        self.tc(tc_commands(plan))
        mtu = TUNNEL_MTU if placement is not None and placement.tunnels else None
        for host in plan.hosts:
            script = " && ".join(shlex.join(c) for c in host_commands(host, self._tx_offload_off, mtu))
            self.host_sh(host.name, ["sh", "-c", script])
        self.mechanism.start(self)

    def _veth_queues(self) -> int:
        """Receive queues of this lab's veths (the kernel gives each one per CPU)."""
        links = self.plan.root_links()
        if not links:
            return 1
        try:
            return max(1, sum(q.startswith("rx-") for q in
                              os.listdir(f"/sys/class/net/{links[0]}/queues")))
        except OSError:
            return 1

    def _wire(self) -> None:
        """Splice every cable through the wire namespace (before OVS adds the ports); from
        now on each cable end's tc runs there."""
        wire = wire_name(self.prefix)
        self._wire_ns = wire
        for cmd in splice_commands(self.plan, wire, sink_name(self.prefix)):
            self.sh(cmd)
        for v in self.plan.cables():
            for end in (v.a.ifname, v.b.ifname):
                self.executor.tc_netns[end] = wire
        self.tc(redirect_commands(self.plan))

    def _converge(self) -> None:
        """Poll the mechanism until the fabric has settled (two readings in a row, 50 ms
        apart: one poll of rstp/show costs ~10 ms, and RSTP settles in tens of ms when the
        fabric comes up in one transaction, so a coarser poll would be most of the wait)."""
        started = time.monotonic()
        deadline = started + float(self.mechanism.timeout)
        settled = 0
        while True:
            done, moving = self.mechanism.converged(self)
            if done and (pending := lacp_pending(self)):
                done, moving = False, ", ".join(pending)
            settled = settled + 1 if done else 0
            if settled >= 2:
                break
            if time.monotonic() > deadline:
                raise VclabError(f"the fabric did not converge within {self.mechanism.timeout:g} s "
                                 f"with {self.mechanism.name}; still moving: {moving}")
            time.sleep(0.05)
        self.converge_seconds = time.monotonic() - started

    # ---- checks (lab/checks.py) ----
    def ping(self, probes: list[tuple[str, str]], count: int = 1,
             devices: list[str] | None = None) -> list[bool]:
        return checks.ping(self, probes, count, devices)

    def reachability(self, networks: list[str] | None = None) -> dict[str, dict[tuple[str, str], bool]]:
        return checks.reachability(self, networks)

    def isolation(self) -> list[tuple[str, str, bool]]:
        return checks.isolation(self)

    def vm_will_move(self, vm: str, to_hypervisor: str) -> None:
        """A vMotion of `vm` to `to_hypervisor` starts its pre-copy: the mechanism may get
        ready for the switch-over (sdn builds the destination's rules, sends nothing)."""
        from vclab.workloads.vmotion.migration import (migration_problems, moved_cluster,
                                                       moved_plan)

        if not migration_problems(self.cluster, vm, to_hypervisor):
            self.mechanism.vm_will_move(self, moved_plan(self.plan, vm, to_hypervisor),
                                        moved_cluster(self.cluster, vm, to_hypervisor))

    def move_vm(self, vm: str, to_hypervisor: str, between=None) -> dict[str, int]:
        """Move `vm`'s access ports to `to_hypervisor`'s virtual switch (the same veths, so the
        VM keeps its interfaces, MACs and addresses); refused with the reasons when the
        destination lacks the vMotion network or one of the VM's networks. With `between`, the
        ports lose their carrier, `between()` runs (vMotion's stop-and-copy: the VM is paused
        and silent) while they move, then their carrier comes back on the destination; if it
        raises, the VM resumes where it was. Returns
        the wall-clock ns of each step. The plan and cluster follow the VM, so a second move
        and the teardown see it where it is."""
        # The switch-over's pure parts live with the migration workload (lazy import: the
        # build does not otherwise depend on workloads).
        from vclab.workloads.vmotion.migration import (migration_problems, move_commands,
                                                       moved_cluster, moved_plan)

        problems = migration_problems(self.cluster, vm, to_hypervisor)
        if self.placement is not None and not problems:
            here = self.placement.nodes[self.plan.host(vm).vswitch]
            there = self.placement.nodes[self.plan.host(to_hypervisor).vswitch]
            if here != there:
                problems.append(f"{to_hypervisor} runs on server {there} and {vm} on {here}: a "
                                "VM's ports cannot move between machines")
        if problems:
            raise VclabError(f"cannot migrate {vm} to {to_hypervisor}: " + "; ".join(problems))
        after = moved_plan(self.plan, vm, to_hypervisor)
        after_cluster = moved_cluster(self.cluster, vm, to_hypervisor)
        t: dict[str, int] = {}
        if between is None:
            t["detach_start_ns"] = time.time_ns()
            # A fabric that places MACs itself (sdn) delivers to the destination first.
            self.mechanism.vm_moving(self, after, after_cluster)
            self.mechanism.vm_moved(self)
            t["fabric_told_ns"] = time.time_ns()
            for cmd in move_commands(self.plan, after, vm, self.mechanism):
                self.sh(cmd)
            t["detached_ns"] = t["attach_start_ns"] = t["attached_ns"] = time.time_ns()
        else:
            # The VM pauses: its ports lose their carrier at once (an ioctl each), as a paused
            # guest falls silent. They move to the destination's switch while its memory is
            # copied: one OVSDB transaction that ovs-vswitchd applies meanwhile. Run as a
            # detach before the copy and an attach after it, the two transactions were VM
            # downtime that a real switch-over does not have (26-54 and 22-66 ms under the
            # default load). At resume the ports get their carrier back, on the destination
            # (the VM keeps its ARP cache meanwhile: render.host_commands).
            ports = [i.port for i in self.plan.host(vm).interfaces]
            t["detach_start_ns"] = time.time_ns()
            for port in ports:
                self.sh(LinkState(port, up=False))
            t["detached_ns"] = time.time_ns()
            failed: list[BaseException] = []

            def move() -> None:
                try:
                    for cmd in move_commands(self.plan, after, vm, self.mechanism):
                        self.sh(cmd)
                    t["moved_ns"] = time.time_ns()
                except BaseException as e:  # raised below, in the switch-over's own thread
                    failed.append(e)

            mover = threading.Thread(target=move, name=f"move-{vm}", daemon=True)
            mover.start()
            # The fabric gets ready for the destination during the copy too.
            self.mechanism.vm_moving(self, after, after_cluster)
            try:
                between()
                self.mechanism.vm_moved(self)
                mover.join()
                if failed:
                    raise failed[0]
            except BaseException:
                # The VM resumes where it was.
                mover.join()
                self.mechanism.vm_moving(self, self.plan, self.cluster)
                if "moved_ns" in t:
                    for cmd in move_commands(after, self.plan, vm, self.mechanism):
                        self.sh(cmd, check=False)
                for port in ports:
                    self.sh(LinkState(port, up=True), check=False)
                raise
            t["fabric_told_ns"] = t["attach_start_ns"] = time.time_ns()
            for port in ports:
                self.sh(LinkState(port, up=True))
            t["attached_ns"] = time.time_ns()
        self.plan, self.cluster = after, after_cluster
        return t

    def controller_events(self) -> list[dict]:
        """What the fabric's controller did and when (sdn's events.jsonl), for the results."""
        return self.mechanism.timeline_events()

    def controller_action(self, what: str) -> None:
        """`kill` or `restart` the fabric's controller (the sdn mechanism's faults)."""
        self.mechanism.action(self, what)

    def interact(self) -> None:
        from mininet.cli import CLI

        CLI(self.net)

    # ---- teardown ----
    def stop(self) -> None:
        """Remove everything this lab created; safe to call twice and after a partial build.
        A signal during the teardown is held until it is done, then raised."""
        if self._stopped:
            return
        self._stopped = True
        try:
            with interrupts.deferred():
                self._teardown()
        finally:
            self._signals.close()

    def _teardown(self) -> None:
        tracked = self.tracker.tracked
        # Processes started inside hosts first (workloads, pings).
        for entry in reversed(tracked):
            if entry.role is not Role.SHELL:
                self.tracker.end(entry.pid)
        if self._owned:
            try:
                self.mechanism.stop(self)
            except Exception as err:  # the bridges and cables must go regardless
                print(f"vclab: {self.mechanism.name} teardown: {err}", file=sys.stderr)
            for server in self.servers:
                self._remove(server)
            if self._wire_ns is not None:
                self.sh(["ip", "netns", "del", self._wire_ns], check=False)
        # Interactive bash ignores SIGTERM: hang up each shell's session, as Mininet does.
        for entry in self.tracker.tracked:
            if entry.role is Role.SHELL and alive(entry.pid, entry.started):
                try:
                    os.killpg(entry.pid, signal.SIGHUP)
                except OSError:
                    pass
        if self.net is not None:
            for node in [*self.net.hosts, *self.net.switches]:
                self._release(node)
        self.tracker.end_all()

    def _remove(self, server: str) -> None:
        """Delete this lab's bridges and root-namespace devices on one server."""
        mine = self._on(server)
        args = ["ovs-vsctl", "--timeout=30"]
        for bridge in self.plan.bridges:
            if bridge.name in mine:
                args += ["--", "--if-exists", "del-br", bridge.name]
        if len(args) > 2:
            self.sh(args, check=False, server=server)
        # Deleting the root end of a veth deletes both ends at once; a namespace's own
        # clean-up would remove them later, asynchronously. Tunnel ends go the same way.
        names = [n for n in self.plan.root_links() if n in mine]
        if self._server([], server) is None:
            present = set(os.listdir("/sys/class/net"))
            names = [n for n in names if n in present]
        if names:
            self.sh(["ip", "-force", "-batch", "-"], check=False, server=server,
                    stdin="".join(f"link del {n}\n" for n in names))

    @staticmethod
    def _release(node) -> None:
        """Reap a node's shell and close its pty."""
        shell = getattr(node, "shell", None)
        if shell is None:
            return
        try:
            shell.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        for close in (node.stdin.close, lambda: os.close(node.slave)):
            try:
                close()
            except OSError:
                pass
        node.shell = None
