"""What `vclab run` ends on, from a results store built from synthetic data: one verdict line per
fault x traffic class within 100 columns, then exactly the three closing lines."""

from __future__ import annotations

import re
import sqlite3

import pytest
from rich.console import Console

from vclab.results.cli import summary_cmd
from vclab.results.compare import compare
from vclab.results.model import WORKLOAD_FAILED, Event, Metric, RepetitionResult
from vclab.results.store import SCHEMA, ResultStore
from vclab.results.summary import WIDTH, counts_line, floor_line, headline_rows, summary_lines

MECHS = ["sdn", "rstp", "stp", "rstp+balance-slb"]
DOWN, SWITCH = "esx1.vmnic0 down@6s", "tor-a/tor-b#1 down@14s"


def outage(mech: str, i: int) -> dict[tuple[str, str], float]:
    """(network, fault) -> outage: sdn clearly first at the uplink; everything ties at 0 on
    management; a noisy toss-up on vm-web at the cable."""
    return {("vmotion", DOWN): {"sdn": 8, "rstp": 15, "stp": 10_500, "rstp+balance-slb": 3}[mech] + i % 3,
            ("management", DOWN): 0.0,
            ("vm-web", SWITCH): [5, 40, 9, 30, 2, 25, 11, 8][(i + MECHS.index(mech)) % 8]}


def build(tmp_path, rounds: int = 6, partial: bool = False) -> ResultStore:
    store = ResultStore(tmp_path)
    run = store.start_run("default", "experiment: default\n")
    for i in range(1, rounds + 1):
        for m in MECHS:
            metrics = [Metric(f"probe {net}", "probe", net, "outage_ms", v, fault=f)
                       for (net, f), v in outage(m, i).items()]
            metrics += [Metric(f"probe {net}", "probe", net, "noise_floor_ms",
                               {"vmotion": 1.5, "management": 0.9, "vm-web": 2.0}[net] + (m == "stp") * i)
                        for net in ("vmotion", "management", "vm-web")]
            rep = RepetitionResult(m, i, i, metrics=metrics)
            if partial and m == "rstp" and i == 2:
                rep.status = "partial"
                rep.reason = "probe vm-web: ValueError: bad log; "
                rep.metrics = [x for x in metrics if x.traffic_class != "vm-web"]
                rep.events = [Event("probe vm-web", 0.0, WORKLOAD_FAILED,
                                    {"kind": "probe", "traffic_class": "vm-web", "error": "bad log"})]
            store.record_repetition(run, rep)
    store.finish_run(run)
    return store


def test_summary_lines(tmp_path):
    with build(tmp_path) as store:
        c = compare(store)
    lines = summary_lines(c, c.values, "results/default/report.html")
    assert all(len(line) <= WIDTH for line in lines)
    rows = lines[:-3]
    assert len(rows) == len(headline_rows(c)) == 3  # one per fault x class with a contest
    assert re.match(r"esx1\.vmnic0 down@6s\s+vmotion\s+outage\s+clear\s+rstp\+balance-slb by 5 ms "
                    r"over sdn$", rows[1]), rows
    assert re.match(r"esx1\.vmnic0 down@6s\s+management\s+outage\s+tie\s+all within ±2 ms$", rows[0])
    assert re.match(r"tor-a/tor-b#1 down@14s\s+vm-web\s+outage\s+unclear\s+\S+ ahead; ~\d+ more "
                    r"reps$", rows[2])
    assert lines[-3] == "verdicts: 2 clear of 3 rows (1 wins, 1 ties, 1 unclear)"
    assert lines[-2] == "noise floor: p95 8 ms worst (network vm-web, mechanism stp)"
    assert lines[-1] == "report: results/default/report.html"


def test_the_summary_printed_and_json_counts(tmp_path):
    build(tmp_path).close()
    con = Console(record=True, width=200)
    lines = summary_cmd(tmp_path, console=con, report=tmp_path / "report.html")
    assert con.export_text().splitlines() == lines
    assert lines[-1] == f"report: {tmp_path / 'report.html'}"


def test_floor_line_without_a_floor():
    assert floor_line(None).startswith("noise floor: not measured")


def test_partial_repetition_is_stored_shown_and_left_out_of_its_rows(tmp_path):
    with build(tmp_path, partial=True) as store:
        c = compare(store)
        reps = store.repetitions(c.run.id)
    assert [r.index for r in c.partial] == [2] and c.excluded == []
    assert any(r.status == "partial" for r in reps)
    web = next(r for r in c.rows if r.traffic_class == "vm-web" and r.metric == "outage_ms")
    vmo = next(r for r in c.rows if r.traffic_class == "vmotion" and r.metric == "outage_ms")
    assert web.cells["rstp"].n == 5 and vmo.cells["rstp"].n == 6
    assert c.failed_workloads[c.partial[0].id][0]["traffic_class"] == "vm-web"


def test_a_format_1_store_is_upgraded_to_take_partial(tmp_path):
    old = SCHEMA.replace("'partial', ", "")
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.executescript(old)
    db.execute("INSERT INTO meta VALUES ('format_version', '1')")
    db.execute("INSERT INTO run (experiment, experiment_yaml, topology_yaml, started_ns, status,"
               " vclab_version, software, capabilities, host, settings) VALUES"
               " ('x', '', '', 1, 'finished', '0', '{}', '[]', '{}', '{}')")
    db.execute("INSERT INTO repetition VALUES (1, 1, 'sdn', 1, 1, 'ok', '', 1, 2)")
    db.execute("INSERT INTO metric VALUES (1, 1, 'p', 'probe', 'm', 'outage_ms', 5, 'ms', '')")
    db.commit()
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO repetition VALUES (2, 1, 'sdn', 2, 2, 'partial', '', 1, 2)")
    db.close()
    with ResultStore(tmp_path) as store:
        assert store.format_version == 2
        assert store.metrics(1)[0].value == 5  # nothing else was touched
        store.record_repetition(1, RepetitionResult("sdn", 2, 2, "partial", "x"))
        assert [r.status for r in store.repetitions(1)] == ["ok", "partial"]
        store.db.execute("DELETE FROM repetition WHERE id=1")  # the cascade still holds
        assert store.metrics(1) == []


def test_counts_line_format(tmp_path):
    with build(tmp_path, rounds=2) as store:
        c = compare(store)
    assert counts_line(c) == "verdicts: 0 clear of 3 rows (0 wins, 0 ties, 3 unclear)"
