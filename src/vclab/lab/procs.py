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
from pathlib import Path

STATE_DIR = Path(os.environ.get("VCLAB_STATE_DIR", "/run/vclab"))


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


@dataclass
class Tracked:
    pid: int
    started: int | None
    label: str


class ProcessTracker:
    """The processes one vclab run started; `end_all` runs in `finally` and on signals."""

    def __init__(self, run_id: str | None = None, state_dir: Path | None = None) -> None:
        self.run_id = run_id or f"{os.getpid()}"
        self.state_dir = state_dir or STATE_DIR
        self.file = self.state_dir / f"{self.run_id}.procs"
        self.tracked: list[Tracked] = []
        # Workload threads end their own processes while a teardown (after Ctrl-C) ends
        # everyone's: each entry is taken off the list by whichever gets to it first.
        self._lock = threading.Lock()

    def track(self, pid: int, label: str) -> int:
        entry = Tracked(pid, start_time(pid), label)
        with self._lock:
            self.tracked.append(entry)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.file.open("a") as f:
            f.write(json.dumps(entry.__dict__) + "\n")
        return pid

    def end(self, pid: int, grace: float = 2.0) -> None:
        with self._lock:
            entries = [t for t in self.tracked if t.pid == pid]
        for entry in entries:
            end_pid(entry.pid, entry.started, grace)
            with self._lock:
                if entry in self.tracked:
                    self.tracked.remove(entry)

    def end_all(self, grace: float = 2.0) -> None:
        # Newest first: helpers started inside hosts go before the hosts' shells.
        for entry in reversed(self.tracked):
            end_pid(entry.pid, entry.started, grace)
        self.tracked.clear()
        self.file.unlink(missing_ok=True)


def end_recorded(state_dir: Path | None = None) -> list[str]:
    """End every process any vclab run recorded (for `vclab clean` after a SIGKILL)."""
    state_dir = state_dir or STATE_DIR
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
