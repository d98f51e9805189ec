"""The shared-datastore lock protocol as pure code: timing rule, lock transitions, and a
simulation of hosts, clocks and a storage network used by the property tests.

Protocol (as VMFS does it, on a LUN every host reaches over iSCSI):
- Every host writes its heartbeat slot every `heartbeat_s` with a generation that grows by one.
  A lock record names its owner host and a generation (epoch) that grows with every change of
  owner; the owner keeps its locks by keeping its heartbeat going, not by rewriting them.
- Acquire, release and break are read-modify-writes of one lock record, made atomic by the
  target: SCSI COMPARE AND WRITE where offered, else a persistent reservation (write
  exclusive) held around the read and the write.
- A host that wants a lock held by another watches the owner's heartbeat slot; only after
  seeing its generation unchanged for `break_after_s` (by its own clock) does it break the lock
  (in the same atomic step: still that owner and generation, heartbeat still unchanged).

No split brain without a global clock. The owner counts its lease from the moment it
*submitted* its last heartbeat write that succeeded (the write landed after that moment), and
issues a VM write only while more than `write_gate_s` of the lease is left. Its sessions run
with TCP_USER_TIMEOUT = `io_timeout_s`, so anything it sent either lands within `io_timeout_s`
of being sent or never lands: all its writes land before submit + lease_s (its clock). The
taker first saw that heartbeat generation after it landed, so after the submit; it waits
`break_after_s` by its clock. Clocks run at rates within 1 +- drift of true time, so:

    write_gate_s   = (io_timeout_s + slack_s) * (1 + drift)  (slack: scheduling between the
                                                               gate check and the send)
    break_after_s  > lease_s * (1 + drift) / (1 - drift)     (the no-split-brain inequality)

i.e. break_after_s > lease_s + margin_s with margin_s = lease_s * 2 drift / (1 - drift).
Network delay does not enter the inequality: the owner's lease is anchored before its
heartbeat landed and the taker's timer after it. It enters the gate, through io_timeout_s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from vclab.workloads.locking.layout import EXCLUSIVE, FREE, LockRecord

COMPARE_AND_WRITE = "compare-and-write"
PERSISTENT_RESERVATION = "persistent-reservation"
PRIMITIVES = (COMPARE_AND_WRITE, PERSISTENT_RESERVATION)


class Timing(BaseModel):
    """The lock manager's timers, in seconds (clock rates within 1 +- drift)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    heartbeat_s: float = Field(0.2, gt=0)
    lease_s: float = Field(1.0, gt=0)
    break_after_s: float = Field(2.0, gt=0)
    io_timeout_s: float = Field(0.3, gt=0, description="TCP_USER_TIMEOUT of the sessions")
    drift: float = Field(0.001, ge=0, lt=0.5, description="max clock rate error")
    slack_s: float = Field(0.05, ge=0, description="max delay between gate check and send")
    poll_s: float = Field(0.05, gt=0, description="how often a waiter reads the owner's slot")
    write_interval_s: float = Field(0.02, gt=0, description="a VM's disk writes")
    reservation_timeout_s: float = Field(0.5, gt=0,
                                         description="a reservation held this long is preempted")

    @property
    def write_gate_s(self) -> float:
        return (self.io_timeout_s + self.slack_s) * (1 + self.drift)

    @property
    def min_break_after_s(self) -> float:
        return self.lease_s * (1 + self.drift) / (1 - self.drift)

    @property
    def margin_s(self) -> float:
        return self.min_break_after_s - self.lease_s

    def problems(self) -> list[str]:
        """Why these timers are unsafe or cannot work; empty if fine."""
        out = []
        if self.break_after_s <= self.min_break_after_s:
            out.append(f"break_after_s {self.break_after_s:g} must exceed lease_s * (1 + drift) "
                       f"/ (1 - drift) = {self.min_break_after_s:.4g}: a host could break a "
                       "lock whose owner still writes (split brain)")
        if self.write_gate_s + self.heartbeat_s >= self.lease_s:
            out.append(f"lease_s {self.lease_s:g} must exceed heartbeat_s + io_timeout_s * "
                       f"(1 + drift) + slack_s = {self.write_gate_s + self.heartbeat_s:.4g}, "
                       "or an owner stops writing between two good heartbeats")
        return out


@dataclass
class Lease:
    """The owner's side: may it still issue writes? Times are its own monotonic clock."""

    timing: Timing
    last_ok: float | None = None  # submit time of the newest heartbeat write that succeeded

    def renewed(self, submitted: float) -> None:
        if self.last_ok is None or submitted > self.last_ok:
            self.last_ok = submitted

    def left(self, now: float) -> float:
        return -1.0 if self.last_ok is None else self.last_ok + self.timing.lease_s - now

    def valid(self, now: float) -> bool:
        return self.left(now) > 0

    def may_write(self, now: float) -> bool:
        return self.left(now) > self.timing.write_gate_s


