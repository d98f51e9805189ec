"""The per-hypervisor lock manager: heartbeats, VM file locks and the VMs' disk writes on a
shared LUN, over iSCSI (libiscsi through ctypes: iscsi/libiscsi.py; the session: disk.py).

    python -m vclab.workloads.locking.agent --host-id 1 --portal IP [--portal IP] --target IQN --lun 1 \\
        --vm web=0 --vm db=1 [--timing JSON] [--primitive auto] --log FILE

Commands on stdin, one per line: `acquire VM` (take it; if another host holds it, watch that
host's heartbeat and break the lock once it stood still for break_after_s, as HA restarting the
VM there would), `release VM` (power-off, or the source's side of a vMotion handover), `stop`.
Events go to stdout and the log as JSON lines {"t": CLOCK_REALTIME ns, "event": ..., ...}.

Everything runs in one thread with synchronous SCSI commands, one at a time. That is what
keeps the no-split-brain rule simple: a VM write is only sent after the lease check just
before it (model.Lease.may_write), and the session's TCP_USER_TIMEOUT (= io_timeout_s) bounds
when anything sent can still land. While a command hangs on a cut path nothing else is sent.

Atomic read-modify-write of a lock record: COMPARE AND WRITE when the target offers it (probed
at start on a scratch block), else a persistent reservation (WRITE EXCLUSIVE) held around the
read and the write. While one host holds it, the others' heartbeat and VM writes get
RESERVATION CONFLICT and are retried: the stall SCSI-2-reservation era VMFS was known for. A
reservation held longer than reservation_timeout_s (its holder died mid-update) is preempted;
the preempter then waits write_gate_s before reading, so a write the old holder still had in
flight has landed or died, and the old holder sends its record write only within
rmw_budget_s of asking for its reservation, so it cannot land after the preempter released.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vclab.workloads.locking import layout
from vclab.workloads.locking.layout import DataBlock, Heartbeat, LockRecord
from vclab.workloads.locking.disk import GOOD, CONFLICT, PathDown, Busy, key_of, Disk
from vclab.workloads.locking.model import (
    COMPARE_AND_WRITE,
    PERSISTENT_RESERVATION,
    PRIMITIVES,
    Lease,
    StaleWatch,
    Timing,
    acquire,
    break_lock,
    release,
)

def rmw_budget_s(t: Timing) -> float:
    """How long after asking for its reservation a holder may still send its record write
    (see the module docstring): a preempter holds the reservation for write_gate_s first."""
    return t.write_gate_s * (1 - t.drift) / (1 + t.drift) - t.slack_s


# ---- the lock manager ----

@dataclass
class Held:
    vm: int
    name: str
    generation: int
    seq: int = 0
    suspended: bool = False
    writes: int = 0
    first_ns: int = 0
    last_ns: int = 0


@dataclass
class Wanted:
    vm: int
    name: str
    since: float  # monotonic, when asked
    since_ns: int
    watch: StaleWatch = field(default_factory=StaleWatch)
    next_poll: float = 0.0
    busy_logged: tuple | None = None


class LockAgent:
    """One host's lock manager. `disk` needs the Disk methods; `emit(event, **fields)`."""

    def __init__(self, disk: Disk, host: int, timing: Timing, vms: dict[str, int],
                 emit: Callable[..., None], primitive: str = "auto",
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 wall: Callable[[], int] = time.time_ns) -> None:
        self.disk, self.host, self.timing, self.vms = disk, host, timing, vms
        self.names = {v: k for k, v in vms.items()}
        self.emit, self.clock, self.sleep, self.wall = emit, clock, sleep, wall
        self.requested_primitive = primitive
        self.primitive = ""
        self.key = key_of(host)
        self.lease = Lease(timing)
        self.hb_gen = 0
        self.next_hb = 0.0
        self.next_write = 0.0
        self.next_login = 0.0
        self.held: dict[int, Held] = {}
        self.wanted: dict[int, Wanted] = {}
        # VMs powered off or handed over: writes stopped, lock record not yet freed (a path
        # failure mid-update leaves it here to retry)
        self.releasing: dict[int, tuple[Held, float, int]] = {}
        self.io_stopped = True  # until the first heartbeat lands
        self.lost_lease = False
        self.rsv_watch = StaleWatch()  # who holds the reservation, since when
        self.counts = {"hb_ok": 0, "hb_failed": 0, "hb_conflicts": 0, "writes": 0,
                       "write_conflicts": 0, "writes_gated": 0, "rmw": 0, "rmw_busy": 0,
                       "reservation_conflicts": 0, "preempts": 0, "path_down": 0}

    # -- start --
    def start(self) -> None:
        portal = self.disk.connect()
        if portal is None:
            raise PathDown(f"no portal answered: {self.disk.error}")
        self.emit("path_up", portal=portal)
        self.disk.register(self.key)
        slot = Heartbeat.unpack(self.disk.read(layout.heartbeat_lba(self.host)))
        self.hb_gen = slot.generation if slot else 0  # a restarted host goes on counting
        self.primitive = self.detect_primitive()
        self.emit("start", host=self.host, atomic_primitive=self.primitive,
                  block_size=self.disk.block, key=hex(self.key), timing=self.timing.model_dump())

    def detect_primitive(self) -> str:
        if self.requested_primitive != "auto":
            return self.requested_primitive
        old = self.disk.read(layout.SCRATCH_LBA)
        status = self.disk.compare_and_write(layout.SCRATCH_LBA, old, old)
        return COMPARE_AND_WRITE if status == GOOD else PERSISTENT_RESERVATION

    # -- commands --
    def command(self, line: str) -> bool:
        """Handle one stdin line; False on `stop`."""
        words = line.split()
        if not words:
            return True
        if words[0] == "stop":
            return False
        if words[0] in ("acquire", "release") and len(words) == 2 and words[1] in self.vms:
            vm = self.vms[words[1]]
            if words[0] == "acquire":
                if vm not in self.held and vm not in self.wanted:
                    self.wanted[vm] = Wanted(vm, words[1], self.clock(), self.wall())
            else:
                self.wanted.pop(vm, None)
                h = self.held.pop(vm, None)
                if h is not None:
                    self.releasing[vm] = (h, self.clock(), self.wall())
                    self.release_pending()
            return True
        self.emit("error", message=f"unknown command {line.strip()!r}",
                  vms=sorted(self.vms))
        return True

    # -- one pass of the loop --
    def tick(self) -> None:
        now = self.clock()
        if not self.disk.up:
            if now < self.next_login:
                self.check_lease(now)
                return
            t0 = self.wall()
            portal = self.disk.connect()
            if portal is None:
                self.next_login = self.clock() + min(0.2, self.timing.heartbeat_s)
                self.check_lease(self.clock())
                return
            self.disk.register(self.key)
            self.emit("path_up", portal=portal, login_ms=(self.wall() - t0) / 1e6)
            self.next_hb = now  # renew the lease at once, not a heartbeat interval later
        if now >= self.next_hb:
            self.next_hb = now + self.timing.heartbeat_s
            self.heartbeat()
        self.check_lease(self.clock())
        self.release_pending()
        for h in list(self.held.values()):
            if h.suspended and self.lease.may_write(self.clock()):
                self.verify(h)
        for w in list(self.wanted.values()):
            if self.clock() >= w.next_poll:
                w.next_poll = self.clock() + self.timing.poll_s
                self.try_acquire(w)
        if self.clock() >= self.next_write:
            self.next_write = self.clock() + self.timing.write_interval_s
            for h in list(self.held.values()):
                self.write_vm(h)

    def next_wake(self) -> float:
        times = [self.next_hb]
        if self.held:
            times.append(self.next_write)
        times += [w.next_poll for w in self.wanted.values()]
        if not self.disk.up:
            times.append(self.next_login)
        return max(0.0, min(times) - self.clock())

    def heartbeat(self) -> None:
        self.hb_gen += 1
        deadline = self.clock() + self.timing.heartbeat_s
        while True:
            submitted = self.clock()
            status = self.disk.write(layout.heartbeat_lba(self.host),
                                     Heartbeat(self.host, self.hb_gen, self.wall()).pack())
            if status == GOOD:
                self.lease.renewed(submitted)
                self.counts["hb_ok"] += 1
                return
            if status != CONFLICT or self.clock() >= deadline:
                self.counts["hb_failed"] += 1
                return
            self.counts["hb_conflicts"] += 1  # another host's lock update: retry
            if self.preempt_stale() is not None:
                self.disk.release(self.key)  # we only wanted it gone
            self.sleep(0.002)

    def check_lease(self, now: float) -> None:
        if self.lease.may_write(now):
            if self.io_stopped:
                self.io_stopped = False
                if self.lost_lease:
                    self.emit("lease_back")
            return
        if self.io_stopped:
            return
        self.io_stopped = self.lost_lease = True
        for h in self.held.values():
            h.suspended = True
        # When the gate really closed, not when this loop noticed (a hung command delays us).
        closed = (self.lease.last_ok or now) + self.timing.lease_s - self.timing.write_gate_s
        last = self.lease.last_ok if self.lease.last_ok is not None else now
        self.emit("lease_lost", t=self.wall() - int((now - closed) * 1e9),
                  last_heartbeat=self.wall() - int((now - last) * 1e9),
                  noticed_late_ms=(now - closed) * 1e3,
                  held=[self.names.get(v, v) for v in self.held])

    # -- VM disk writes --
    def write_vm(self, h: Held) -> None:
        if h.suspended or not self.lease.may_write(self.clock()):
            self.counts["writes_gated"] += 1
            return
        now_ns = self.wall()
        block = DataBlock(h.vm, self.host, h.generation, h.seq, now_ns)
        status = self.disk.write(layout.data_lba(h.vm, h.generation, h.seq), block.pack())
        if status == GOOD:
            h.seq += 1
            h.writes += 1
            h.first_ns = h.first_ns or now_ns
            h.last_ns = now_ns
            self.counts["writes"] += 1
        elif status == CONFLICT:
            self.counts["write_conflicts"] += 1

    # -- atomic updates of lock records --
    def update(self, vm: int, change: Callable[[LockRecord], LockRecord | None],
               check: Callable[[], bool] = lambda: True) -> tuple[LockRecord, bool]:
        """Apply `change` to VM `vm`'s lock record atomically. (record now, changed?).
        `check` runs inside the atomic section and may veto the change."""
        lba = layout.lock_lba(vm)
        self.counts["rmw"] += 1
        if self.primitive == COMPARE_AND_WRITE:
            for _ in range(20):
                old = self.disk.read(lba)
                rec = LockRecord.unpack(old, vm)
                new = change(rec)
                if new is None or not check():
                    return rec, False
                status = self.disk.compare_and_write(lba, old[:layout.RECORD], new.pack())
                if status == GOOD:
                    return new, True
                if status != "MISCOMPARE":
                    raise Busy(f"COMPARE AND WRITE: {status}")
            raise Busy("lock record kept changing")
        asked = self.reserve()
        try:
            rec = LockRecord.unpack(self.disk.read(lba), vm)
            new = change(rec)
            if new is None or not check():
                return rec, False
            if self.clock() - asked > rmw_budget_s(self.timing):
                raise Busy("reservation held too long to write safely")
            status = self.disk.write(lba, new.pack())
            if status != GOOD:
                raise Busy(f"lock record write: {status} (reservation preempted)")
            return new, True
        finally:
            if self.disk.up:
                self.disk.release(self.key)

    def reserve(self) -> float:
        """Hold the LUN's reservation; the monotonic time we asked for it."""
        t = self.timing
        deadline = self.clock() + 2 * t.reservation_timeout_s + t.write_gate_s + 1.0
        while True:
            asked = self.clock()
            status = self.disk.reserve(self.key)
            if status == GOOD:
                return asked
            if status != CONFLICT:
                raise Busy(f"reserve: {status}")
            self.counts["reservation_conflicts"] += 1
            took = self.preempt_stale()
            if took is not None:
                return took
            if self.clock() >= deadline:
                raise Busy("reservation not obtained")
            self.sleep(0.002)

    def preempt_stale(self) -> float | None:
        """A reservation held by one key for reservation_timeout_s (its holder died or lost
        its path mid-update; heartbeats of every host are blocked meanwhile) is preempted.
        Returns when we hold it (monotonic), or None."""
        holder = self.disk.holder()
        if holder is None:
            self.disk.register(self.key)  # we were preempted ourselves: register again
            self.rsv_watch = StaleWatch()
            return None
        if self.rsv_watch.observe(self.clock(), (holder,)) < self.timing.reservation_timeout_s:
            return None
        self.rsv_watch = StaleWatch()
        if self.disk.preempt(self.key, holder) != GOOD:
            return None
        self.counts["preempts"] += 1
        self.emit("preempted", victim=hex(holder))
        # What the old holder still had in flight lands or dies meanwhile.
        self.sleep(self.timing.write_gate_s)
        return self.clock()

    def try_acquire(self, w: Wanted) -> None:
        if not self.lease.may_write(self.clock()):
            return  # our own heartbeat is not current: do not take locks
        t0 = self.clock()
        rec = LockRecord.unpack(self.disk.read(layout.lock_lba(w.vm)), w.vm)
        how = "free"
        change: Callable[[LockRecord], LockRecord | None]
        check: Callable[[], bool] = lambda: True
        if rec.free or rec.owner == self.host:
            def change(r: LockRecord) -> LockRecord | None:
                return acquire(r, self.host, self.wall(), w.name)
        else:
            slot = Heartbeat.unpack(self.disk.read(layout.heartbeat_lba(rec.owner)))
            seen = (rec.owner, rec.generation, slot.generation if slot else 0)
            stood = w.watch.observe(self.clock(), seen)
            if stood < self.timing.break_after_s:
                if w.busy_logged != seen[:2]:
                    w.busy_logged = seen[:2]
                    self.emit("busy", vm=w.name, owner=rec.owner, generation=rec.generation)
                return
            how = "broken"

            def change(r: LockRecord) -> LockRecord | None:
                return break_lock(r, self.host, seen[0], seen[1], self.wall())

            def check() -> bool:  # inside the atomic section: the owner is still silent
                now = Heartbeat.unpack(self.disk.read(layout.heartbeat_lba(seen[0])))
                return (now.generation if now else 0) == seen[2]
        try:
            new, changed = self.update(w.vm, change, check)
        except Busy as e:
            self.counts["rmw_busy"] += 1
            self.emit("rmw_busy", vm=w.name, reason=str(e))
            return
        if not changed or new.owner != self.host:
            w.watch = StaleWatch()  # it moved: watch afresh
            return
        del self.wanted[w.vm]
        self.held[w.vm] = Held(w.vm, w.name, new.generation)
        self.next_write = self.clock()
        self.emit("acquired", vm=w.name, generation=new.generation, how=how,
                  previous_owner=rec.owner if how == "broken" else 0,
                  waited_ms=(self.clock() - w.since) * 1e3, rmw_ms=(self.clock() - t0) * 1e3,
                  requested=w.since_ns)

    def release_pending(self) -> None:
        for vm, (h, t0, t0_ns) in list(self.releasing.items()):
            try:
                rec, changed = self.update(vm, lambda r: release(r, self.host, h.generation,
                                                                 self.wall()))
            except Busy as e:
                self.emit("rmw_busy", vm=h.name, reason=str(e))
                continue
            del self.releasing[vm]
            self.emit("released", vm=h.name, generation=h.generation, changed=changed,
                      owner_now=rec.owner, started=t0_ns, rmw_ms=(self.clock() - t0) * 1e3,
                      writes=h.writes, first_write=h.first_ns, last_write=h.last_ns)

    def verify(self, h: Held) -> None:
        """Our lease is back after a gap: is the lock still ours, or was it broken?"""
        rec = LockRecord.unpack(self.disk.read(layout.lock_lba(h.vm)), h.vm)
        if rec.owner == self.host and rec.generation == h.generation:
            h.suspended = False
            self.emit("lock_kept", vm=h.name, generation=h.generation)
        else:
            del self.held[h.vm]
            self.emit("lock_lost", vm=h.name, generation=h.generation, owner_now=rec.owner,
                      generation_now=rec.generation, writes=h.writes, last_write=h.last_ns)

    def path_down(self, error: str) -> None:
        self.counts["path_down"] += 1
        self.disk.close()
        self.next_login = self.clock() + min(0.2, self.timing.heartbeat_s)
        self.emit("path_down", error=error)

    def stats(self) -> dict:
        return {**self.counts, "held": {h.name: {"generation": h.generation, "writes": h.writes,
                                                 "first_write": h.first_ns,
                                                 "last_write": h.last_ns}
                                        for h in self.held.values()}}


