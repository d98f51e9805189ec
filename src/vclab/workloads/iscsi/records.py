"""What the iSCSI initiator agent records, and the I/O it issues: pure, so saved runs can be
read back and kept as test data.

Log format (text, so saved runs can be read and kept as test data): a header line
`#vclab-iscsi 1 {json}`, then `kind,t0_ns,t1_ns,ok,path,aux` per line:
    r|w     t0 first submission, t1 completion, ok 1/0/2 (done/failed/unfinished at stop),
            path the one it completed on, aux attempts (1 + re-issues after a path failure)
    down    t0=t1 when the path was declared dead, aux the reason (REASONS)
    up      t0 login started, t1 logged in (initial logins and re-logins)
    switch  t0 the old path was declared dead, t1 I/O re-issued on the new one, path the new
            one, aux the old one
Times are CLOCK_REALTIME ns, the clock fault records use.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

MAGIC = "#vclab-iscsi 1 "
READ, WRITE = "r", "w"
SWITCH = "switch"  # with DOWN and UP (a session's states) the kinds of path event
FAILED, OK, UNFINISHED = 0, 1, 2
REASONS = {1: "timeout", 2: "transport error", 3: "login failed"}
# pattern -> (bytes per I/O, random offsets?)
PATTERNS = {"random-4k": (4096, True), "sequential-64k": (65536, False)}
FLUSH_S = 0.5


class Row(NamedTuple):
    kind: str
    t0: int
    t1: int
    ok: int
    path: int
    aux: int


def parse_mix(mix: str) -> int:
    """'70/30' -> 70 (percent reads)."""
    try:
        reads, writes = (int(x) for x in mix.split("/"))
    except ValueError:
        raise ValueError(f"mix {mix!r} is not READ/WRITE percent, e.g. 70/30") from None
    if reads < 0 or writes < 0 or reads + writes != 100:
        raise ValueError(f"mix {mix!r}: read and write percent must add up to 100")
    return reads


@dataclass
class IoPattern:
    """Which I/O comes next: op and first block. Pure and seeded, so a run can be replayed."""

    name: str
    read_pct: int
    lun_blocks: int
    block_size: int
    seed: int = 0
    blocks: int = field(init=False)
    _random: bool = field(init=False)
    _next_lba: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.name not in PATTERNS:
            raise ValueError(f"pattern {self.name!r} is not one of {', '.join(PATTERNS)}")
        io_bytes, self._random = PATTERNS[self.name]
        self.blocks = max(1, io_bytes // self.block_size)
        if self.blocks > self.lun_blocks:
            raise ValueError(f"LUN of {self.lun_blocks} blocks is smaller than one I/O")
        self.rng = random.Random(self.seed)

    @property
    def io_bytes(self) -> int:
        return self.blocks * self.block_size

    def next(self) -> tuple[str, int]:
        op = READ if self.rng.randrange(100) < self.read_pct else WRITE
        if self._random:
            return op, self.rng.randrange(self.lun_blocks // self.blocks) * self.blocks
        lba = self._next_lba
        if lba + self.blocks > self.lun_blocks:
            lba = 0
        self._next_lba = lba + self.blocks
        return op, lba


# ---- the log ----

class RecordLog:
    """Rows buffered in memory and appended to the file every FLUSH_S, so a killed agent
    loses at most that much."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path = Path(path)
        self.file = self.path.open("w")
        self.file.write(MAGIC + json.dumps(header) + "\n")
        self.rows: list[str] = []
        self.last_flush = time.monotonic()

    def add(self, kind: str, t0: int, t1: int, ok: int, path: int, aux: int) -> None:
        self.rows.append(f"{kind},{t0},{t1},{ok},{path},{aux}\n")

    def maybe_flush(self) -> None:
        if time.monotonic() - self.last_flush >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self.file.writelines(self.rows)
        self.file.flush()
        self.rows.clear()
        self.last_flush = time.monotonic()

    def close(self, trailer: dict | None = None) -> None:
        self.flush()
        if trailer is not None:
            self.file.write("#end " + json.dumps(trailer) + "\n")
        self.file.close()


def read_log(path: Path) -> tuple[dict, list[Row], dict]:
    """(header, rows, trailer) of an agent's log; trailer is {} if the agent was killed.
    The `#capacity` line (block size, LUN size, I/O size) is merged into the header."""
    trailer: dict = {}
    rows: list[Row] = []
    with Path(path).open() as f:
        first = f.readline()
        if not first.startswith(MAGIC):
            raise ValueError(f"{path}: not an iSCSI agent log")
        header = json.loads(first[len(MAGIC):])
        for line in f:
            if line.startswith("#"):
                word, _, blob = line[1:].partition(" ")
                if word == "end":
                    trailer = json.loads(blob)
                elif word == "capacity":
                    header.update(json.loads(blob))
                continue
            parts = line.rstrip("\n").split(",")
            if len(parts) != 6:
                continue  # a line cut short by SIGKILL
            rows.append(Row(parts[0], *(int(x) for x in parts[1:])))
    return header, rows, trailer
