"""The shared LUN as a lock agent uses it: one iSCSI session with synchronous commands
(read, write, COMPARE AND WRITE, persistent reservations) through the first portal that
answers, and the errors the agent acts on."""

from __future__ import annotations

import ctypes
from typing import Callable

from vclab.workloads.locking import layout
from vclab.workloads.iscsi.libiscsi import (
    PR_IN_READ_RESERVATION,
    PR_PREEMPT,
    PR_RELEASE,
    PR_RESERVE,
    PR_WRITE_EXCLUSIVE,
    SENSE_UNIT_ATTENTION,
    UP,
    Session,
    _ProutBasic,
    free_task,
    libiscsi,
    task_result,
    wait_logins,
)

PR_REGISTER_AND_IGNORE = 6  # SPC-4: replaces whatever key this I_T nexus had (a restarted agent)
KEY_BASE = 0x7663_4C4B_0000_0000  # "vcLK" + host id: our registrations, nobody else's
GOOD, CONFLICT = "GOOD", "RESERVATION_CONFLICT"
PATH_FAILURES = {"ERROR", "CANCELLED", "TIMEOUT"}


class PathDown(Exception):
    """The session failed (transport error, TCP_USER_TIMEOUT): log in again."""


class Busy(Exception):
    """The atomic update could not be done now (reservation not obtained or lost): retry."""


def key_of(host: int) -> int:
    return KEY_BASE | host


class Disk:
    """The shared LUN through the first portal that answers."""

    def __init__(self, portals: list[str], target: str, lun: int, initiator: str,
                 io_timeout_s: float, login_timeout_s: float = 1.0) -> None:
        self.portals, self.target, self.lun, self.initiator = portals, target, lun, initiator
        self.io_timeout_s, self.login_timeout_s = io_timeout_s, login_timeout_s
        self.session: Session | None = None
        self.block = 512
        self.error = ""

    @property
    def up(self) -> bool:
        return self.session is not None

    def connect(self) -> str | None:
        """Log in through the first portal that answers; its address, or None."""
        for i, portal in enumerate(self.portals):
            s = Session(i, portal, self.target, self.lun, self.initiator,
                        session_timeout_s=self.io_timeout_s)
            s.begin_login(self.login_timeout_s)
            wait_logins([s])
            if s.state == UP:
                self.session = s
                cap = self._cmd(lambda ctx: libiscsi().iscsi_readcapacity16_sync(ctx, self.lun))
                self.block = int.from_bytes(cap["data"][8:12], "big")
                return s.portal
            self.error = s.error
            s.close()
        return None

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session = None

    def _cmd(self, send: Callable[[int], int | None]) -> dict:
        """Run one command; retry what every initiator retries (unit attention, once per
        event: a reservation changed or we were preempted). A failed session raises."""
        if self.session is None:
            raise PathDown("not logged in")
        for _ in range(4):
            ctx = self.session.ctx
            ptr = send(ctx)
            res = task_result(ptr, ctx)
            free_task(ptr)
            if res["status"] in PATH_FAILURES:
                self.error = res.get("error", res["status"])
                self.close()
                raise PathDown(self.error)
            if res.get("sense_key") == SENSE_UNIT_ATTENTION:
                continue
            return res
        return res

    def read(self, lba: int) -> bytes:
        bs = self.block
        res = self._cmd(lambda ctx: libiscsi().iscsi_read16_sync(
            ctx, self.lun, lba, bs, bs, 0, 0, 0, 0, 0))
        if res["status"] != GOOD:
            raise PathDown(f"read of block {lba}: {res['status']} {res.get('sense', '')}")
        return res.get("data", b"")

    def write(self, lba: int, record: bytes) -> str:
        data = layout.pad(record, self.block)
        return self._cmd(lambda ctx: libiscsi().iscsi_write16_sync(
            ctx, self.lun, lba, data, len(data), self.block, 0, 0, 0, 0, 0))["status"]

    def compare_and_write(self, lba: int, old: bytes, new: bytes) -> str:
        """GOOD, MISCOMPARE, UNSUPPORTED or another status."""
        data = layout.pad(old, self.block) + layout.pad(new, self.block)
        res = self._cmd(lambda ctx: libiscsi().iscsi_compareandwrite_sync(
            ctx, self.lun, lba, data, len(data), self.block, 0, 0, 0, 0, 0))
        sense = res.get("sense", "")
        if "MISCOMPARE" in sense:
            return "MISCOMPARE"
        if "ILLEGAL_REQUEST" in sense:
            return "UNSUPPORTED"
        return res["status"]

    def _prout(self, action: int, key: int, sa_key: int, kind: int = 0) -> str:
        params = _ProutBasic(key, sa_key, 0, 0, 0)
        return self._cmd(lambda ctx: libiscsi().iscsi_persistent_reserve_out_sync(
            ctx, self.lun, action, 0, kind, ctypes.byref(params)))["status"]

    def register(self, key: int) -> str:
        return self._prout(PR_REGISTER_AND_IGNORE, 0, key)

    def reserve(self, key: int) -> str:
        return self._prout(PR_RESERVE, key, 0, PR_WRITE_EXCLUSIVE)

    def release(self, key: int) -> str:
        return self._prout(PR_RELEASE, key, 0, PR_WRITE_EXCLUSIVE)

    def preempt(self, key: int, victim: int) -> str:
        return self._prout(PR_PREEMPT, key, victim, PR_WRITE_EXCLUSIVE)

    def holder(self) -> int | None:
        """The key holding the reservation, None if nobody does."""
        res = self._cmd(lambda ctx: libiscsi().iscsi_persistent_reserve_in_sync(
            ctx, self.lun, PR_IN_READ_RESERVATION, 64))
        data = res.get("data", b"")
        if res["status"] != GOOD or len(data) < 16 or int.from_bytes(data[4:8], "big") == 0:
            return None
        return int.from_bytes(data[8:16], "big")
