"""Sharded runs split the work without overlap, and merge back into one comparable run."""

from vclab.experiments.runner import shard_units
from vclab.experiments.spec import MechanismChoice
from rigs.demo import fill_demo
from vclab.results.merge import merge
from vclab.results.store import ResultStore


def test_shards_cover_every_repetition_once():
    mechs = [MechanismChoice(fabric=m) for m in ("sdn", "rstp", "stp")]
    whole = shard_units(mechs, 5)
    parts = [shard_units(mechs, 5, (i, 4)) for i in range(1, 5)]
    flat = [(c.label, i) for p in parts for c, i in p]
    assert sorted(flat) == sorted((c.label, i) for c, i in whole)
    assert len(set(flat)) == len(flat) == 15
    assert all({c.label for c, _ in p} for p in parts)


def test_merge_joins_shards_into_one_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for path in (a, b):
        with ResultStore(path) as store:
            fill_demo(store)
    with ResultStore(a, create=False) as store:
        run = store.run()
        n_a = len(store.repetitions(run.id))
        metrics_a = sum(len(store.metrics(r.id)) for r in store.repetitions(run.id))
    # the demo's two stores hold the same (mechanism, index) pairs: renumber b's as a shard would
    with ResultStore(b, create=False) as store:
        run_b = store.run()
        store.db.execute("UPDATE repetition SET idx = idx + 100 WHERE run_id=?", (run_b.id,))
        store.db.commit()
    run_id, copied = merge([a, b], tmp_path / "merged")
    assert copied == 2 * n_a
    with ResultStore(tmp_path / "merged", create=False) as store:
        reps = store.repetitions(run_id)
        assert len(reps) == 2 * n_a
        assert sum(len(store.metrics(r.id)) for r in reps) == 2 * metrics_a
        assert store.run(run_id).settings["merged_from"] == [str(a / "results.sqlite"), str(b / "results.sqlite")]
