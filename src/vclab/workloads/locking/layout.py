"""The on-disk format of the shared datastore's locking area (pure: bytes in, records out).

Addresses are LUN blocks (512 bytes or more): one record per block, padded. A freshly created
(all-zero, sparse) LUN is a valid empty datastore: every zero record reads as "free lock" or
"host never heartbeated", so nothing has to format it.

    LBA 1                  scratch block (the COMPARE AND WRITE probe at agent start)
    LBA 16 + host          heartbeat slot of host 1..MAX_HOSTS
    LBA 128 + vm           lock record of VM 0..MAX_VMS-1 (the lock on its files)
    LBA 1024 + vm * VM_BLOCKS   the VM's disk, written as a log: EXTENTS extents of
                           EXTENT_BLOCKS; an ownership epoch (lock generation g) appends to
                           extent g % EXTENTS, so a stale writer of epoch g can never overwrite
                           the evidence of epoch g+1 that the checker needs.

Every record carries a magic, a format version and a CRC32, so a torn or foreign block is
told apart from a real one.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

RECORD = 512
SCRATCH_LBA = 1
HEARTBEAT_BASE = 16
MAX_HOSTS = 100
LOCK_BASE = 128
MAX_VMS = 64
DATA_BASE = 1024
EXTENTS = 16
EXTENT_BLOCKS = 1024
VM_BLOCKS = EXTENTS * EXTENT_BLOCKS
VERSION = 1

FREE, EXCLUSIVE, READ_ONLY = 0, 1, 2
MODES = {FREE: "free", EXCLUSIVE: "exclusive", READ_ONLY: "read-only"}

_HB = struct.Struct("!4sHHQQ")  # magic, version, host, generation, wall ns
_LOCK = struct.Struct("!4sHHHHQQ32s")  # magic, version, vm, owner, mode, generation, wall ns, name
_DATA = struct.Struct("!4sHHHQQQ")  # magic, version, vm, host, generation, seq, wall ns
_CRC = struct.Struct("!I")


def _seal(body: bytes) -> bytes:
    block = body + _CRC.pack(zlib.crc32(body))
    return block + bytes(RECORD - len(block))


def _open(block: bytes, layout: struct.Struct, magic: bytes) -> tuple | None:
    """The fields of a sealed record, or None for a zero, torn or foreign block."""
    if len(block) < layout.size + 4 or block[:4] != magic:
        return None
    body = block[: layout.size]
    (crc,) = _CRC.unpack_from(block, layout.size)
    if zlib.crc32(body) != crc:
        return None
    fields = layout.unpack(body)
    return fields if fields[1] == VERSION else None


@dataclass(frozen=True)
class Heartbeat:
    host: int
    generation: int
    wall_ns: int = 0

    def pack(self) -> bytes:
        return _seal(_HB.pack(b"VCHB", VERSION, self.host, self.generation, self.wall_ns))

    @classmethod
    def unpack(cls, block: bytes) -> "Heartbeat | None":
        f = _open(block, _HB, b"VCHB")
        return None if f is None else cls(f[2], f[3], f[4])


@dataclass(frozen=True)
class LockRecord:
    """Who holds a VM's lock. `generation` counts ownership changes (fencing epoch); a released
    lock keeps its generation, the next owner takes generation + 1."""

    vm: int
    owner: int = 0  # host id; 0 = free
    mode: int = FREE
    generation: int = 0
    wall_ns: int = 0
    name: str = ""

    @property
    def free(self) -> bool:
        return self.owner == 0 or self.mode == FREE

    def pack(self) -> bytes:
        name = self.name.encode()[:32]
        return _seal(_LOCK.pack(b"VCLK", VERSION, self.vm, self.owner, self.mode,
                                self.generation, self.wall_ns, name))

    @classmethod
    def unpack(cls, block: bytes, vm: int) -> "LockRecord":
        """A zero (never written) block is a free lock of generation 0."""
        f = _open(block, _LOCK, b"VCLK")
        if f is None:
            if any(block):
                raise ValueError(f"lock record of VM {vm} is corrupt")
            return cls(vm)
        return cls(f[2], f[3], f[4], f[5], f[6], f[7].rstrip(b"\0").decode(errors="replace"))


@dataclass(frozen=True)
class DataBlock:
    """One write of a VM's disk: who wrote it, in which ownership epoch, its sequence number
    within that epoch and when it was issued (CLOCK_REALTIME ns)."""

    vm: int
    host: int
    generation: int
    seq: int
    wall_ns: int

    def pack(self) -> bytes:
        return _seal(_DATA.pack(b"VCDW", VERSION, self.vm, self.host, self.generation, self.seq,
                                self.wall_ns))

    @classmethod
    def unpack(cls, block: bytes) -> "DataBlock | None":
        f = _open(block, _DATA, b"VCDW")
        return None if f is None else cls(*f[2:])


def heartbeat_lba(host: int) -> int:
    if not 1 <= host <= MAX_HOSTS:
        raise ValueError(f"host id {host} outside 1..{MAX_HOSTS}")
    return HEARTBEAT_BASE + host


def lock_lba(vm: int) -> int:
    if not 0 <= vm < MAX_VMS:
        raise ValueError(f"VM index {vm} outside 0..{MAX_VMS - 1}")
    return LOCK_BASE + vm


def vm_base(vm: int) -> int:
    lock_lba(vm)
    return DATA_BASE + vm * VM_BLOCKS


def data_lba(vm: int, generation: int, seq: int) -> int:
    return vm_base(vm) + (generation % EXTENTS) * EXTENT_BLOCKS + seq % EXTENT_BLOCKS


def lun_bytes_needed(vms: int) -> int:
    return (DATA_BASE + vms * VM_BLOCKS) * RECORD


def pad(record: bytes, block_size: int) -> bytes:
    """One record per LUN block: pad it to the block size (>= RECORD)."""
    if block_size < RECORD:
        raise ValueError(f"block size {block_size} is smaller than a record ({RECORD})")
    return record + bytes(block_size - len(record))
