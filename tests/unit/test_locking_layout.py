"""On-disk records: round trips, a zero block is a free lock, torn blocks are refused."""

from __future__ import annotations

import pytest

from vclab.workloads.locking import layout
from vclab.workloads.locking.layout import EXCLUSIVE, DataBlock, Heartbeat, LockRecord


def test_round_trips() -> None:
    hb = Heartbeat(3, 12345, 1_700_000_000_000_000_000)
    rec = LockRecord(5, 2, EXCLUSIVE, 7, 99, "web-01")
    data = DataBlock(5, 2, 7, 1023, 42)
    for r in (hb, rec, data):
        assert len(r.pack()) == layout.RECORD
    assert Heartbeat.unpack(hb.pack()) == hb
    assert LockRecord.unpack(rec.pack(), 5) == rec
    assert DataBlock.unpack(data.pack()) == data


def test_zero_block_is_a_free_lock_and_no_heartbeat() -> None:
    zero = bytes(layout.RECORD)
    assert LockRecord.unpack(zero, 4) == LockRecord(4) and LockRecord(4).free
    assert Heartbeat.unpack(zero) is None and DataBlock.unpack(zero) is None


def test_torn_or_foreign_blocks() -> None:
    block = bytearray(LockRecord(1, 1, EXCLUSIVE, 1).pack())
    block[20] ^= 0xFF
    with pytest.raises(ValueError, match="corrupt"):
        LockRecord.unpack(bytes(block), 1)
    assert Heartbeat.unpack(DataBlock(1, 1, 1, 1, 1).pack()) is None  # wrong magic


def test_addresses_do_not_overlap() -> None:
    hb = [layout.heartbeat_lba(h) for h in range(1, layout.MAX_HOSTS + 1)]
    locks = [layout.lock_lba(v) for v in range(layout.MAX_VMS)]
    assert max(hb) < min(locks) and max(locks) < layout.DATA_BASE
    assert layout.SCRATCH_LBA < min(hb)
    # each epoch its own extent; the next VM starts after the last extent
    assert layout.data_lba(0, 1, 0) - layout.data_lba(0, 0, 0) == layout.EXTENT_BLOCKS
    assert layout.data_lba(0, 15, layout.EXTENT_BLOCKS - 1) < layout.vm_base(1)
    assert layout.data_lba(0, 16, 0) == layout.data_lba(0, 0, 0)
    with pytest.raises(ValueError):
        layout.heartbeat_lba(0)
    with pytest.raises(ValueError):
        layout.lock_lba(layout.MAX_VMS)
    assert layout.pad(b"x", 4096) == b"x" + bytes(4095)
    assert layout.lun_bytes_needed(1) == (layout.DATA_BASE + layout.VM_BLOCKS) * 512
