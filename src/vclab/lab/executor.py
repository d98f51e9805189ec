"""The one executor of root commands: on this machine (a link's carrier by ioctl, anything else
as a process) or, in cluster mode, over ssh on the server that holds what the command names.

It routes by a typed command's fields (topology/commands.py, placement.server_for); an untyped
argument list (an ad-hoc question such as `ovs-vsctl list-br`) runs where `server` says, else
on this machine.
"""

from __future__ import annotations

import shlex
import subprocess

from vclab.errors import VclabError
from vclab.lab.ioctl import link_carrier, link_updown
from vclab.lab.placement import Placement, Server, remote_command, server_for
from vclab.topology.commands import LinkState, Tc


MISSING, TIMED_OUT = 127, -1  # run_short's exit status for a tool not there, or hung


def run_short(args: list[str], timeout: float | None = 10.0,
              stdin: str | None = None) -> subprocess.CompletedProcess:
    """A short command on this machine (a question, a tool's version, a cleanup step), as text;
    it never raises: a missing tool is exit status 127 and one hung past `timeout` -1, each
    with why in stderr, so a check or a teardown goes on and says what failed."""
    try:
        return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, TIMED_OUT, "", f"timed out after {timeout:g} s")
    except OSError as e:
        return subprocess.CompletedProcess(args, MISSING, "", str(e))


class Executor:
    def __init__(self, placement: Placement | None = None, ssh_user: str | None = None) -> None:
        self.placement = placement
        self.ssh_user = ssh_user
        # device -> the namespace whose device of that name holds its tc (wired cables: see
        # topology/wire.py); the lab fills it when it builds the wires
        self.tc_netns: dict[str, str] = {}

    def tc_args(self, cmd: Tc) -> list[str]:
        """A Tc command as it runs: in the namespace that holds the device's qdiscs."""
        ns = self.tc_netns.get(cmd.dev)
        return ["tc", "-n", ns, *cmd[1:]] if ns else list(cmd)

    def server(self, args: list[str], server: str | None = None) -> Server | None:
        """The remote server a command must run on, or None for this machine."""
        if self.placement is None or not self.placement.remote:
            return None
        name = server if server is not None else server_for(args, self.placement)
        if name is None:
            return None
        target = self.placement.server(name)
        return None if target.local else target

    def run(self, args: list[str], check: bool = True, stdin: str | None = None,
            server: str | None = None) -> str:
        """Run it where it belongs; a failure raises VclabError with its stderr (unless
        check=False)."""
        return self.run_on(self.server(args, server), args, check, stdin)

    def run_on(self, target: Server | None, args: list[str], check: bool = True,
               stdin: str | None = None) -> str:
        """Run it on `target` (None: this machine)."""
        if target is None and isinstance(args, LinkState):
            try:
                link_updown(args.dev, args.up)
                if args.peer:
                    link_carrier(args.peer)
            except OSError as e:
                if check:
                    raise VclabError(f"{shlex.join(args)} failed: {e.strerror}") from None
            return ""
        if isinstance(args, Tc):
            args = self.tc_args(args)
        if target is not None:
            args = remote_command(target, args, self.ssh_user)
        p = subprocess.run(args, input=stdin, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise VclabError(f"{shlex.join(args)[:200]} failed: {(p.stderr or p.stdout).strip()}")
        return p.stdout
