"""`vclab merge`: shards of one experiment run on several machines become one run.

Each shard (`vclab run --shard i/n`) stores its own run; merging copies every repetition, with
everything it produced, into one run of the destination store, through the store's own reader
and writer so the copy gets the same transactions and checks as a live run."""

from __future__ import annotations

from pathlib import Path

from vclab.errors import VclabError
from vclab.results.model import RepetitionResult
from vclab.results.store import ResultStore, db_path


def merge(sources: list[Path], destination: Path) -> tuple[int, int]:
    """Merge the latest run of each source store into one new run at `destination`.
    Returns (run id, repetitions copied). All sources must be of the same experiment file."""
    runs = []
    for src in sources:
        if not db_path(src).exists():
            raise VclabError(f"{src}: no results store here")
        store = ResultStore(src, create=False)
        runs.append((store, store.run()))
    first = runs[0][1]
    for store, run in runs[1:]:
        if run.experiment_yaml != first.experiment_yaml:
            raise VclabError(f"{store.path}: a different experiment ({run.experiment!r}) than "
                             f"{runs[0][0].path} ({first.experiment!r}): only shards of one run merge")
    dest = ResultStore(destination)
    settings = {**first.settings, "merged_from": [str(s.path) for s, _ in runs]}
    run_id = dest.start_run(first.experiment, first.experiment_yaml, first.topology_yaml,
                            software=first.software, capabilities=first.capabilities,
                            host=first.host, settings=settings,
                            started_ns=min(r.started_ns for _, r in runs))
    copied = 0
    try:
        for store, run in runs:
            for rep in store.repetitions(run.id):
                dest.record_repetition(run_id, RepetitionResult(
                    mechanism=rep.mechanism, index=rep.index, seed=rep.seed, status=rep.status,
                    reason=rep.reason, started_ns=rep.started_ns, finished_ns=rep.finished_ns,
                    faults=store.faults(rep.id), series=store.series(rep.id),
                    events=store.events(rep.id), metrics=store.metrics(rep.id), raw=store.raw(rep.id)))
                copied += 1
        statuses = {r.status for _, r in runs}
        dest.finish_run(run_id, "finished" if statuses == {"finished"} else "interrupted")
    finally:
        dest.close()
        for store, _ in runs:
            store.close()
    return run_id, copied