# ---- the program ----

def parse_vms(items: list[str]) -> dict[str, int]:
    """['web=0', 'db=1'] -> {'web': 0, 'db': 1}."""
    vms = {}
    for item in items:
        name, _, index = item.partition("=")
        if not name or not index.isdigit():
            raise ValueError(f"--vm {item!r}: use NAME=INDEX, e.g. web=0")
        layout.lock_lba(int(index))
        vms[name] = int(index)
    return vms


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host-id", type=int, required=True)
    p.add_argument("--portal", action="append", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--lun", type=int, default=1)
    p.add_argument("--initiator", default="")
    p.add_argument("--vm", action="append", default=[], help="NAME=INDEX (lock record index)")
    p.add_argument("--timing", default="{}", help="JSON of model.Timing fields")
    p.add_argument("--primitive", choices=("auto", *PRIMITIVES), default="auto")
    p.add_argument("--start-timeout-s", type=float, default=10.0,
                   help="keep trying to log in for this long before giving up")
    p.add_argument("--log", type=Path, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    timing = Timing.model_validate_json(args.timing)
    problems = timing.problems()
    vms = parse_vms(args.vm)
    log = args.log.open("a")

    def emit(event: str, t: int | None = None, **fields: object) -> None:
        line = json.dumps({"t": t or time.time_ns(), "event": event, **fields})
        log.write(line + "\n")
        log.flush()
        print(line, flush=True)

    if problems:
        emit("error", message="; ".join(problems))
        return 2
    stopping = False

    def on_signal(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    initiator = args.initiator or f"iqn.2025-01.lab.vclab:lock-host{args.host_id}"
    disk = Disk(args.portal, args.target, args.lun, initiator, timing.io_timeout_s)
    agent = LockAgent(disk, args.host_id, timing, vms, emit, args.primitive)
    # A port just set up again, or a busy shared switch, can miss one login: keep trying.
    deadline = time.monotonic() + args.start_timeout_s
    while True:
        try:
            agent.start()
            break
        except PathDown as e:
            disk.close()
            if time.monotonic() >= deadline or stopping:
                emit("error", message=f"cannot start: {e}")
                return 1
            time.sleep(0.2)
    emit("ready", pid=os.getpid())
    stdin_open = True
    while not stopping:
        wait = agent.next_wake()
        if stdin_open:
            ready, _, _ = select.select([sys.stdin], [], [], min(wait, 0.05))
            if ready:
                line = sys.stdin.readline()
                if not line:
                    stdin_open = False
                    continue
                try:
                    if not agent.command(line):
                        break
                except PathDown as e:
                    agent.path_down(str(e))
        else:
            time.sleep(min(wait, 0.05))
        try:
            agent.tick()
        except PathDown as e:
            agent.path_down(str(e))
    # A clean shutdown powers the VMs off: their locks are released.
    try:
        for vm in list(agent.held):
            agent.command(f"release {agent.names[vm]}")
    except PathDown:
        pass
    emit("stopped", **agent.stats())
    disk.close()
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
