"""Proves or refutes "at most one writer at any time" from what is on the LUN afterwards.

Every VM disk write carries its writer's host id, the lock generation (ownership epoch) it
wrote under, its sequence number in that epoch and when it was issued (CLOCK_REALTIME; every
namespace on one machine shares that clock). Epochs append to separate extents (layout.py),
so a stale writer cannot erase the newer epoch's evidence. Two writers overlapped when an
older epoch has a write issued after the first write of a newer one, or when one epoch has
writes from two hosts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vclab.workloads.locking import layout
from vclab.workloads.locking.layout import DataBlock, Heartbeat, LockRecord


def scan_image(path: Path, vms: list[int], block_size: int = layout.RECORD) -> dict[str, Any]:
    """Read a LUN's backing file (or a copy): data blocks per VM, heartbeat slots, locks."""
    blocks: dict[int, list[DataBlock]] = {}
    with Path(path).open("rb") as f:
        def block(lba: int, n: int = 1) -> bytes:
            f.seek(lba * block_size)
            return f.read(n * block_size)

        for vm in vms:
            raw = block(layout.vm_base(vm), layout.VM_BLOCKS)
            found = []
            for i in range(0, len(raw), block_size):
                if raw[i:i + 4] == b"VCDW":
                    b = DataBlock.unpack(raw[i:i + block_size])
                    if b is not None:
                        found.append(b)
            blocks[vm] = found
        heartbeats = {}
        for host in range(1, 17):
            hb = Heartbeat.unpack(block(layout.heartbeat_lba(host)))
            if hb is not None:
                heartbeats[host] = hb
        locks = {vm: LockRecord.unpack(block(layout.lock_lba(vm)), vm) for vm in vms}
    return {"blocks": blocks, "heartbeats": heartbeats, "locks": locks}


def epochs(blocks: list[DataBlock]) -> list[dict[str, Any]]:
    """One entry per lock generation found: its writers, writes, first and last issue time."""
    by_gen: dict[int, list[DataBlock]] = {}
    for b in blocks:
        by_gen.setdefault(b.generation, []).append(b)
    out = []
    for gen in sorted(by_gen):
        bs = by_gen[gen]
        seqs = sorted(b.seq for b in bs)
        out.append({"generation": gen, "hosts": sorted({b.host for b in bs}), "writes": len(bs),
                    "first_ns": min(b.wall_ns for b in bs), "last_ns": max(b.wall_ns for b in bs),
                    # the extent wrapped: its oldest writes were overwritten by its own newer
                    "wrapped": seqs[-1] >= layout.EXTENT_BLOCKS,
                    "missing": seqs[-1] - seqs[0] + 1 - len(seqs)})
    return out


def check(blocks: list[DataBlock]) -> dict[str, Any]:
    """Pure: overlaps between writers of one VM's disk, and the gaps between epochs."""
    eps = epochs(blocks)
    overlaps = []
    for e in eps:
        if len(e["hosts"]) > 1:
            overlaps.append({"kind": "two hosts in one epoch", "generation": e["generation"],
                             "hosts": e["hosts"]})
    for i, old in enumerate(eps):
        for new in eps[i + 1:]:
            if old["last_ns"] > new["first_ns"]:
                overlaps.append({"kind": "stale writer", "generation": old["generation"],
                                 "host": old["hosts"][0], "newer_generation": new["generation"],
                                 "newer_host": new["hosts"][0],
                                 "overlap_ms": (old["last_ns"] - new["first_ns"]) / 1e6})
    gaps = [{"from": a["generation"], "to": b["generation"], "from_host": a["hosts"][0],
             "to_host": b["hosts"][0], "gap_ms": (b["first_ns"] - a["last_ns"]) / 1e6}
            for a, b in zip(eps, eps[1:])]
    return {"epochs": eps, "overlaps": overlaps, "dual_writers": len(overlaps), "gaps": gaps,
            "writes": len(blocks), "complete": not any(e["wrapped"] for e in eps)}
