"""The lock agent's logic on an in-memory LUN with SCSI reservation and COMPARE AND WRITE
semantics and a virtual clock: no root, no iSCSI."""

from __future__ import annotations

import pytest

from vclab.workloads.locking import checker, layout
from vclab.workloads.locking.agent import LockAgent, rmw_budget_s
from vclab.workloads.locking.disk import CONFLICT, GOOD, PathDown, key_of
from vclab.workloads.locking.layout import DataBlock
from vclab.workloads.locking.model import Timing

T = Timing(heartbeat_s=0.2, lease_s=1.5, break_after_s=3.0, io_timeout_s=0.5)
STEP = 0.005


class FakeLun:
    def __init__(self, caw: bool) -> None:
        self.blocks: dict[int, bytes] = {}
        self.caw = caw
        self.holder_nexus: str | None = None
        self.regs: dict[str, int] = {}

    def data_blocks(self, vm: int) -> list[DataBlock]:
        base = layout.vm_base(vm)
        found = [DataBlock.unpack(b) for lba, b in self.blocks.items()
                 if base <= lba < base + layout.VM_BLOCKS]
        return [b for b in found if b is not None]


class FakeDisk:
    """One initiator's view: writes by non-holders conflict while a reservation is held."""

    block = 512

    def __init__(self, lun: FakeLun, nexus: str) -> None:
        self.lun, self.nexus = lun, nexus
        self.cut = False
        self.connected = False
        self.error = ""

    @property
    def up(self) -> bool:
        return self.connected

    def connect(self) -> str | None:
        if self.cut:
            self.error = "no route"
            return None
        self.connected = True
        return "fake:3260"

    def close(self) -> None:
        self.connected = False

    def _check(self) -> None:
        if self.cut or not self.connected:
            self.connected = False
            raise PathDown("cut")

    def _may_write(self) -> bool:
        return self.lun.holder_nexus in (None, self.nexus)

    def read(self, lba: int) -> bytes:
        self._check()
        return self.lun.blocks.get(lba, bytes(self.block))

    def write(self, lba: int, record: bytes) -> str:
        self._check()
        if not self._may_write():
            return CONFLICT
        self.lun.blocks[lba] = layout.pad(record, self.block)
        return GOOD

    def compare_and_write(self, lba: int, old: bytes, new: bytes) -> str:
        self._check()
        if not self.lun.caw:
            return "UNSUPPORTED"
        if not self._may_write():
            return CONFLICT
        if self.lun.blocks.get(lba, bytes(self.block)) != layout.pad(old, self.block):
            return "MISCOMPARE"
        self.lun.blocks[lba] = layout.pad(new, self.block)
        return GOOD

    def register(self, key: int) -> str:
        self._check()
        self.lun.regs[self.nexus] = key
        return GOOD

    def reserve(self, key: int) -> str:
        self._check()
        if self.lun.regs.get(self.nexus) != key or not self._may_write():
            return CONFLICT
        self.lun.holder_nexus = self.nexus
        return GOOD

    def release(self, key: int) -> str:
        self._check()
        if self.lun.holder_nexus == self.nexus:
            self.lun.holder_nexus = None
        return GOOD

    def preempt(self, key: int, victim: int) -> str:
        self._check()
        if self.lun.regs.get(self.nexus) != key:
            return CONFLICT
        gone = [n for n, k in self.lun.regs.items() if k == victim and n != self.nexus]
        for n in gone:
            del self.lun.regs[n]
        if self.lun.holder_nexus in gone:
            self.lun.holder_nexus = self.nexus
        return GOOD

    def holder(self) -> int | None:
        self._check()
        n = self.lun.holder_nexus
        return None if n is None else self.lun.regs.get(n)


class Cluster:
    """Agents for hosts 1..n on one FakeLun, ticked in turn on one virtual clock."""

    def __init__(self, n: int, caw: bool = False, timing: Timing = T) -> None:
        self.now = 0.0
        self.lun = FakeLun(caw)
        self.events: list[tuple[float, int, str, dict]] = []
        self.crashed: set[int] = set()
        self.agents = {}
        for h in range(1, n + 1):
            disk = FakeDisk(self.lun, f"nexus-{h}")
            self.agents[h] = LockAgent(disk, h, timing, {"vm1": 0}, self._emit(h),
                                       clock=lambda: self.now, sleep=self._sleep,
                                       wall=lambda: int(self.now * 1e9))
            self.agents[h].start()

    def _emit(self, host: int):
        def emit(event: str, t: int | None = None, **fields) -> None:
            self.events.append(((t / 1e9) if t else self.now, host, event, fields))
        return emit

    def _sleep(self, s: float) -> None:
        self.now += s

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            for h, a in self.agents.items():
                if h in self.crashed:
                    continue
                try:
                    a.tick()
                except PathDown as e:
                    a.path_down(str(e))
            self.now += STEP

    def send(self, host: int, line: str) -> None:
        self.agents[host].command(line)

    def find(self, event: str, host: int | None = None, **match) -> list[tuple]:
        return [e for e in self.events if e[2] == event and (host is None or e[1] == host)
                and all(e[3].get(k) == v for k, v in match.items())]


