"""The results store: one SQLite file per results directory, after flent's resultset.py: the data
carries its own metadata (format version, software versions, capabilities, the experiment file
verbatim) so tables and plots are rebuilt from the store alone.

Each repetition is written in one transaction (WAL, synchronous=FULL): a run killed at any
moment leaves a readable store in which every committed repetition is whole, and `completed()`
tells `--resume` which ones need not run again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import vclab
from vclab.errors import VclabError
from vclab.results.model import (
    REPETITION_STATUSES,
    Event,
    FaultRecord,
    Metric,
    MetricRow,
    Raw,
    RepetitionInfo,
    RepetitionResult,
    RunInfo,
    Series,
    default_unit,
)

# 2: repetition status "partial" (format 1 stores are upgraded in place when opened)
FORMAT_VERSION = 2
DB_NAME = "results.sqlite"
RUN_STATUSES = ("running", "finished", "interrupted", "failed")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run (
    id INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL,
    experiment_yaml TEXT NOT NULL,
    topology_yaml TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    finished_ns INTEGER,
    status TEXT NOT NULL CHECK (status IN {RUN_STATUSES!r}),
    vclab_version TEXT NOT NULL,
    software TEXT NOT NULL,      -- JSON
    capabilities TEXT NOT NULL,  -- JSON, as `vclab doctor --json`
    host TEXT NOT NULL,          -- JSON
    settings TEXT NOT NULL       -- JSON: effective values the runner resolved
);
CREATE TABLE IF NOT EXISTS repetition (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES run(id) ON DELETE CASCADE,
    mechanism TEXT NOT NULL,
    idx INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN {REPETITION_STATUSES!r}),
    reason TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    finished_ns INTEGER NOT NULL,
    UNIQUE (run_id, mechanism, idx)
);
CREATE TABLE IF NOT EXISTS fault (
    id INTEGER PRIMARY KEY,
    repetition_id INTEGER NOT NULL REFERENCES repetition(id) ON DELETE CASCADE,
    name TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL, action TEXT NOT NULL,
    scheduled_ms REAL NOT NULL, applied_ns INTEGER NOT NULL, applied_ms REAL NOT NULL,
    undone_ms REAL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    repetition_id INTEGER NOT NULL REFERENCES repetition(id) ON DELETE CASCADE,
    workload TEXT NOT NULL, kind TEXT NOT NULL, traffic_class TEXT NOT NULL,
    name TEXT NOT NULL, unit TEXT NOT NULL,
    points TEXT NOT NULL  -- compact JSON [[t_ms, value], ...]: readable from any sqlite3 shell
);
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY,
    repetition_id INTEGER NOT NULL REFERENCES repetition(id) ON DELETE CASCADE,
    workload TEXT NOT NULL, t_ms REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metric (
    id INTEGER PRIMARY KEY,
    repetition_id INTEGER NOT NULL REFERENCES repetition(id) ON DELETE CASCADE,
    workload TEXT NOT NULL, kind TEXT NOT NULL, traffic_class TEXT NOT NULL,
    name TEXT NOT NULL, value REAL NOT NULL, unit TEXT NOT NULL, fault TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS raw (
    id INTEGER PRIMARY KEY,
    repetition_id INTEGER NOT NULL REFERENCES repetition(id) ON DELETE CASCADE,
    workload TEXT NOT NULL, name TEXT NOT NULL, blob BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS repetition_run ON repetition(run_id);
CREATE INDEX IF NOT EXISTS fault_rep ON fault(repetition_id);
CREATE INDEX IF NOT EXISTS series_rep ON series(repetition_id);
CREATE INDEX IF NOT EXISTS event_rep ON event(repetition_id);
CREATE INDEX IF NOT EXISTS metric_rep ON metric(repetition_id);
CREATE INDEX IF NOT EXISTS raw_rep ON raw(repetition_id);
"""


def db_path(path: Path | str) -> Path:
    """A results directory -> its database file; a path to a database file is kept. Only these
    suffixes mean a file: experiment names may contain dots ("results/uplink.v2")."""
    p = Path(path)
    if p.suffix in (".sqlite", ".sqlite3", ".db") and not p.is_dir():
        return p
    return p / DB_NAME


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


