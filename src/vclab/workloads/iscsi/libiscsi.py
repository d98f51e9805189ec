"""libiscsi through ctypes: the calls, structures and constants vclab's initiators use, and one
iSCSI session on one path (asynchronous login with a deadline).

libiscsi is called through ctypes rather than the cython-iscsi binding: that binding cannot set
CHAP credentials, switch off libiscsi's automatic same-portal reconnect, or run commands
asynchronously, and its synchronous calls hold the GIL. Without those a dead path blocks an I/O
for ever instead of failing over. Stdlib only: it runs inside the agents, beside Open vSwitch on
two cores.
"""

from __future__ import annotations

import ctypes
import select
import time

DOWN, UP = "down", "up"  # a session's states (the agents log path events with the same words)
ISCSI_PORT = 3260


def portal_address(portal: str) -> str:
    """'10.0.0.1' -> '10.0.0.1:3260' (libiscsi wants the port)."""
    return portal if ":" in portal else f"{portal}:{ISCSI_PORT}"



SCSI_STATUS = {0: "GOOD", 2: "CHECK_CONDITION", 4: "CONDITION_MET", 8: "BUSY",
               0x18: "RESERVATION_CONFLICT", 0x28: "TASK_SET_FULL", 0x30: "ACA_ACTIVE",
               0x40: "TASK_ABORTED", 0x0F000000: "CANCELLED", 0x0F000001: "ERROR",
               0x0F000002: "TIMEOUT"}
GOOD, CHECK_CONDITION, BUSY, TASK_SET_FULL = 0, 2, 8, 0x28
TRANSPORT_FAILURES = {0x0F000000, 0x0F000001, 0x0F000002}
SENSE_UNIT_ATTENTION = 0x06
ISCSI_SESSION_NORMAL = 2
ISCSI_HEADER_DIGEST_NONE = 0
# PERSISTENT RESERVE service actions and types (SPC-4)
PR_IN_READ_KEYS, PR_IN_READ_RESERVATION = 0, 1
PR_REGISTER, PR_RESERVE, PR_RELEASE, PR_PREEMPT = 0, 1, 2, 4
PR_WRITE_EXCLUSIVE = 1


class _Sense(ctypes.Structure):
    # struct scsi_sense; the three 1-bit fields share the byte at offset 12 (checked with gcc)
    _fields_ = [("error_type", ctypes.c_ubyte), ("key", ctypes.c_int), ("ascq", ctypes.c_int),
                ("bits", ctypes.c_ubyte), ("bit_pointer", ctypes.c_ubyte),
                ("field_pointer", ctypes.c_uint16)]


class _Task(ctypes.Structure):
    # The leading fields of struct scsi_task (libiscsi 1.19 scsi-lowlevel.h)
    _fields_ = [("status", ctypes.c_int), ("cdb_size", ctypes.c_int), ("xfer_dir", ctypes.c_int),
                ("expxferlen", ctypes.c_int), ("cdb", ctypes.c_ubyte * 16),
                ("residual_status", ctypes.c_int), ("residual", ctypes.c_size_t),
                ("sense", _Sense), ("datain_size", ctypes.c_int),
                ("datain_data", ctypes.POINTER(ctypes.c_ubyte))]


class _ProutBasic(ctypes.Structure):
    _fields_ = [("reservation_key", ctypes.c_uint64),
                ("service_action_reservation_key", ctypes.c_uint64),
                ("spec_i_pt", ctypes.c_uint8), ("all_tg_pt", ctypes.c_uint8),
                ("aptpl", ctypes.c_uint8)]


CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_lib: ctypes.CDLL | None = None