def started(caw: bool = False) -> Cluster:
    c = Cluster(2, caw)
    c.run(0.3)
    c.send(1, "acquire vm1")
    c.run(1.0)
    assert c.find("acquired", 1, how="free", generation=1)
    c.send(2, "acquire vm1")
    c.run(0.2)
    assert c.find("busy", 2, owner=1)
    return c


@pytest.mark.parametrize("caw,primitive", [(False, "persistent-reservation"),
                                           (True, "compare-and-write")])
def test_primitive_detected(caw, primitive) -> None:
    c = Cluster(1, caw)
    assert c.find("start")[0][3]["atomic_primitive"] == primitive


@pytest.mark.parametrize("caw", [False, True])
def test_crash_takeover_after_break_after(caw) -> None:
    c = started(caw)
    crash = c.now
    c.crashed.add(1)
    c.run(T.break_after_s + 1.0)
    (t, _, _, ev), = c.find("acquired", 2)
    assert ev["how"] == "broken" and ev["previous_owner"] == 1 and ev["generation"] == 2
    assert crash + T.break_after_s - T.heartbeat_s <= t <= crash + T.break_after_s + 0.1
    res = checker.check(c.lun.data_blocks(0))
    assert res["dual_writers"] == 0 and [e["hosts"] for e in res["epochs"]] == [[1], [2]]


def test_partitioned_owner_stops_then_learns_it_lost_the_lock() -> None:
    c = started()
    cut = c.now
    c.agents[1].disk.cut = True
    c.run(T.break_after_s + 0.5)
    (lost_t, *_), = c.find("lease_lost", 1)
    (taken_t, *_), = c.find("acquired", 2)
    assert cut + T.lease_s - T.write_gate_s - T.heartbeat_s <= lost_t < taken_t
    c.agents[1].disk.cut = False
    c.run(1.0)
    (_, _, _, ev), = c.find("lock_lost", 1)
    assert ev["owner_now"] == 2 and ev["generation_now"] == 2
    res = checker.check(c.lun.data_blocks(0))
    assert res["dual_writers"] == 0
    assert res["epochs"][0]["last_ns"] / 1e9 < lost_t


def test_short_partition_keeps_the_lock() -> None:
    c = started()
    c.agents[1].disk.cut = True
    c.run(0.3)  # shorter than lease - gate after the last heartbeat
    c.agents[1].disk.cut = False
    c.run(T.break_after_s + 1.0)
    assert c.find("lease_lost", 1) == [] and c.find("acquired", 2) == []
    assert c.find("path_down", 1) and c.find("path_up", 1)


def test_handover() -> None:
    c = started()
    c.send(2, "release vm1")  # the destination stops wanting it...
    c.send(1, "release vm1")  # ...the source powers it off there...
    c.send(2, "acquire vm1")  # ...and the destination takes it
    c.run(0.2)
    (_, _, _, rel), = c.find("released", 1)
    assert rel["changed"] and rel["owner_now"] == 0
    (_, _, _, got), = c.find("acquired", 2)
    assert got["how"] == "free" and got["generation"] == 2
    assert checker.check(c.lun.data_blocks(0))["dual_writers"] == 0


def test_a_dead_reservation_holder_is_preempted() -> None:
    c = started()
    a1 = c.agents[1]
    assert a1.disk.reserve(key_of(1)) == GOOD  # host 1 dies in the middle of an update
    c.crashed.add(1)
    c.run(T.break_after_s + T.reservation_timeout_s + T.write_gate_s + 1.0)
    assert c.find("preempted", 2, victim=hex(key_of(1)))
    assert c.find("acquired", 2, how="broken")
    assert c.lun.holder_nexus is None  # released after the update


def test_rmw_budget_leaves_room_for_the_preempters_wait() -> None:
    assert 0 < rmw_budget_s(T) < T.write_gate_s
