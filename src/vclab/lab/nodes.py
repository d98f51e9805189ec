"""vclab's Mininet node classes: every process a node starts is tracked by PID from birth."""

from __future__ import annotations

from mininet.link import Intf
from mininet.node import Host, Node, OVSSwitch

from vclab.lab.procs import Role


class _TrackedNode:
    """Mininet starts every process of a node (its shell, popen) through `_popen`: record each
    PID the moment it exists, so even an interrupted start-up leaves nothing behind."""

    def _popen(self, cmd, **params):
        is_shell = getattr(self, "shell", None) is None  # startShell is the first caller
        popen = super()._popen(cmd, **params)
        tracker = self.params.get("tracker")
        if tracker is not None:
            words = [c for c in cmd if c.isprintable()]
            tracker.track(popen.pid, f"{self.name}: {' '.join(words)[:100]}",
                          Role.SHELL if is_shell else Role.NODE, self.name)
        return popen


class VclabHost(_TrackedNode, Host):
    pass


class VclabSwitch(_TrackedNode, OVSSwitch):
    """A bridge the plan's ovs-vsctl transaction creates; Mininet only knows its ports."""

    def start(self, controllers):  # the plan configures the bridge
        pass


def cluster_classes():
    """Mininet's cluster edition lives in its examples (imported only in cluster mode)."""
    from mininet.examples.cluster import MininetCluster, RemoteHost, RemoteOVSSwitch

    class LocalLikeMininet:
        """The cluster edition makes every process of a node a process-group leader, and
        `mnexec -d` then forks and its parent exits 0 at once: a local node's shell PID and a
        ping's exit status would be those of the wrong process (every ping "answered").
        Local nodes start processes as plain Mininet does; remote ones skip -d (ssh is
        already apart from our process group)."""

        def _popen(self, cmd, sudo=True, tt=True, **params):
            if not self.isRemote:
                return Node._popen(self, cmd, **params)
            return super()._popen(cmd, sudo=sudo, tt=tt, **params)

        def popen(self, *args, **kwargs):
            if self.isRemote:
                kwargs.setdefault("mncmd", ["mnexec", "-a", str(self.pid)])
            return super().popen(*args, **kwargs)

    class VclabRemoteHost(_TrackedNode, LocalLikeMininet, RemoteHost):
        pass

    class VclabRemoteSwitch(_TrackedNode, LocalLikeMininet, RemoteOVSSwitch):
        def start(self, controllers):  # the plan configures the bridge
            pass

    return MininetCluster, VclabRemoteHost, VclabRemoteSwitch


class PresetIntf(Intf):
    """The veth is created with its MAC already: skip Mininet's ifconfig down/hw ether/up."""

    def config(self, mac=None, **params):
        self.mac = mac
        return super().config(**params)
