"""Processes vclab starts, tracked by PID and ended by PID only.

Each tracked process is also written to a state file, so `vclab clean` can end it after the
run that started it was killed with SIGKILL. A PID is only signalled while its kernel start
time still matches the one recorded: a recycled PID belongs to somebody else.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


def default_state_dir() -> Path:
    """Where runs record their processes: $VCLAB_STATE_DIR, read when asked (a test or a
    second lab sets it after vclab was imported), else /run/vclab."""
    return Path(os.environ.get("VCLAB_STATE_DIR", "/run/vclab"))


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[19])


def alive(pid: int, started: int | None) -> bool:
    now = start_time(pid)
    if now is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and (started is None or now == started)


def end_pid(pid: int, started: int | None, grace: float = 2.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds (tgtd ignores SIGTERM). True if it was ours."""
    if not alive(pid, started):
        _reap(pid)
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid, started):
            return True
        time.sleep(0.02)
    if alive(pid, started):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for _ in range(100):
            _reap(pid)
            if not alive(pid, started):
                break
            time.sleep(0.02)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


class Role(str, Enum):
    """What a tracked process is to the run: who ends it, and whether it must stay alive."""

    SHELL = "shell"            # a node's namespace shell: the lab hangs it up last
    NODE = "node"              # started inside a node by the lab: a host crash kills it
    CONTROLLER = "controller"  # the fabric's controller
    TARGET = "target"          # tgtd, the storage target
    AGENT = "agent"            # a workload's tool or agent: ends on its own


# Processes that must live through a whole repetition (the others end on their own, and a
# workload whose tool died shows it in its own output).
MUST_LIVE = frozenset({Role.CONTROLLER, Role.TARGET})


@dataclass
class Tracked:
    pid: int
    started: int | None
    label: str
    role: Role = Role.AGENT
    node: str | None = None  # the lab node it was started in

    def __post_init__(self) -> None:
        self.role = Role(self.role)  # from a state file: the plain string


class ProcessTracker:
    """The processes one vclab run started; `end_all` runs in `finally` and on signals."""

    def __init__(self, run_id: str | None = None, state_dir: Path | None = None) -> None:
        self.run_id = run_id or f"{os.getpid()}"
        self.state_dir = state_dir or default_state_dir()
        self.file = self.state_dir / f"{self.run_id}.procs"
        # Workload threads track and end their own processes while a teardown (after Ctrl-C)
        # ends everyone's, and the runner reads the list meanwhile: every access holds the
        # lock, readers get a copy, and each entry is taken off by whoever gets to it first.
        self._tracked: list[Tracked] = []
        self._lock = threading.Lock()

    @property
    def tracked(self) -> list[Tracked]:
        """A snapshot, oldest first: safe to iterate while other threads track and end."""
        with self._lock:
            return list(self._tracked)

    def entry(self, pid: int) -> Tracked | None:
        with self._lock:
            return next((t for t in self._tracked if t.pid == pid), None)

    def track(self, pid: int, label: str, role: Role = Role.AGENT, node: str | None = None) -> int:
        entry = Tracked(pid, start_time(pid), label, role, node)
        with self._lock:
            self._tracked.append(entry)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            with self.file.open("a") as f:
                f.write(json.dumps(entry.__dict__) + "\n")
        return pid

    def end(self, pid: int, grace: float = 2.0) -> None:
        with self._lock:
            entries = [t for t in self._tracked if t.pid == pid]
        self._end(entries, grace)

    def _end(self, entries: list[Tracked], grace: float) -> None:
        for entry in entries:
            end_pid(entry.pid, entry.started, grace)
            with self._lock:
                if entry in self._tracked:
                    self._tracked.remove(entry)

    def end_all(self, grace: float = 2.0) -> None:
        # Newest first: helpers started inside hosts go before the hosts' shells. Again until
        # none is left: a workload thread may start one while the others are being ended.
        while entries := list(reversed(self.tracked)):
            self._end(entries, grace)
        with self._lock:
            self.file.unlink(missing_ok=True)


def end_recorded(state_dir: Path | None = None) -> list[str]:
    """End every process any vclab run recorded (for `vclab clean` after a SIGKILL)."""
    state_dir = state_dir or default_state_dir()
    ended = []
    if not state_dir.is_dir():
        return ended
    for file in sorted(state_dir.glob("*.procs")):
        entries = []
        for line in file.read_text().splitlines():
            try:
                entries.append(Tracked(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        for entry in reversed(entries):
            if end_pid(entry.pid, entry.started):
                ended.append(f"{entry.label}({entry.pid})")
        file.unlink(missing_ok=True)
    return ended