@dataclass
class StaleWatch:
    """The taker's side: how long has the owner's heartbeat generation stood still?"""

    value: tuple | None = None
    first_seen: float = 0.0

    def observe(self, now: float, value: tuple) -> float:
        """Record what was read at `now` (when the read completed); seconds unchanged."""
        if value != self.value:
            self.value, self.first_seen = value, now
        return now - self.first_seen


# ---- lock record transitions (applied atomically under CAW or a reservation) ----

def acquire(rec: LockRecord, host: int, wall_ns: int = 0, name: str = "",
            mode: int = EXCLUSIVE) -> LockRecord | None:
    """Take a free lock, or re-take our own (a restarted host, or an answer lost on the way
    back): either way a new epoch, so its writes never mix with an earlier one's. None if
    another host holds it."""
    if rec.free or rec.owner == host:
        return LockRecord(rec.vm, host, mode, rec.generation + 1, wall_ns, name or rec.name)
    return None


def release(rec: LockRecord, host: int, generation: int, wall_ns: int = 0) -> LockRecord | None:
    """Free our lock; None if it is no longer ours (broken meanwhile): nothing to write."""
    if rec.owner != host or rec.generation != generation or rec.free:
        return None
    return LockRecord(rec.vm, 0, FREE, rec.generation, wall_ns, rec.name)


def break_lock(rec: LockRecord, host: int, owner: int, generation: int,
               wall_ns: int = 0) -> LockRecord | None:
    """Take a stale lock from `owner`; None unless it is still that owner's, that epoch."""
    if rec.free or rec.owner != owner or rec.generation != generation:
        return None
    return LockRecord(rec.vm, host, rec.mode, rec.generation + 1, wall_ns, rec.name)


# ---- simulation: hosts, clocks, a storage network, one lock ----

@dataclass(frozen=True)
class HostFaults:
    """What happens to one host: its clock rate, when it crashes, when its storage path is cut
    (intervals of true time, end None = never restored)."""

    rate: float = 1.0
    crash_at: float | None = None
    partitions: tuple[tuple[float, float | None], ...] = ()

    def down(self, t: float) -> bool:
        return any(a <= t and (b is None or t < b) for a, b in self.partitions)

    def heal_after(self, t: float) -> float | None:
        """First time >= t the path is up (None: never)."""
        while self.down(t):
            ends = [b for a, b in self.partitions if a <= t and (b is None or t < b)]
            if None in ends:
                return None
            t = max(ends)
        return t


@dataclass
class _Op:
    kind: str  # hb | data | watch | break | verify
    land: float | None
    done: float
    ok: bool
    arg: tuple = ()
    result: tuple = ()


@dataclass
class _Host:
    hid: int
    faults: HostFaults
    hb_gen: int = 0
    last_ok: float | None = None  # local
    next_hb: float = 0.0
    next_write: float = 0.0
    next_poll: float = 0.0
    owner_gen: int | None = None
    suspended: bool = False
    wants: bool = False
    watch: StaleWatch = field(default_factory=StaleWatch)
    op: _Op | None = None
    seq: int = 0


@dataclass
class SimResult:
    writes: list[tuple[float, int, int]]  # (true landing time, host, generation)
    acquired: list[tuple[float, int, int, str]]  # (true time, host, generation, how)
    lease_lost: list[tuple[float, int]]

    def dual_writes(self) -> list[tuple[tuple[float, int, int], tuple[float, int, int]]]:
        """Pairs (older epoch's write, newer epoch's earlier write): a write of epoch g landing
        after one of epoch g' > g means two hosts wrote the VM's disk in the same period."""
        bad = []
        first: dict[int, tuple[float, int, int]] = {}
        for w in sorted(self.writes):
            first.setdefault(w[2], w)
        for w in self.writes:
            later = [f for g, f in first.items() if g > w[2] and f[0] < w[0]]
            if later:
                bad.append((w, min(later)))
        return bad