class ResultStore:
    """`ResultStore("results/uplink-and-switch-failure")`: opens or creates the store there."""

    def __init__(self, path: Path | str, *, create: bool = True):
        self.path = db_path(path)
        if not self.path.exists():
            if not create:
                raise VclabError(f"{path}: no results here (expected {self.path})")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly
        # one repetition and never silently widened by the module's implicit BEGIN.
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self._upgrade()
        self.db.execute("PRAGMA foreign_keys=ON")
        self._init_schema()

    def _init_schema(self) -> None:
        # executescript commits on its own; every statement is IF NOT EXISTS, so that is harmless.
        self.db.executescript(SCHEMA)
        with self.transaction():
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('created_by', ?)", (f"vclab {vclab.__version__}",))
        found = self.format_version
        if found > FORMAT_VERSION:
            raise VclabError(f"{self.path}: results format {found} is newer than this vclab "
                             f"reads ({FORMAT_VERSION}); upgrade vclab")

    def _upgrade(self) -> None:
        """Format 1 -> 2: the repetition table's status check gains "partial". SQLite cannot
        change a CHECK in place: the table is rebuilt with foreign keys off, so no other
        table's rows are touched."""
        row = self.db.execute("SELECT sql FROM sqlite_master WHERE name='repetition'").fetchone()
        if row is None or "'partial'" in row[0]:
            return
        create = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS repetition"):]
        create = create[:create.index(");") + 2].replace("IF NOT EXISTS repetition", "repetition_v2")
        self.db.execute("PRAGMA foreign_keys=OFF")
        with self.transaction() as db:
            db.execute(create)
            db.execute("INSERT INTO repetition_v2 SELECT * FROM repetition")
            db.execute("DROP TABLE repetition")
            db.execute("ALTER TABLE repetition_v2 RENAME TO repetition")
            db.execute("CREATE INDEX IF NOT EXISTS repetition_run ON repetition(run_id)")
            db.execute("UPDATE meta SET value=? WHERE key='format_version'", (str(FORMAT_VERSION),))

    @property
    def format_version(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing ----

    def start_run(self, experiment: str, experiment_yaml: str, topology_yaml: str = "", *,
                  software: dict[str, Any] | None = None, capabilities: Any = None,
                  host: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                  started_ns: int | None = None) -> int:
        """Record a new run (status running) and return its id."""
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO run (experiment, experiment_yaml, topology_yaml, started_ns, status,"
                " vclab_version, software, capabilities, host, settings)"
                " VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (experiment, experiment_yaml, topology_yaml, started_ns or time.time_ns(),
                 vclab.__version__, _dumps(software or {}), _dumps(capabilities or []),
                 _dumps(host or {}), _dumps(settings or {})))
            return int(cur.lastrowid)

    def resume_run(self, run_id: int) -> None:
        """Mark an interrupted run as running again (for --resume)."""
        with self.transaction():
            self._need_run(run_id)
            self.db.execute("UPDATE run SET status='running', finished_ns=NULL WHERE id=?", (run_id,))

    def finish_run(self, run_id: int, status: str = "finished", finished_ns: int | None = None) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
        with self.transaction():
            self._need_run(run_id)
            self.db.execute("UPDATE run SET status=?, finished_ns=? WHERE id=?",
                            (status, finished_ns or time.time_ns(), run_id))

    def record_repetition(self, run_id: int, rep: RepetitionResult, *, replace: bool = False) -> int:
        """Write the repetition and all it produced in one transaction; return its id.

        An earlier `interrupted` record of the same (mechanism, index) is replaced, as --resume
        does; an `ok` or `failed` one only with replace=True, so results are never lost silently."""
        if rep.status not in REPETITION_STATUSES:
            raise ValueError(f"repetition status {rep.status!r} is not one of {', '.join(REPETITION_STATUSES)}")
        with self.transaction() as db:
            self._need_run(run_id)
            old = db.execute("SELECT id, status FROM repetition WHERE run_id=? AND mechanism=? AND idx=?",
                             (run_id, rep.mechanism, rep.index)).fetchone()
            if old is not None:
                if old["status"] != "interrupted" and not replace:
                    raise VclabError(f"repetition {rep.index} of {rep.mechanism} is already recorded "
                                     f"({old['status']}) in run {run_id}")
                db.execute("DELETE FROM repetition WHERE id=?", (old["id"],))
            rid = int(db.execute(
                "INSERT INTO repetition (run_id, mechanism, idx, seed, status, reason, started_ns,"
                " finished_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, rep.mechanism, rep.index, rep.seed, rep.status, rep.reason,
                 rep.started_ns, rep.finished_ns)).lastrowid)
            db.executemany(
                "INSERT INTO fault (repetition_id, name, kind, target, action, scheduled_ms,"
                " applied_ns, applied_ms, undone_ms, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(rid, f.name, f.kind, f.target, f.action, f.scheduled_ms, f.applied_ns,
                  f.applied_ms, f.undone_ms, _dumps(f.detail)) for f in rep.faults])
            db.executemany(
                "INSERT INTO series (repetition_id, workload, kind, traffic_class, name, unit, points)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(rid, s.workload, s.kind, s.traffic_class, s.name, s.unit or default_unit(s.name),
                  _dumps([[float(t), float(v)] for t, v in s.points])) for s in rep.series])
            db.executemany(
                "INSERT INTO event (repetition_id, workload, t_ms, kind, detail) VALUES (?, ?, ?, ?, ?)",
                [(rid, e.workload, e.t_ms, e.kind, _dumps(e.detail)) for e in rep.events])
            db.executemany(
                "INSERT INTO metric (repetition_id, workload, kind, traffic_class, name, value, unit,"
                " fault) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(rid, m.workload, m.kind, m.traffic_class, m.name, float(m.value),
                  m.unit or default_unit(m.name), m.fault) for m in rep.metrics])
            db.executemany(
                "INSERT INTO raw (repetition_id, workload, name, blob) VALUES (?, ?, ?, ?)",
                [(rid, r.workload, r.name,
                  r.data.encode() if isinstance(r.data, str) else bytes(r.data)) for r in rep.raw])
        return rid

    def completed(self, run_id: int) -> set[tuple[str, int]]:
        """(mechanism, index) pairs that need not run again: ok, partial or failed, not interrupted."""
        rows = self.db.execute("SELECT mechanism, idx FROM repetition WHERE run_id=? AND status != "
                               "'interrupted'", (run_id,))
        return {(r["mechanism"], r["idx"]) for r in rows}

    # ---- reading ----

    def _need_run(self, run_id: int) -> None:
        if self.db.execute("SELECT 1 FROM run WHERE id=?", (run_id,)).fetchone() is None:
            raise VclabError(f"{self.path}: no run {run_id}")

    @staticmethod
    def _run(r: sqlite3.Row) -> RunInfo:
        return RunInfo(r["id"], r["experiment"], r["experiment_yaml"], r["topology_yaml"],
                       r["started_ns"], r["finished_ns"], r["status"], r["vclab_version"],
                       json.loads(r["software"]), json.loads(r["capabilities"]),
                       json.loads(r["host"]), json.loads(r["settings"]))

    def runs(self) -> list[RunInfo]:
        return [self._run(r) for r in self.db.execute("SELECT * FROM run ORDER BY id")]

    def run(self, run_id: int | None = None) -> RunInfo:
        """One run; the latest when run_id is None."""
        if run_id is None:
            row = self.db.execute("SELECT * FROM run ORDER BY id DESC LIMIT 1").fetchone()
            if row is None:
                raise VclabError(f"{self.path}: no run recorded yet")
        else:
            row = self.db.execute("SELECT * FROM run WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise VclabError(f"{self.path}: no run {run_id}")
        return self._run(row)

    def resumable_run(self, experiment: str) -> RunInfo | None:
        """The latest run of this experiment that did not finish, for --resume."""
        row = self.db.execute("SELECT * FROM run WHERE experiment=? AND status != 'finished'"
                              " ORDER BY id DESC LIMIT 1", (experiment,)).fetchone()
        return None if row is None else self._run(row)

    def repetitions(self, run_id: int) -> list[RepetitionInfo]:
        rows = self.db.execute("SELECT * FROM repetition WHERE run_id=? ORDER BY id", (run_id,))
        return [RepetitionInfo(r["id"], r["run_id"], r["mechanism"], r["idx"], r["seed"], r["status"],
                               r["reason"], r["started_ns"], r["finished_ns"]) for r in rows]

    def repetition(self, repetition_id: int) -> RepetitionInfo:
        r = self.db.execute("SELECT * FROM repetition WHERE id=?", (repetition_id,)).fetchone()
        if r is None:
            raise VclabError(f"{self.path}: no repetition {repetition_id}")
        return RepetitionInfo(r["id"], r["run_id"], r["mechanism"], r["idx"], r["seed"], r["status"],
                              r["reason"], r["started_ns"], r["finished_ns"])

    def faults(self, repetition_id: int) -> list[FaultRecord]:
        rows = self.db.execute("SELECT * FROM fault WHERE repetition_id=? ORDER BY applied_ms",
                               (repetition_id,))
        return [FaultRecord(r["name"], r["kind"], r["target"], r["action"], r["scheduled_ms"],
                            r["applied_ns"], r["applied_ms"], r["undone_ms"], json.loads(r["detail"]))
                for r in rows]

    def series(self, repetition_id: int, *, kind: str | None = None,
               name: str | None = None) -> list[Series]:
        query, args = "SELECT * FROM series WHERE repetition_id=?", [repetition_id]
        if kind is not None:
            query, args = query + " AND kind=?", args + [kind]
        if name is not None:
            query, args = query + " AND name=?", args + [name]
        return [Series(r["workload"], r["kind"], r["traffic_class"], r["name"],
                       [tuple(p) for p in json.loads(r["points"])], r["unit"])
                for r in self.db.execute(query + " ORDER BY id", args)]

    def events(self, repetition_id: int, *, kind: str | None = None) -> list[Event]:
        query, args = "SELECT * FROM event WHERE repetition_id=?", [repetition_id]
        if kind is not None:
            query, args = query + " AND kind=?", args + [kind]
        return [Event(r["workload"], r["t_ms"], r["kind"], json.loads(r["detail"]))
                for r in self.db.execute(query + " ORDER BY t_ms, id", args)]

    def metrics(self, repetition_id: int) -> list[Metric]:
        rows = self.db.execute("SELECT * FROM metric WHERE repetition_id=? ORDER BY id", (repetition_id,))
        return [Metric(r["workload"], r["kind"], r["traffic_class"], r["name"], r["value"], r["unit"],
                       r["fault"]) for r in rows]

    def metric_rows(self, run_id: int) -> list[MetricRow]:
        """Every metric of the run with its repetition's mechanism, index and status."""
        rows = self.db.execute(
            "SELECT m.*, r.mechanism, r.idx, r.status FROM metric m JOIN repetition r"
            " ON m.repetition_id = r.id WHERE r.run_id=? ORDER BY r.id, m.id", (run_id,))
        return [MetricRow(r["repetition_id"], r["mechanism"], r["idx"], r["status"], r["workload"],
                          r["kind"], r["traffic_class"], r["name"], r["value"], r["unit"], r["fault"])
                for r in rows]

    def raw(self, repetition_id: int) -> list[Raw]:
        rows = self.db.execute("SELECT * FROM raw WHERE repetition_id=? ORDER BY id", (repetition_id,))
        return [Raw(r["workload"], bytes(r["blob"]), r["name"]) for r in rows]

    def mechanisms(self, run_id: int) -> list[str]:
        """Mechanisms in the order they first ran."""
        rows = self.db.execute("SELECT mechanism, MIN(id) AS first FROM repetition WHERE run_id=?"
                               " GROUP BY mechanism ORDER BY first", (run_id,))
        return [r["mechanism"] for r in rows]
