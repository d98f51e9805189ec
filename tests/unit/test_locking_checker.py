"""The dual-writer checker on synthetic VM disk writes and on a LUN image file."""

from __future__ import annotations

from vclab.workloads.locking import checker, layout
from vclab.workloads.locking.layout import EXCLUSIVE, DataBlock, Heartbeat, LockRecord

MS = 1_000_000


def writes(host: int, gen: int, start_ms: int, n: int, every_ms: int = 20) -> list[DataBlock]:
    return [DataBlock(0, host, gen, i, (start_ms + i * every_ms) * MS) for i in range(n)]


def test_one_writer_then_another() -> None:
    res = checker.check(writes(1, 1, 0, 50) + writes(2, 2, 3000, 10))
    assert res["dual_writers"] == 0 and res["complete"]
    assert [e["hosts"] for e in res["epochs"]] == [[1], [2]]
    assert res["gaps"] == [{"from": 1, "to": 2, "from_host": 1, "to_host": 2,
                            "gap_ms": 3000 - 49 * 20}]


def test_stale_writer_is_caught() -> None:
    res = checker.check(writes(1, 1, 0, 100) + writes(2, 2, 1000, 10))
    (o,) = res["overlaps"]
    assert o["kind"] == "stale writer" and o["host"] == 1 and o["newer_host"] == 2
    assert o["overlap_ms"] == 99 * 20 - 1000


def test_two_hosts_in_one_epoch() -> None:
    res = checker.check(writes(1, 1, 0, 5) + [DataBlock(0, 2, 1, 9, 500 * MS)])
    assert res["dual_writers"] == 1 and res["overlaps"][0]["hosts"] == [1, 2]


def test_wrapped_extent_is_flagged() -> None:
    blocks = writes(1, 1, 0, 3)
    blocks[-1] = DataBlock(0, 1, 1, layout.EXTENT_BLOCKS + 2, 60 * MS)
    res = checker.check(blocks)
    assert not res["complete"] and res["epochs"][0]["missing"] == layout.EXTENT_BLOCKS


def test_scan_image(tmp_path) -> None:
    img = tmp_path / "lun.img"
    with img.open("wb") as f:
        f.truncate(layout.lun_bytes_needed(2))

        def put(lba: int, rec: bytes) -> None:
            f.seek(lba * 512)
            f.write(rec)

        for b in writes(1, 1, 0, 5) + writes(2, 2, 1000, 3):
            put(layout.data_lba(0, b.generation, b.seq), b.pack())
        put(layout.heartbeat_lba(2), Heartbeat(2, 40, 7).pack())
        put(layout.lock_lba(0), LockRecord(0, 2, EXCLUSIVE, 2, 0, "vm1").pack())
    lun = checker.scan_image(img, [0, 1])
    assert len(lun["blocks"][0]) == 8 and lun["blocks"][1] == []
    assert lun["heartbeats"] == {2: Heartbeat(2, 40, 7)}
    assert lun["locks"][0].owner == 2 and lun["locks"][1].free
    assert checker.check(lun["blocks"][0])["dual_writers"] == 0