def simulate(timing: Timing, faults: list[HostFaults], *, until: float = 8.0, seed: int = 0,
             max_delay_s: float | None = None, step_s: float = 0.002) -> SimResult:
    """Host 1 holds the VM's lock at t=0 and writes its disk; every other host wants it.
    Each host runs one storage command at a time (as the agent does). A command sent at t
    lands after a random delay below `max_delay_s` if the host's path is up then, or when the
    path heals if that is within io_timeout_s of sending (TCP retransmits), else never; its
    answer comes back after another such delay if the path is up, else the host sees it fail
    at send + io_timeout_s (though it may have landed). A crashed host stops; what it already
    sent may still land."""
    rng = random.Random(seed)
    U = timing.io_timeout_s
    max_delay = 0.005 if max_delay_s is None else max_delay_s
    hosts = [_Host(i + 1, f) for i, f in enumerate(faults)]
    hb = {h.hid: 0 for h in hosts}
    lock = {"owner": 1, "gen": 1}
    hosts[0].owner_gen, hosts[0].last_ok = 1, 0.0
    for h in hosts[1:]:
        h.wants = True
    effects: list[tuple[float, int, _Op, _Host]] = []  # (landing time, tiebreak, op, host)
    res = SimResult([], [(0.0, 1, 1, "initial")], [])
    counter = 0

    def local(h: _Host, t: float) -> float:
        return t * h.faults.rate

    def send(h: _Host, t: float, kind: str, arg: tuple = ()) -> None:
        nonlocal counter
        sent = t + rng.uniform(0, timing.slack_s)
        land: float | None = sent + rng.uniform(0, max_delay)
        if h.faults.down(land):
            healed = h.faults.heal_after(land)
            land = healed if healed is not None and healed < sent + U else None
        back = None if land is None else land + rng.uniform(0, max_delay)
        ok = back is not None and back < sent + U and not h.faults.down(back)
        op = _Op(kind, land, back if ok else sent + U, ok, arg)
        h.op = op
        if land is not None:
            counter += 1
            effects.append((land, counter, op, h))

    def apply(op: _Op, h: _Host) -> None:
        if op.kind == "hb":
            hb[h.hid] = op.arg[0]
        elif op.kind == "data":
            res.writes.append((op.land, h.hid, op.arg[0]))
        elif op.kind in ("watch", "verify"):
            owner = lock["owner"]
            op.result = (owner, lock["gen"], hb.get(owner, 0))
        elif op.kind == "break":
            owner, gen, seen = op.arg
            if lock["owner"] in (0, owner) and lock["gen"] == gen and (
                    lock["owner"] == 0 or hb[owner] == seen):
                lock["owner"], lock["gen"] = h.hid, gen + 1
                op.result = (h.hid, gen + 1)
                res.acquired.append((op.land, h.hid, gen + 1, "free" if seen is None else "broken"))
            else:
                op.result = (lock["owner"], lock["gen"])

    def complete(h: _Host, op: _Op, t: float) -> None:
        now = local(h, t)
        if op.kind == "hb" and op.ok:
            h.last_ok = max(h.last_ok or 0.0, op.arg[1])
        elif op.kind == "watch" and op.ok:
            owner, gen, seen = op.result
            if owner == h.hid:
                h.owner_gen, h.wants, h.suspended = gen, False, False
            elif owner == 0:
                h.watch = StaleWatch((0, gen, None), -1e9)  # free: take it at once
            else:
                h.watch.observe(now, (owner, gen, seen))
        elif op.kind == "break" and op.ok and op.result[0] == h.hid:
            h.owner_gen, h.wants, h.suspended = op.result[1], False, False
        elif op.kind == "verify" and op.ok:
            owner, gen, _ = op.result
            if owner == h.hid and gen == h.owner_gen:
                h.suspended = False
            else:
                h.owner_gen = None  # lost it to a taker: the VM runs elsewhere now

    def next_op(h: _Host, t: float) -> None:
        now = local(h, t)
        lease = Lease(timing, h.last_ok)
        if h.owner_gen is not None and not lease.may_write(now) and not h.suspended:
            h.suspended = True
            res.lease_lost.append((t, h.hid))
        if now >= h.next_hb:
            h.next_hb = now + timing.heartbeat_s
            h.hb_gen += 1
            send(h, t, "hb", (h.hb_gen, now))
        elif h.owner_gen is not None and h.suspended and lease.may_write(now):
            send(h, t, "verify")
        elif h.owner_gen is not None and not h.suspended and now >= h.next_write:
            h.next_write = now + timing.write_interval_s
            send(h, t, "data", (h.owner_gen,))
        elif h.wants and now >= h.next_poll:
            h.next_poll = now + timing.poll_s
            w = h.watch
            if w.value is not None and now - w.first_seen >= timing.break_after_s \
                    and lease.valid(now):
                owner, gen, seen = w.value
                send(h, t, "break", (owner, gen, seen))
            else:
                send(h, t, "watch")

    t = 0.0
    while t < until:
        effects.sort(key=lambda e: (e[0], e[1]))
        while effects and effects[0][0] <= t:
            _, _, op, h = effects.pop(0)
            apply(op, h)
        for h in hosts:
            if h.faults.crash_at is not None and t >= h.faults.crash_at:
                continue
            if h.op is not None and t >= h.op.done and (h.op.land is None or h.op.land <= t):
                op, h.op = h.op, None
                complete(h, op, t)
            if h.op is None:
                next_op(h, t)
        t += step_s
    return res
