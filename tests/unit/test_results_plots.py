"""Plots rebuilt from the store alone: PNG files that are real images, faults marked at the
times they were applied, failed repetitions left out."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from vclab.results.cli import plots_cmd
from rigs.demo import fill_demo
from vclab.results.model import Metric, RepetitionResult, Series
from vclab.results.plots import mechanism_colors, outage_distribution, timeline, vmotion_rounds, write_plots
from vclab.results.store import ResultStore


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demo")
    with ResultStore(path) as store:
        fill_demo(store)
    return path


def _is_png_picture(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(io.BytesIO(data), format="png")
    assert pixels[..., :3].std() > 0.05  # something is drawn, not a blank canvas
    return pixels.shape[:2]


def test_every_plot_is_written_from_the_store_alone(demo, tmp_path):
    with ResultStore(demo, create=False) as store:  # a fresh reader, nothing else in memory
        run = store.run()
        paths = write_plots(store, run.id, tmp_path / "plots")
        ok = [r for r in store.repetitions(run.id) if r.status == "ok"]
        faults = {f.name for r in ok for f in store.faults(r.id)}
    names = sorted(p.name for p in paths)
    # one outage figure per fault (a readable one, not every fault's panels in one)
    expected = sorted(["verdicts.png", "vmotion-rounds.png"] +
                      [f"outage-{''.join(c if c.isalnum() or c in '-_' else '-' for c in f)}.png"
                       for f in faults] +
                      [f"timeline-{r.mechanism}-{r.index}.png" for r in ok])
    assert names == expected
    assert "timeline-stp-2.png" not in names  # that repetition failed and has no data
    for p in paths:
        h, w = _is_png_picture(p.read_bytes())
        assert w >= 800 and h >= 300, p.name
        assert p.stat().st_size > 10_000


def test_timeline_marks_each_fault_at_its_applied_time(demo):
    with ResultStore(demo, create=False) as store:
        rep = next(r for r in store.repetitions(store.run().id) if r.mechanism == "stp" and r.status == "ok")
        faults = store.faults(rep.id)
        fig = timeline(store, rep)
    assert len(faults) == 1
    applied, undone = faults[0].applied_ms / 1e3, faults[0].undone_ms / 1e3
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["probe gaps", "probe round-trip time", "iperf3 throughput", "iSCSI I/O latency", "events"]
    for ax in fig.axes:
        vertical = [tuple(line.get_xdata()) for line in ax.lines if len(line.get_xdata()) == 2
                    and line.get_xdata()[0] == line.get_xdata()[1]]
        assert (applied, applied) in vertical and (undone, undone) in vertical
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert any(faults[0].name in n and f"{applied:.3f} s" in n for n in notes)
    # the 10 s STP outage is drawn as a span of that length in the gap panel
    spans = [seg for coll in fig.axes[0].collections for seg in coll.get_segments()]
    assert any(seg[1][0] - seg[0][0] > 9 for seg in spans)


def test_outage_distribution_one_point_per_ok_repetition(demo):
    with ResultStore(demo, create=False) as store:
        run = store.run()
        fig = outage_distribution(store, run.id)
        colors = mechanism_colors(store.mechanisms(run.id))
    assert len(fig.axes) == 3  # vmotion, storage-a, management
    for ax in fig.axes:
        points = {}
        for line in ax.lines:
            if line.get_marker() == "o":
                points[line.get_color()] = len(line.get_xdata())
        assert points == {colors["sdn"]: 3, colors["rstp"]: 3, colors["stp"]: 2}
        assert ax.get_yscale() == "log"  # 8 ms next to 10 s


def test_nothing_to_plot_gives_no_figure(tmp_path):
    with ResultStore(tmp_path) as store:
        run = store.start_run("bare", "experiment: bare\n")
        store.record_repetition(run, RepetitionResult("sdn", 1, 1, metrics=[
            Metric("p", "probe", "vmotion", "lost", 0)]))
        store.record_repetition(run, RepetitionResult("rstp", 1, 2, series=[
            Series("p", "probe", "vmotion", "rtt_ms", [(t, 0.2 + 0.01 * (t % 3)) for t in range(100)])]))
        reps = store.repetitions(run)
        assert timeline(store, reps[0]) is None
        fig = timeline(store, reps[1])  # a repetition without faults still plots
        assert [ax.get_title(loc="left") for ax in fig.axes] == ["probe round-trip time"]
        assert outage_distribution(store, run) is None
        assert vmotion_rounds(store, run) is None
        store.finish_run(run)
    paths = plots_cmd(tmp_path)
    assert [p.name for p in paths] == ["timeline-rstp-1.png"]
    assert paths[0].parent == tmp_path / "plots"
    line = next(iter(fig.axes[0].lines))
    assert np.allclose(line.get_ydata()[:3], [0.2, 0.21, 0.22])


def _default_shaped_store(path: Path, rounds: int = 2) -> None:
    """The default experiment's shape: 4 mechanisms, 6 faults, 4 probe networks and the timeline
    series, from synthetic numbers."""
    from vclab.results.model import FaultRecord

    mechs = ["sdn", "rstp", "stp", "rstp+balance-slb"]
    faults = [("esx1.vmnic0 down@6s", 6), ("esx1.vmnic0 up@11s", 11), ("tor-a/tor-b#1 down@14s", 14),
              ("tor-a/tor-b#1 up@22s", 22), ("tor-a fail@25s", 25), ("tor-a recover@29s", 29)]
    nets = ["vmotion", "storage-b", "management", "vm-web"]
    rng = np.random.default_rng(1)
    with ResultStore(path) as store:
        run = store.start_run("default", "experiment: default\n")
        for i in range(1, rounds + 1):
            for k, m in enumerate(mechs):
                recs = [FaultRecord(name, "link", name.split()[0], name.split()[1].split("@")[0],
                                    at * 1e3, 0, at * 1e3 + 3,
                                    undone_ms=(faults[j + 1][1] * 1e3 + 3) if j % 2 == 0 else None)
                        for j, (name, at) in enumerate(faults)]
                metrics = [Metric(f"probe {n}", "probe", n, "outage_ms", float(rng.uniform(1, 10 ** (k + 1))), fault=f)
                           for n in nets for f, _ in faults]
                metrics += [Metric(f"probe {n}", "probe", n, "noise_floor_ms", float(rng.uniform(0, 3)))
                            for n in nets]
                series = [Series(f"probe {n}", "probe", n, "gap_ms", [(t * 100.0, float(rng.uniform(0, 5)))
                                                                       for t in range(320)]) for n in nets]
                store.record_repetition(run, RepetitionResult(m, i, i, faults=recs, metrics=metrics,
                                                              series=series))
        store.finish_run(run)


def test_default_shaped_plots_render_without_layout_warnings(tmp_path):
    """No collapsed axes: matplotlib warns 'constrained_layout not applied' when a figure packs
    more panels than it has room for; here every warning is an error."""
    import warnings

    from vclab.results.plots import all_plots

    _default_shaped_store(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ResultStore(tmp_path, create=False) as store:
            plots = all_plots(store, store.run().id)
    groups = [p.group for p in plots]
    assert groups[0] == "verdicts" and groups.count("distribution") == 6
    for p in plots:
        h, w = _is_png_picture(p.png)
        assert w <= 1500, p.name  # readable on a page, not a strip of 30 panels


def test_fault_labels_on_a_timeline_do_not_overlap(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _default_shaped_store(tmp_path, rounds=1)
    with ResultStore(tmp_path, create=False) as store:
        rep = store.repetitions(store.run().id)[0]
        fig = timeline(store, rep)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == 6  # each "up" stands for its "down"'s undo: labelled once
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)


def test_label_levels():
    from vclab.results.plots import label_levels

    assert label_levels([0, 1, 2, 10], [3, 3, 3, 3]) == [0, 1, 2, 0]
    assert label_levels([0, 5], [5, 1]) == [0, 0]
