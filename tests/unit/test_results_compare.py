"""Comparison tables: worst value per repetition, winners by direction, ties, failed repetitions
left out, and the CSV/JSON exports scripts read."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from vclab.errors import VclabError
from vclab.results.cli import compare_cmd
from vclab.results.compare import build_rows, compare, format_cell, format_value, render_table, to_csv, to_json
from vclab.results.model import Metric, MetricRow, RepetitionResult
from vclab.results.stats import summarize
from vclab.results.store import ResultStore

MECHS = ["sdn", "rstp", "stp"]


def _row(mech, rep, name, value, cls="storage-a", status="ok", workload="probe", unit="ms", fault=""):
    # repetition ids unique per (mechanism, rep)
    rid = MECHS.index(mech) * 100 + rep
    return MetricRow(rid, mech, rep, status, workload, "probe", cls, name, value, unit, fault)


def _by(rows, metric, cls="storage-a"):
    return next(r for r in rows if r.metric == metric and r.traffic_class == cls)


def test_lower_is_better_and_a_clear_winner():
    data = [_row("sdn", i, "outage_ms", v) for i, v in enumerate([8.0, 8.4, 7.9, 8.1, 8.0, 7.8], 1)]
    data += [_row("rstp", i, "outage_ms", v) for i, v in enumerate([15.0, 14.2, 16.1, 15.5, 14.9, 15.2], 1)]
    data += [_row("stp", i, "outage_ms", v) for i, v in enumerate([10600.0, 10400.0, 10900.0, 10500.0,
                                                                   10700.0, 10600.0], 1)]
    row = _by(build_rows(data, MECHS), "outage_ms")
    assert row.winners == ["sdn"] and row.clear
    assert row.verdict.kind == "win" and row.verdict.runner_up == "rstp"
    assert row.cells["sdn"].median == 8.0 and row.cells["stp"].max == 10900.0
    assert row.cells["rstp"].n == 6 and row.cells["rstp"].ci_low is not None


def test_two_rounds_are_too_few_for_a_verdict_three_settle_a_clear_lead():
    data = [_row("sdn", i, "outage_ms", v) for i, v in enumerate([8.0, 8.4], 1)]
    data += [_row("rstp", i, "outage_ms", v) for i, v in enumerate([15.0, 14.2], 1)]
    row = _by(build_rows(data, MECHS), "outage_ms")
    assert row.winners == ["sdn"] and not row.clear
    assert row.verdict.kind == "unclear" and row.verdict.more == 1
    # a third round: the t interval of the paired difference (about 4..10 ms) excludes zero
    data += [_row("sdn", 3, "outage_ms", 7.9), _row("rstp", 3, "outage_ms", 16.1)]
    row = _by(build_rows(data, MECHS), "outage_ms")
    assert row.clear and row.verdict.kind == "win" and row.verdict.pairs["rstp"].method == "t"


def test_a_partial_repetition_is_left_out_of_its_failed_workloads_rows_only():
    data = [_row("sdn", 1, "outage_ms", 8.0, workload="a"), _row("sdn", 1, "outage_ms", 30.0, workload="b"),
            _row("sdn", 2, "outage_ms", 7.0, workload="a", status="partial"),  # b's outcome failed
            _row("sdn", 2, "throughput_bps", 9e9, "vm-web", status="partial", unit="bit/s"),
            _row("rstp", 1, "outage_ms", 15.0), _row("rstp", 2, "outage_ms", 16.0)]
    data[-3] = MetricRow(2, "sdn", 2, "partial", "iperf3", "iperf3", "vm-web", "throughput_bps", 9e9, "bit/s", "")
    rows = build_rows(data, MECHS, failed={2: {("probe", "storage-a")}})
    assert _by(rows, "outage_ms").cells["sdn"].n == 1  # 7 ms would be probe a's alone
    assert _by(rows, "throughput_bps", "vm-web").cells["sdn"].n == 1  # iperf3 did fine


def test_higher_is_better_for_throughput_and_overlap_is_not_clear():
    data = [_row("sdn", i, "throughput_during_fault_bps", v, "vm-web", unit="bit/s")
            for i, v in enumerate([7.6e9, 7.7e9, 7.2e9], 1)]
    data += [_row("rstp", i, "throughput_during_fault_bps", v, "vm-web", unit="bit/s")
             for i, v in enumerate([7.5e9, 7.8e9, 7.4e9], 1)]
    data += [_row("stp", i, "throughput_during_fault_bps", 0.0, "vm-web", unit="bit/s") for i in (1, 2)]
    row = _by(build_rows(data, MECHS), "throughput_during_fault_bps", "vm-web")
    assert row.winners == ["sdn"] and not row.clear  # 7.6 vs 7.5 Gbit/s: inside the CIs


def test_worst_workload_per_repetition_and_failed_repetitions_left_out():
    data = [_row("sdn", 1, "outage_ms", 8.0, workload="a"), _row("sdn", 1, "outage_ms", 30.0, workload="b"),
            _row("sdn", 2, "outage_ms", 9.0, workload="a"), _row("sdn", 2, "outage_ms", 7.0, workload="b"),
            _row("rstp", 1, "outage_ms", 15.0), _row("rstp", 2, "outage_ms", 99999.0, status="failed")]
    row = _by(build_rows(data, MECHS), "outage_ms")
    assert sorted(summarize([30.0, 9.0]).as_dict().items()) == sorted(row.cells["sdn"].as_dict().items())
    assert row.cells["rstp"].n == 1 and row.cells["rstp"].max == 15.0
    assert row.cells["stp"].n == 0
    assert row.winners == ["rstp"]  # 15 < median(30, 9) = 19.5
    assert not row.clear  # rstp has one repetition: no CI, so no claim of a clear lead


def test_ties_context_rows_and_single_contestant():
    data = [_row(m, i, "false_failures", 0.0, "management", unit="") for m in ("sdn", "rstp") for i in (1, 2)]
    data += [_row("stp", i, "false_failures", 1.0, "management", unit="") for i in (1, 2)]
    data += [_row(m, 1, "noise_floor_ms", 5.0) for m in MECHS]
    data += [_row("sdn", 1, "lost", 3.0, "vmotion", unit="")]
    rows = build_rows(data, MECHS)
    assert _by(rows, "false_failures", "management").winners == ["sdn", "rstp"]
    assert _by(rows, "noise_floor_ms").winners == []  # context, not a contest
    assert _by(rows, "lost", "vmotion").winners == []  # only one mechanism measured it
    assert [r.metric for r in rows] == ["lost", "false_failures", "noise_floor_ms"]  # table order


def test_rows_are_split_per_fault():
    data = [_row("sdn", 1, "outage_ms", 8.0, fault="link down"), _row("sdn", 1, "outage_ms", 40.0, fault="switch fail"),
            _row("rstp", 1, "outage_ms", 15.0, fault="link down"), _row("rstp", 1, "outage_ms", 30.0, fault="switch fail")]
    rows = build_rows(data, MECHS)
    assert [(r.fault, r.winners) for r in rows] == [("link down", ["sdn"]), ("switch fail", ["rstp"])]


def test_formatting():
    assert format_value(15.234, "ms") == "15.2 ms"
    assert format_value(1930.0, "ms") == "1.93 s"
    assert format_value(9.41e9, "bit/s") == "9.41 Gbit/s"
    assert format_value(850e6, "bit/s") == "850 Mbit/s"
    assert format_value(10511.0, "") == "10,511"
    assert format_value(3.0, "") == "3"
    assert format_value(None, "ms") == "-"
    med, spread, ci = format_cell(summarize([10400.0, 10600.0, 10900.0]), "ms")
    assert med == "10.6 s" and spread == "p95 10.9, max 10.9" and ci.startswith("CI ") and ci.endswith("(n=3)")
    assert format_cell(summarize([8.0]), "ms") == ("8 ms", "p95 8, max 8", "n=1: no CI")
    # an interval for a count never goes below zero
    assert format_cell(summarize([0.0, 0.0, 9.0]), "")[2].startswith("CI 0-")


def _store(tmp_path) -> ResultStore:
    store = ResultStore(tmp_path)
    run = store.start_run("cmp", "experiment: cmp\n")
    for mech, values in (("sdn", [8.0, 8.2]), ("rstp", [15.0, 16.0])):
        for i, v in enumerate(values, 1):
            store.record_repetition(run, RepetitionResult(mech, i, i, metrics=[
                Metric("probe", "probe", "storage-a", "outage_ms", v),
                Metric("iperf3", "iperf3", "vm-web", "throughput_during_fault_bps", 9e9 - v * 1e8)]))
    store.record_repetition(run, RepetitionResult("rstp", 3, 3, "failed", "did not converge"))
    store.finish_run(run)
    return store


def test_csv_and_json_exports(tmp_path):
    with _store(tmp_path) as store:
        c = compare(store)
    records = list(csv.DictReader(io.StringIO(to_csv(c))))
    assert len(records) == len(c.rows) * len(c.mechanisms) == 4
    outage = {r["mechanism"]: r for r in records if r["metric"] == "outage_ms"}
    assert outage["sdn"]["winner"] == "True" and outage["rstp"]["winner"] == "False"
    assert float(outage["sdn"]["median"]) == pytest.approx(8.1) and outage["sdn"]["n"] == "2"
    assert outage["rstp"]["traffic_class"] == "storage-a" and outage["rstp"]["unit"] == "ms"
    data = json.loads(to_json(c))
    assert data["mechanisms"] == ["sdn", "rstp"]
    thr = next(r for r in data["rows"] if r["metric"] == "throughput_during_fault_bps")
    assert thr["winners"] == ["sdn"] and thr["direction"] == "higher"
    assert thr["cells"]["rstp"]["n"] == 2  # the failed third repetition is not counted
    assert data["excluded"] == [{"mechanism": "rstp", "index": 3, "status": "failed",
                                 "reason": "did not converge"}]


def test_rich_table_and_cli(tmp_path, capsys):
    with _store(tmp_path) as store:
        c = compare(store)
    con = Console(record=True, width=160)
    con.print(render_table(c))
    text = con.export_text()
    assert "sdn" in text and "rstp" in text and "8.1 ms" in text and "verdict" in text
    con = Console(record=True, width=160)
    assert compare_cmd(Path(tmp_path), "table", console=con) == ""
    assert "left out: rstp repetition 3 failed: did not converge" in con.export_text()
    capsys.readouterr()  # a recording console still prints
    out = compare_cmd(Path(tmp_path), "csv")
    assert capsys.readouterr().out.startswith("metric,") and out.startswith("metric,")
    with pytest.raises(VclabError, match="format"):
        compare_cmd(Path(tmp_path), "xml")
    with pytest.raises(VclabError, match="no results"):
        compare_cmd(Path(tmp_path) / "missing", "csv")