def libiscsi() -> ctypes.CDLL:
    """libiscsi.so.7 with the signatures vclab uses (loaded once, on first use)."""
    global _lib
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL("libiscsi.so.7")
    P, I, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    U16, U32, U64 = ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
    sigs = {
        "iscsi_create_context": (P, [S]),
        "iscsi_destroy_context": (I, [P]),
        "iscsi_set_targetname": (I, [P, S]),
        "iscsi_set_session_type": (I, [P, I]),
        "iscsi_set_header_digest": (I, [P, I]),
        "iscsi_set_initiator_username_pwd": (I, [P, S, S]),
        "iscsi_set_noautoreconnect": (None, [P, I]),
        "iscsi_set_tcp_user_timeout": (None, [P, I]),
        "iscsi_full_connect_async": (I, [P, S, I, CALLBACK, P]),
        "iscsi_get_fd": (I, [P]),
        "iscsi_which_events": (I, [P]),
        "iscsi_service": (I, [P, I]),
        "iscsi_get_error": (S, [P]),
        "iscsi_scsi_cancel_all_tasks": (I, [P]),
        "iscsi_read16_task": (P, [P, I, U64, U32, I, I, I, I, I, I, CALLBACK, P]),
        "iscsi_write16_task": (P, [P, I, U64, S, U32, I, I, I, I, I, I, CALLBACK, P]),
        "iscsi_read16_sync": (P, [P, I, U64, U32, I, I, I, I, I, I]),
        "iscsi_write16_sync": (P, [P, I, U64, S, U32, I, I, I, I, I, I]),
        "iscsi_compareandwrite_sync": (P, [P, I, U64, S, U32, I, I, I, I, I, I]),
        "iscsi_readcapacity16_sync": (P, [P, I]),
        "iscsi_persistent_reserve_in_sync": (P, [P, I, I, U16]),
        "iscsi_persistent_reserve_out_sync": (P, [P, I, I, I, I, P]),
        "scsi_free_scsi_task": (None, [P]),
        "scsi_sense_key_str": (S, [I]),
        "scsi_sense_ascq_str": (S, [I]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    _lib = lib
    return lib


def task_of(ptr: int) -> _Task:
    return ctypes.cast(ptr, ctypes.POINTER(_Task)).contents


def task_result(ptr: int | None, ctx: int | None = None) -> dict:
    """Status, sense and data-in of a finished task, as plain data."""
    lib = libiscsi()
    if not ptr:
        err = lib.iscsi_get_error(ctx).decode(errors="replace") if ctx else ""
        return {"status": "ERROR", "error": err}
    task = task_of(ptr)
    out = {"status": SCSI_STATUS.get(task.status, hex(task.status))}
    if task.status == CHECK_CONDITION:
        out["sense_key"] = task.sense.key
        out["ascq"] = task.sense.ascq
        key = lib.scsi_sense_key_str(task.sense.key) or b"?"
        ascq = (lib.scsi_sense_ascq_str(task.sense.ascq)
                or f"ASC/ASCQ 0x{task.sense.ascq:04x}".encode())
        out["sense"] = f"{key.decode()}/{ascq.decode()}"
    if task.datain_size > 0 and task.datain_data:
        out["data"] = ctypes.string_at(task.datain_data, task.datain_size)
    return out


def free_task(ptr: int | None) -> None:
    if ptr:
        libiscsi().scsi_free_scsi_task(ptr)


class Session:
    """One iSCSI session on one path (portal). Logs in asynchronously with a deadline."""

    def __init__(self, index: int, portal: str, target: str, lun: int, initiator: str,
                 chap: tuple[str, str] | None = None, session_timeout_s: float = 0.0) -> None:
        self.index, self.portal, self.target, self.lun = index, portal_address(portal), target, lun
        self.initiator, self.chap = initiator, chap
        self.session_timeout_s = session_timeout_s
        self.ctx: int | None = None
        self.state = DOWN  # DOWN | "login" | UP
        self.failed = ""  # set when the path must be declared dead
        self.login_status: int | None = None
        self.login_started = 0
        self.login_deadline = 0
        self.next_login = 0
        self.error = ""
        self._login_cb = CALLBACK(self._on_login)

    def _on_login(self, _ctx: int, status: int, _data: int, _private: int) -> None:
        self.login_status = status

    def begin_login(self, timeout_s: float) -> None:
        lib = libiscsi()
        self.close()
        ctx = lib.iscsi_create_context(self.initiator.encode())
        if not ctx:
            raise RuntimeError(f"libiscsi: cannot create a context for {self.initiator!r}")
        self.ctx = ctx
        lib.iscsi_set_targetname(ctx, self.target.encode())
        lib.iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL)
        lib.iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE)
        if self.chap:
            lib.iscsi_set_initiator_username_pwd(ctx, self.chap[0].encode(), self.chap[1].encode())
        # A broken session must fail its I/O so we switch paths; libiscsi's default is to
        # reconnect to the same portal for ever while the I/O waits.
        lib.iscsi_set_noautoreconnect(ctx, 1)
        if self.session_timeout_s > 0:
            lib.iscsi_set_tcp_user_timeout(ctx, int(self.session_timeout_s * 1000))
        self.login_status = None
        self.failed = ""
        self.error = ""
        self.login_started = time.time_ns()
        self.login_deadline = time.monotonic_ns() + int(timeout_s * 1e9)
        self.state = "login"
        if lib.iscsi_full_connect_async(ctx, self.portal.encode(), self.lun, self._login_cb, None):
            self.error = lib.iscsi_get_error(ctx).decode(errors="replace")
            self.login_status = 0x0F000001

    @property
    def fd(self) -> int:
        return libiscsi().iscsi_get_fd(self.ctx) if self.ctx else -1

    def events(self) -> int:
        return libiscsi().iscsi_which_events(self.ctx) if self.ctx else 0

    def service(self, revents: int) -> None:
        lib = libiscsi()
        if self.ctx and lib.iscsi_service(self.ctx, revents) < 0:
            self.error = lib.iscsi_get_error(self.ctx).decode(errors="replace")
            if self.state == UP:
                self.failed = self.failed or "transport error"
            else:
                self.login_status = 0x0F000001

    def login_result(self) -> bool | None:
        """True logged in, False failed or past its deadline, None still trying."""
        if self.state != "login":
            return self.state == UP
        if self.login_status is None and time.monotonic_ns() < self.login_deadline:
            return None
        if self.login_status == GOOD:
            self.state = UP
            return True
        if self.login_status is None:
            self.error = f"no login answer from {self.portal}"
        elif not self.error and self.ctx:
            self.error = libiscsi().iscsi_get_error(self.ctx).decode(errors="replace")
        self.close()
        return False

    def close(self) -> None:
        """Drop the session: tasks still in flight are cancelled (their callbacks run now)."""
        if self.ctx:
            lib = libiscsi()
            lib.iscsi_scsi_cancel_all_tasks(self.ctx)
            lib.iscsi_destroy_context(self.ctx)
        self.ctx = None
        self.state = DOWN


def wait_logins(sessions: list[Session]) -> None:
    """Drive logins in progress until each one succeeded, failed or timed out."""
    while any(s.state == "login" and s.login_result() is None for s in sessions):
        poller = select.poll()
        owner = {}
        for s in sessions:
            if s.state == "login" and s.fd >= 0 and s.events():
                poller.register(s.fd, s.events())
                owner[s.fd] = s
        for fd, ev in poller.poll(20):
            owner[fd].service(ev)
