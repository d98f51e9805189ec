"""An iSCSI initiator run inside a hypervisor's network namespace, on libiscsi.

    python -m vclab.workloads.iscsi.agent run --portal 10.0.0.1 --portal 10.0.1.1 \\
        --target IQN --lun 1 --pattern random-4k --mix 70/30 --out io.csv
    python -m vclab.workloads.iscsi.agent login --portal IP --target IQN --lun 1
    python -m vclab.workloads.iscsi.agent features --portal IP --target IQN --lun 1

`run` logs in to every portal (one session per path, as MPIO does), sends I/O down the active
path at a fixed queue depth, and on an I/O error or an I/O older than --io-timeout-ms declares
that path dead and re-issues everything in flight on the next logged-in path (active/standby,
most-recently-used: no failback). With no other path logged in, a slow I/O keeps waiting on its
session: TCP may still deliver it once the fabric heals, and tearing the session down would only
add a login to the stall. A session that stays silent for --session-timeout-s fails at the TCP
level (TCP_USER_TIMEOUT) and is logged in again. Dead paths are logged in again in the
background. It records one line per I/O and per path event and ends on SIGTERM/SIGINT, flushing
its records.

`login` tries one login (for CHAP checks); `features` checks COMPARE AND WRITE and persistent
reservations on a LUN. Both print JSON.

libiscsi is called through ctypes (libiscsi.py says why). Stdlib only: it shares two cores
with Open vSwitch.

Its records: records.py.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import select
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from vclab.workloads.iscsi.records import (
    READ,
    WRITE,
    SWITCH,
    FAILED,
    OK,
    UNFINISHED,
    PATTERNS,
    parse_mix,
    IoPattern,
    RecordLog,
)
from vclab.workloads.iscsi.libiscsi import (
    BUSY,
    CALLBACK,
    CHECK_CONDITION,
    DOWN,
    GOOD,
    PR_IN_READ_KEYS,
    PR_IN_READ_RESERVATION,
    PR_PREEMPT,
    PR_REGISTER,
    PR_RELEASE,
    PR_RESERVE,
    PR_WRITE_EXCLUSIVE,
    SENSE_UNIT_ATTENTION,
    TASK_SET_FULL,
    TRANSPORT_FAILURES,
    UP,
    Session,
    _ProutBasic,
    free_task,
    libiscsi,
    task_of,
    task_result,
    wait_logins,
)

# ---- run: I/O with multipath failover ----

@dataclass
class Io:
    op: str
    lba: int
    t_submit: int
    attempts: int = 0
    path: int = -1
    t_issue_mono: int = 0


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        chap = (args.chap_user, os.environ.get("VCLAB_CHAP_SECRET", "")) if args.chap_user else None
        self.sessions = [Session(i, p, args.target, args.lun, args.initiator, chap,
                                 args.session_timeout_s) for i, p in enumerate(args.portal)]
        self.io_timeout_ns = int(args.io_timeout_ms * 1e6)
        self.stopping = False
        self.active: Session | None = None
        self.dead_since: tuple[int, int] | None = None  # (t, path) when no path was left
        self.inflight: dict[int, Io] = {}
        self.retry: deque[Io] = deque()
        self.next_id = 1
        self._io_cb = CALLBACK(self._on_io)
        self.counts = {"issued": 0, "transport_retries": 0, "scsi_retries": 0}

    def stop(self, *_: object) -> None:
        self.stopping = True

    # -- setup --
    def login_all(self) -> None:
        for s in self.sessions:
            s.begin_login(self.args.login_timeout_s)
        wait_logins(self.sessions)
        for s in self.sessions:
            if s.state == UP:
                self.log.add(UP, s.login_started, time.time_ns(), OK, s.index, 0)
            else:
                now = time.time_ns()
                self.log.add(DOWN, now, now, FAILED, s.index, 3)
                s.next_login = time.monotonic_ns() + int(self.args.relogin_s * 1e9)

    def capacity(self, s: Session) -> tuple[int, int]:
        """(block size, number of blocks) from READ CAPACITY(16)."""
        lib = libiscsi()
        ptr = lib.iscsi_readcapacity16_sync(s.ctx, s.lun)
        try:
            res = task_result(ptr, s.ctx)
            if res["status"] != "GOOD" or len(res.get("data", b"")) < 12:
                raise RuntimeError(f"READ CAPACITY(16) failed: {res}")
            last_lba = int.from_bytes(res["data"][0:8], "big")
            block = int.from_bytes(res["data"][8:12], "big")
        finally:
            free_task(ptr)
        return block, last_lba + 1

    # -- I/O --
    def issue(self, io: Io, s: Session) -> bool:
        lib = libiscsi()
        ident = self.next_id
        self.next_id += 1
        io.attempts += 1
        io.path = s.index
        io.t_issue_mono = time.monotonic_ns()
        nbytes = self.pattern.io_bytes
        if io.op == READ:
            ptr = lib.iscsi_read16_task(s.ctx, s.lun, io.lba, nbytes, self.block, 0, 0, 0, 0, 0,
                                        self._io_cb, ident)
        else:
            ptr = lib.iscsi_write16_task(s.ctx, s.lun, io.lba, self.wbuf, nbytes, self.block,
                                         0, 0, 0, 0, 0, self._io_cb, ident)
        if not ptr:
            io.attempts -= 1
            s.failed = s.failed or "transport error"
            s.error = lib.iscsi_get_error(s.ctx).decode(errors="replace")
            self.retry.appendleft(io)
            return False
        self.inflight[ident] = io
        self.counts["issued"] += 1
        return True

    def _on_io(self, _ctx: int, status: int, task: int, ident: int | None) -> None:
        io = self.inflight.pop(ident or 0, None)
        try:
            if io is None:
                return  # cancelled by us after its path was declared dead: re-issued already
            if status in TRANSPORT_FAILURES:
                self.sessions[io.path].failed = self.sessions[io.path].failed or "transport error"
                self.counts["transport_retries"] += 1
                self.retry.appendleft(io)
                return
            if status in (BUSY, TASK_SET_FULL) or (
                    status == CHECK_CONDITION and task_of(task).sense.key == SENSE_UNIT_ATTENTION):
                # What every initiator retries: a busy target, a reset or a new nexus announced.
                self.counts["scsi_retries"] += 1
                self.retry.append(io)
                return
            self.log.add(io.op, io.t_submit, time.time_ns(), OK if status == GOOD else FAILED,
                         io.path, io.attempts)
        finally:
            free_task(task)

    def declare_down(self, s: Session, reason: int) -> None:
        now = time.time_ns()
        moved = [i for i, io in self.inflight.items() if io.path == s.index]
        ios = sorted((self.inflight.pop(i) for i in moved), key=lambda io: io.t_submit)
        self.retry.extendleft(reversed(ios))  # oldest first
        s.close()
        s.failed = ""
        s.next_login = time.monotonic_ns() + int(self.args.relogin_s * 1e9)
        self.log.add(DOWN, now, now, FAILED, s.index, reason)
        if s is self.active:
            self.active = None
            self.dead_since = (now, s.index)

    def choose_active(self) -> None:
        """Next logged-in path after the one that died, in portal order (MRU: no failback)."""
        if self.active is not None or self.dead_since is None:
            return
        t_dead, old = self.dead_since
        n = len(self.sessions)
        for k in range(1, n + 1):
            s = self.sessions[(old + k) % n]
            if s.state == UP and not s.failed:
                self.active = s
                break
        if self.active is None:
            return
        self.dead_since = None
        self.fill()
        self.log.add(SWITCH, t_dead, time.time_ns(), OK, self.active.index, old)

    def fill(self) -> None:
        s = self.active
        while s is not None and not s.failed and len(self.inflight) < self.args.depth:
            if self.retry:
                io = self.retry.popleft()
            elif self.stopping:
                return
            else:
                op, lba = self.pattern.next()
                io = Io(op, lba, time.time_ns())
            if not self.issue(io, s):
                return

    def relogins(self) -> None:
        mono = time.monotonic_ns()
        for s in self.sessions:
            if s.state == DOWN and mono >= s.next_login and not self.stopping:
                s.begin_login(self.args.login_timeout_s)
            elif s.state == "login":
                done = s.login_result()
                if done:
                    self.log.add(UP, s.login_started, time.time_ns(), OK, s.index, 0)
                elif done is False:
                    s.next_login = time.monotonic_ns() + int(self.args.relogin_s * 1e9)

    def poll_once(self) -> None:
        poller = select.poll()
        owner: dict[int, Session] = {}
        for s in self.sessions:
            fd = s.fd
            if s.ctx and fd >= 0:
                ev = s.events()
                if ev:
                    poller.register(fd, ev)
                    owner[fd] = s
        wait_ms = 20
        if self.inflight:
            oldest = min(io.t_issue_mono for io in self.inflight.values())
            left = (oldest + self.io_timeout_ns - time.monotonic_ns()) / 1e6
            wait_ms = max(0, min(wait_ms, int(left) + 1))
        for fd, ev in poller.poll(wait_ms):
            owner[fd].service(ev)

    def check_timeouts(self) -> None:
        now = time.monotonic_ns()
        for io in self.inflight.values():
            if now - io.t_issue_mono > self.io_timeout_ns:
                s = self.sessions[io.path]
                if any(o is not s and o.state == UP and not o.failed for o in self.sessions):
                    s.failed = s.failed or "timeout"

    def run(self) -> int:
        args = self.args
        header = {"portals": [s.portal for s in self.sessions], "target": args.target,
                  "lun": args.lun, "initiator": args.initiator, "pattern": args.pattern,
                  "mix": args.mix, "depth": args.depth, "io_timeout_ms": args.io_timeout_ms,
                  "session_timeout_s": args.session_timeout_s, "relogin_s": args.relogin_s,
                  "seed": args.seed, "pid": os.getpid()}
        self.log = RecordLog(args.out, header)
        self.login_all()
        up = [s for s in self.sessions if s.state == UP]
        if not up:
            errors = {s.portal: s.error for s in self.sessions}
            self.log.close({"error": "no path logged in", "paths": errors})
            print(json.dumps({"error": "no path logged in", "paths": errors}), file=sys.stderr)
            return 2
        self.active = up[0]
        self.block, blocks = self.capacity(self.active)
        self.pattern = IoPattern(args.pattern, parse_mix(args.mix), blocks, self.block, args.seed)
        self.wbuf = ctypes.create_string_buffer(
            (b"vclab-iscsi-" * (self.pattern.io_bytes // 12 + 1))[: self.pattern.io_bytes])
        self.log.file.write("#capacity " + json.dumps(
            {"block_size": self.block, "blocks": blocks, "io_bytes": self.pattern.io_bytes,
             "active": self.active.index}) + "\n")
        t_start = time.time_ns()
        print("ready", t_start, flush=True)
        end = time.monotonic_ns() + int(args.duration * 1e9) if args.duration > 0 else None
        drain_deadline: int | None = None
        while True:
            if end is not None and time.monotonic_ns() >= end:
                self.stopping = True
            if self.stopping:
                drain_deadline = drain_deadline or time.monotonic_ns() + int(args.drain_s * 1e9)
                if not self.inflight and not self.retry or time.monotonic_ns() >= drain_deadline:
                    break
            self.fill()
            self.poll_once()
            self.check_timeouts()
            for s in self.sessions:
                if s.failed:
                    self.declare_down(s, 1 if s.failed == "timeout" else 2)
            self.relogins()
            self.choose_active()
            self.log.maybe_flush()
        now = time.time_ns()
        for io in list(self.inflight.values()) + list(self.retry):
            self.log.add(io.op, io.t_submit, now, UNFINISHED, io.path, io.attempts)
        self.inflight.clear()
        for s in self.sessions:
            s.close()
        self.log.close({"t_start_ns": t_start, "t_end_ns": now, **self.counts,
                        "errors": {s.portal: s.error for s in self.sessions if s.error}})
        return 0


# ---- one login (CHAP checks) and the COMPARE AND WRITE / reservation check ----

def login_once(portal: str, target: str, lun: int, initiator: str,
               chap: tuple[str, str] | None, timeout_s: float) -> tuple[Session, dict]:
    s = Session(0, portal, target, lun, initiator, chap)
    t0 = time.monotonic_ns()
    s.begin_login(timeout_s)
    wait_logins([s])
    ok = s.state == UP
    return s, {"ok": ok, "portal": s.portal, "ms": (time.monotonic_ns() - t0) / 1e6,
               "error": "" if ok else s.error}


def _step(name: str, ptr: int | None, s: Session, steps: list[dict]) -> dict:
    res = task_result(ptr, s.ctx)
    free_task(ptr)
    data = res.pop("data", b"")
    res["step"] = name
    steps.append(res)
    res["_data"] = data
    return res


def features(portal: str, target: str, lun: int, initiator: str,
             chap: tuple[str, str] | None, timeout_s: float) -> dict:
    """Is COMPARE AND WRITE (0x89) offered? Do PERSISTENT RESERVE IN/OUT work between two
    I_T nexuses (a reservation holder, another initiator that is refused, a preempt)?
    Uses the LUN's last 4 KiB: it writes there."""
    lib = libiscsi()
    a, res = login_once(portal, target, lun, initiator, chap, timeout_s)
    if not res["ok"]:
        return {"error": f"login failed: {res['error']}"}
    b, res = login_once(portal, target, lun, initiator + ":second", chap, timeout_s)
    if not res["ok"]:
        a.close()
        return {"error": f"second login failed: {res['error']}"}
    steps: list[dict] = []
    out: dict = {"steps": steps}
    try:
        cap = _step("read capacity(16)", lib.iscsi_readcapacity16_sync(a.ctx, lun), a, steps)
        bs = int.from_bytes(cap["_data"][8:12], "big")
        lba = int.from_bytes(cap["_data"][0:8], "big")  # the last block
        old, new = bytes([0xA5]) * bs, bytes([0x5A]) * bs

        def write(s: Session, name: str, data: bytes) -> dict:
            res = _step(name, lib.iscsi_write16_sync(s.ctx, lun, lba, data, bs, bs, 0, 0, 0, 0, 0),
                        s, steps)
            if res.get("sense_key") == SENSE_UNIT_ATTENTION:
                # Told once that its registration was preempted (what an initiator must hear
                # before it learns it lost the lock), then the real answer.
                res = _step(name + " (after unit attention)", lib.iscsi_write16_sync(
                    s.ctx, lun, lba, data, bs, bs, 0, 0, 0, 0, 0), s, steps)
            return res

        def read(s: Session, name: str) -> dict:
            return _step(name, lib.iscsi_read16_sync(s.ctx, lun, lba, bs, bs, 0, 0, 0, 0, 0),
                         s, steps)

        def caw(name: str, compare: bytes, data: bytes) -> dict:
            return _step(name, lib.iscsi_compareandwrite_sync(
                a.ctx, lun, lba, compare + data, 2 * bs, bs, 0, 0, 0, 0, 0), a, steps)

        write(a, "write old data", old)
        first = caw("compare and write (matching)", old, new)
        caw_out = {"opcode": "0x89", "status": first["status"], "sense": first.get("sense", "")}
        if first["status"] == "GOOD":
            caw_out["supported"] = read(a, "read back")["_data"] == new
            bad = caw("compare and write (stale compare)", old, old)
            caw_out["miscompare"] = bad.get("sense", bad["status"])
        else:
            caw_out["supported"] = False
        out["compare_and_write"] = caw_out

        def prout(s: Session, name: str, sa: int, key: int, sa_key: int, kind: int = 0) -> dict:
            params = _ProutBasic(key, sa_key, 0, 0, 0)
            return _step(name, lib.iscsi_persistent_reserve_out_sync(
                s.ctx, lun, sa, 0, kind, ctypes.byref(params)), s, steps)

        def prin(name: str, sa: int) -> dict:
            return _step(name, lib.iscsi_persistent_reserve_in_sync(a.ctx, lun, sa, 1024), a,
                         steps)

        ka, kb = 0x7663_0000_0000_000A, 0x7663_0000_0000_000B
        pr: dict = {}
        prout(a, "A registers", PR_REGISTER, 0, ka)
        prout(b, "B registers", PR_REGISTER, 0, kb)
        keys = prin("read keys", PR_IN_READ_KEYS)["_data"]
        pr["keys"] = [hex(int.from_bytes(keys[i:i + 8], "big")) for i in range(8, len(keys), 8)]
        pr["reserve"] = prout(a, "A reserves (write exclusive)", PR_RESERVE, ka, 0,
                              PR_WRITE_EXCLUSIVE)["status"]
        rsv = prin("read reservation", PR_IN_READ_RESERVATION)["_data"]
        if len(rsv) >= 22:
            pr["holder"] = hex(int.from_bytes(rsv[8:16], "big"))
            pr["type"] = rsv[21] & 0x0F
        pr["b_write_while_reserved"] = write(b, "B writes (must conflict)", old)["status"]
        pr["b_read_while_reserved"] = read(b, "B reads (allowed)")["status"]
        pr["a_write_while_reserved"] = write(a, "A writes (holder)", old)["status"]
        pr["b_preempts"] = prout(b, "B preempts A (takes a stale lock)", PR_PREEMPT, kb, ka,
                                 PR_WRITE_EXCLUSIVE)["status"]
        pr["a_write_after_preempt"] = write(a, "A writes after preempt", old)["status"]
        pr["release"] = prout(b, "B releases", PR_RELEASE, kb, 0, PR_WRITE_EXCLUSIVE)["status"]
        pr["a_write_after_release"] = write(a, "A writes after release", old)["status"]
        prout(b, "B unregisters", PR_REGISTER, kb, 0)
        prout(a, "A registers again", PR_REGISTER, 0, ka)  # A was removed by the preempt
        prout(a, "A unregisters", PR_REGISTER, ka, 0)
        pr["supported"] = (pr["reserve"] == "GOOD" and pr["b_write_while_reserved"]
                           == "RESERVATION_CONFLICT" and pr["a_write_while_reserved"] == "GOOD"
                           and pr["b_preempts"] == "GOOD"
                           and pr["a_write_after_preempt"] == "RESERVATION_CONFLICT")
        out["persistent_reservations"] = pr
    finally:
        for step in steps:
            step.pop("_data", None)
        a.close()
        b.close()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "login", "features"):
        c = sub.add_parser(name)
        c.add_argument("--portal", action="append", required=True,
                       help="portal address (repeat for more paths, in preference order)")
        c.add_argument("--target", required=True, help="target IQN")
        c.add_argument("--lun", type=int, default=1)
        c.add_argument("--initiator", default=f"iqn.2025-01.lab.vclab:initiator-{os.getpid()}")
        c.add_argument("--chap-user", default="",
                       help="CHAP user; the secret comes from $VCLAB_CHAP_SECRET (not argv)")
        c.add_argument("--login-timeout-s", type=float, default=3.0)
        if name == "run":
            c.add_argument("--pattern", choices=sorted(PATTERNS), default="random-4k")
            c.add_argument("--mix", default="70/30", help="read/write percent")
            c.add_argument("--depth", type=int, default=1, help="I/Os in flight")
            c.add_argument("--io-timeout-ms", type=float, default=1000.0,
                           help="an I/O older than this declares its path dead")
            c.add_argument("--session-timeout-s", type=float, default=15.0,
                           help="TCP_USER_TIMEOUT: a session silent this long fails")
            c.add_argument("--relogin-s", type=float, default=1.0,
                           help="wait between login attempts on a dead path")
            c.add_argument("--drain-s", type=float, default=2.0,
                           help="after a stop request, wait this long for I/O in flight")
            c.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until SIGTERM")
            c.add_argument("--seed", type=int, default=0)
            c.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chap = (args.chap_user, os.environ.get("VCLAB_CHAP_SECRET", "")) if args.chap_user else None
    if args.command == "login":
        s, res = login_once(args.portal[0], args.target, args.lun, args.initiator, chap,
                            args.login_timeout_s)
        s.close()
        print(json.dumps(res))
        return 0 if res["ok"] else 1
    if args.command == "features":
        res = features(args.portal[0], args.target, args.lun, args.initiator, chap,
                       args.login_timeout_s)
        print(json.dumps(res))
        return 0 if "error" not in res else 1
    try:
        parse_mix(args.mix)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if args.depth < 1 or args.io_timeout_ms <= 0:
        print("--depth must be >= 1 and --io-timeout-ms > 0", file=sys.stderr)
        return 2
    agent = Agent(args)
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
