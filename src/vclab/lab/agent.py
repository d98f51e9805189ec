"""The one way vclab runs a process it must track: spawn, track, handshake, stop, stderr.

Every vclab agent (`python -m vclab.workloads...`), tool a workload starts (iperf3, tgtd), the
fabric's controller and the lab's own pings go through `Agent` (workloads through
`vclab.workloads.agent`, which only makes its failures WorkloadErrors). A short command on this
machine that starts no process to track goes through `vclab.lab.executor.run_short` instead.

- spawn: `node.popen`, tracked by PID from that moment (so a Ctrl-C teardown ends it);
  stderr goes to a file, never a pipe (a chatty agent would block on a full pipe), and its
  tail is kept for the error message;
- handshake: one line protocol on stdout. A line is an event: `WORD [NS]` (`ready 1733...`,
  `pause 1733...`), or, for agents that stream many events, one JSON object with "event" and
  "t" (ns). `expect(word)` reads the next one; a wrong or missing line fails with the stderr;
- stop: drain, then kill: ask it to finish (SIGTERM, or a line on stdin), wait up to `drain_s`
  for it to write its records, then the tracker ends it (SIGKILL after a grace) and forgets it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vclab.lab.procs import ProcessTracker, Role


class AgentError(Exception):
    """A process did not start, answer or finish as its line protocol says."""


class ThisMachine:
    """A node for processes that run on this machine, outside every lab namespace (the
    fabric's controller): Mininet's `popen` face over subprocess."""

    name = "this machine"

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(args, **kwargs)


THIS_MACHINE = ThisMachine()

STDOUT = subprocess.STDOUT  # Agent(stdout=STDOUT): its stdout goes into its stderr file


@dataclass
class Event:
    """One line of the protocol: `event`, its time (ns) if it gave one, any other fields."""

    event: str
    t_ns: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def parse_event(line: str | bytes) -> Event | None:
    """`WORD [NS]` or a JSON object with "event" (and "t"); None for anything else."""
    text = (line.decode(errors="replace") if isinstance(line, bytes) else line).strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
            return None
        t = obj.get("t")
        return Event(obj["event"], t if isinstance(t, int) else None,
                     {k: v for k, v in obj.items() if k not in ("event", "t")})
    words = text.split()
    if len(words) == 1 and words[0].isidentifier():
        return Event(words[0])
    if len(words) == 2 and words[0].isidentifier() and words[1].lstrip("-").isdigit():
        return Event(words[0], int(words[1]))
    return None


class Agent:
    """One process run in a node (see the module's docstring). `stdout`: a pipe to read
    events from (True), nothing (False), a file, or STDOUT: into the stderr file. `append`:
    the stderr file keeps what earlier runs of it wrote (a restarted controller's log)."""

    error: type[Exception] = AgentError  # what a failed handshake or a timeout raises

    def __init__(self, node: Any, args: list[str], tracker: ProcessTracker, label: str, *,
                 stderr: Path | None = None, stdin: bool = False, stdout: bool | Path | int = True,
                 env: dict[str, str] | None = None, role: Role = Role.AGENT,
                 append: bool = False) -> None:
        self.node, self.args, self.tracker, self.label = node, args, tracker, label
        self.stderr_path, self.append = stderr, append
        self.stdin, self.stdout, self.env, self.role = stdin, stdout, env, role
        self.proc: subprocess.Popen | None = None  # None again once stopped
        self.started_pid: int | None = None
        self.stderr = ""  # its tail, once stopped
        self._err: IO[bytes] | None = None

    # ---- spawn ----
    def spawn(self) -> Agent:
        if self.stderr_path is not None:
            self._err = self.stderr_path.open("a+b" if self.append else "w+b")
        else:
            self._err = tempfile.TemporaryFile()
        kwargs: dict[str, Any] = dict(
            stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL, stderr=self._err)
        out = None
        if isinstance(self.stdout, Path):
            out = kwargs["stdout"] = self.stdout.open("wb")
        elif self.stdout == STDOUT:
            kwargs["stdout"] = self._err
        else:
            kwargs["stdout"] = subprocess.PIPE if self.stdout else subprocess.DEVNULL
        if self.env is not None:
            kwargs["env"] = self.env
        try:
            self.proc = self.node.popen(self.args, **kwargs)
        finally:
            if out is not None:
                out.close()
        self.started_pid = self.tracker.track(self.proc.pid, self.label, self.role)
        return self

    def run_once(self, timeout: float, what: str | None = None) -> tuple[int, bytes]:
        """A one-shot agent: spawn, read all of its stdout, end it; (exit status, stdout).
        Its stderr tail is in `self.stderr` afterwards."""
        self.spawn()
        proc = self.proc
        assert proc is not None
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self.error(f"{what or self.label} took over {timeout:g} s") from None
        finally:
            self.stop(drain_s=0)
        return proc.returncode, out or b""

    @property
    def pid(self) -> int:
        assert self.started_pid is not None, f"{self.label} was not started"
        return self.started_pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- the line protocol ----
    def read_line(self, timeout: float) -> bytes:
        """The next stdout line, or b"" if none came within `timeout` (or it exited)."""
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, timeout))
        return self.proc.stdout.readline() if ready else b""

    def expect(self, word: str, timeout: float) -> Event:
        """The next event, which must be `word`; otherwise `error` with what came
        instead and the agent's stderr (it is left running: the caller stops it)."""
        line = self.read_line(timeout)
        ev = parse_event(line)
        if ev is None or ev.event != word:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    self.proc.wait(timeout=1)  # a crash's traceback is complete once it exited
                except subprocess.TimeoutExpired:
                    pass
            got = f" (got {line.decode(errors='replace').strip()!r})" if line.strip() else ""
            raise self.error(f"{self.label} did not say {word!r} within {timeout:g} s{got}: "
                                f"{self.stderr_tail().strip()[-800:] or 'no output'}")
        return ev

    def ready(self, timeout: float) -> int | None:
        """Wait for its `ready [NS]`; if it does not come, stop it and raise. Returns NS."""
        try:
            return self.expect("ready", timeout).t_ns
        except self.error:
            self.stop(drain_s=0)
            raise

    def send(self, line: str) -> int:
        """Write a command line to its stdin; CLOCK_REALTIME ns just before it was written."""
        assert self.proc is not None and self.proc.stdin is not None
        t = time.time_ns()
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        return t

    # ---- stop ----
    def stderr_tail(self, n: int = 2000) -> str:
        if self._err is None or self._err.closed:
            return self.stderr[-n:]
        self._err.flush()
        self._err.seek(0, os.SEEK_END)
        size = self._err.tell()
        self._err.seek(max(0, size - n))
        return self._err.read().decode(errors="replace")

    def ask_to_stop(self, how: str = "SIGTERM") -> None:
        """Tell it to finish: a signal name, or a line for its stdin. Does not wait."""
        if not self.running():
            return
        assert self.proc is not None
        if how.startswith("SIG"):
            self.proc.send_signal(getattr(signal, how))
            return
        try:
            self.send(how)
        except (BrokenPipeError, OSError):
            pass

    def stop(self, drain_s: float = 5.0, how: str = "SIGTERM", grace: float = 2.0) -> None:
        """Drain, then kill: ask it to finish (`how`; "" if it was asked already), wait up to
        `drain_s`, then the tracker ends it (SIGKILL after `grace` if it hung) and forgets it.
        Safe to call twice."""
        proc = self.proc
        if proc is None:
            return
        if drain_s > 0:
            if how:
                self.ask_to_stop(how)
            try:
                proc.wait(timeout=drain_s)
            except subprocess.TimeoutExpired:
                pass
        self.tracker.end(proc.pid, grace=grace)
        self._close()

    def kill(self) -> int:
        """SIGKILL now, as a crash would (nobody is told); CLOCK_REALTIME ns of the kill."""
        assert self.proc is not None
        t = time.time_ns()
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.tracker.end(self.proc.pid, grace=0)
        return t

    def _close(self) -> None:
        proc = self.proc
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    if stream:
                        stream.close()
                except OSError:
                    pass
        if self._err is not None and not self._err.closed:
            self.stderr = self.stderr_tail()
            self._err.close()
        self.proc = None
