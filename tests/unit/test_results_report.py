"""The HTML report: one file that references nothing outside itself, with the experiment, the
environment, the tables, embedded plots and findings in plain words."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from vclab.results.cli import report_cmd
from vclab.results.compare import Comparison, build_rows, per_repetition
from rigs.demo import EXPERIMENT_YAML, fill_demo
from vclab.results.model import MetricRow, RepetitionInfo, RunInfo
from vclab.results.report import Context, findings, ha_times, network_kinds
from vclab.results.store import ResultStore


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("demo")
    with ResultStore(path) as store:
        fill_demo(store)
    out = report_cmd(path)
    return out, out.read_text(encoding="utf-8")


def test_one_self_contained_file(report):
    out, text = report
    assert out.name == "report.html"  # beside the store, and the only file written
    assert {p.name for p in out.parent.iterdir() if not p.name.startswith("results.sqlite")} == {"report.html"}
    # nothing fetched from anywhere: no external src/href, no stylesheet or script files
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", text, re.I)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "<link" not in text.lower() and "<script" not in text.lower() and "@import" not in text
    assert "url(" not in text


def test_plots_are_embedded_pngs(report):
    _, text = report
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 2 + 8  # outage, vMotion rounds, a timeline per ok repetition
    for data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_sections_and_findings(report):
    _, text = report
    for heading in ("Findings", "Comparison", "Plots", "Repetitions", "Environment", "Experiment"):
        assert f"<h2>{heading}</h2>" in text
    # the experiment verbatim (escaped), the environment as recorded
    assert "experiment: demo-link-failure" in text and "- {at: 6s, link: &quot;tor-a/tor-b#1&quot;" in text
    assert "openvswitch" in text and "no openvswitch kernel module" in text
    plain = re.sub(r"<[^>]+>", "", text).replace("&#x27;", "'")
    assert "stp repetition 2 failed: fabric did not converge" in plain
    assert re.search(r"stp: 12\.\d s storage stall \(iSCSI stall, median of 2\) exceeds the HA isolation "
                     r"time \(5 s\): VMs would be restarted\.", plain)
    assert re.search(r"sdn: storage stalls for 20\d ms at most", plain)
    assert "stp: HA declared a healthy host failed in 2 of 2 repetitions" in plain
    assert re.search(r"storage-a after tor-a/tor-b#1 down: sdn restores traffic first", plain)
    assert "within 2x the probe noise floor" in plain


def _rows(values: dict[str, list[float]], metric: str, cls: str, unit: str = "ms") -> list[MetricRow]:
    out = []
    for m, vals in values.items():
        for i, v in enumerate(vals, 1):
            out.append(MetricRow(hash((m, i)) % 10**6, m, i, "ok", "w", "probe", cls, metric, v, unit, ""))
    return out


def _comparison(rows: list[MetricRow], mechs: list[str], excluded=()) -> Comparison:
    run = RunInfo(1, "x", "", "", 0, None, "finished", "0", {}, [], {}, {})
    return Comparison(run, mechs, build_rows(rows, mechs), list(excluded))


def test_rules_in_plain_words():
    mechs = ["sdn", "rstp"]
    rows = _rows({"sdn": [8.0, 9.0, 8.5], "rstp": [1900.0, 2000.0, 1800.0]}, "outage_ms", "san")
    rows += _rows({"sdn": [0, 0, 0], "rstp": [1900, 2000, 1800]}, "lost", "san", "")
    failed = RepetitionInfo(9, 1, "rstp", 4, 4, "failed", "controller did not start", 0, 0)
    c = _comparison(rows, mechs, [failed])
    ctx = Context({"san": "storage"}, 3000.0, 1500.0, per_repetition(rows))
    found = findings(c, ctx)
    texts = [f.text for f in found]
    assert texts[0].startswith("rstp repetition 4 failed: controller did not start")
    assert "rstp: 1.9 s storage stall (storage outage on san, median of 3) exceeds the HA isolation " \
           "time (1.5 s): VMs would be restarted." in texts
    assert any(t.startswith("sdn: storage stalls for 8.5 ms at most") for t in texts)
    assert "san: sdn restores traffic first (8.5 ms median outage); rstp 1.9 s (224x)." in texts
    assert "sdn lost no probe on any network in any of its repetitions." in texts
    assert [f.severity for f in found] == sorted((f.severity for f in found),
                                                 key=["bad", "note", "good"].index)
    # without an HA isolation time, storage is not judged against it
    quiet = findings(c, Context({"san": "storage"}, None, None, per_repetition(rows)))
    assert not any("isolation" in f.text for f in quiet)
    # a network that is not storage is not a storage stall
    other = findings(c, Context({"san": "vm"}, None, 1500.0, per_repetition(rows)))
    assert not any("storage" in f.text for f in other)


def test_settings_from_the_stored_files():
    assert network_kinds("networks:\n  management: {vlan: 10}\n  san: {kind: storage}\n") == {
        "management": "management", "san": "storage"}
    assert network_kinds("") == {} and network_kinds("{ not yaml") == {}
    run = RunInfo(1, "x", EXPERIMENT_YAML, "", 0, None, "finished", "0", {}, [], {}, {})
    assert ha_times(run) == (3000.0, 5000.0)  # from heartbeats: failure_after / isolation_after
    resolved = RunInfo(1, "x", EXPERIMENT_YAML, "", 0, None, "finished", "0", {}, [], {},
                       {"ha_isolation_ms": 12000})
    assert ha_times(resolved) == (3000.0, 12000.0)  # what the runner resolved wins


def test_a_run_with_nothing_but_a_failure_still_reports(tmp_path):
    from vclab.results.model import RepetitionResult
    from vclab.results.report import build_report

    with ResultStore(tmp_path) as store:
        run = store.start_run("early", "experiment: early\n")
        store.record_repetition(run, RepetitionResult("sdn", 1, 1, "failed", "tgtd did not start"))
        text = build_report(store)
    assert "sdn repetition 1 failed: tgtd did not start" in text.replace("&#x27;", "'")
    assert "No metrics recorded." in text and "<img" not in text


def test_report_opens_on_the_verdicts_then_the_limits_with_their_sources(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_results_summary import build

    build(tmp_path, partial=True).close()
    text = report_cmd(tmp_path).read_text(encoding="utf-8")
    order = [text.index(f"<h2>{h}</h2>") for h in ("Verdicts", "Against what the applications tolerate",
                                                    "Plots", "Findings", "Comparison", "Repetitions")]
    assert order == sorted(order)
    matrix = text[order[0]:order[1]]
    assert 'class="verdicts"' in matrix and "background:#" in matrix  # coloured by winner
    assert "verdicts: 2 clear of 3 rows (1 wins, 1 ties, 1 unclear)" in matrix
    assert "noise floor: p95 8 ms worst (network vm-web, mechanism stp)" in matrix
    assert "partial" in matrix and "probe vm-web" in matrix
    limits = text[order[1]:order[2]]
    assert "50 ms: carrier-grade protection switching" in limits and "ITU-T G.841" in limits
    assert "over in 6 of 6 (worst 10.5 s)" in limits  # stp at the uplink
    plain = re.sub(r"<[^>]+>", "", text).replace("&#x27;", "'")
    assert "rstp repetition 2 is partial: probe vm-web could not be read" in plain
    assert '<span class="partial">partial</span>' in text


def test_every_limit_names_its_source():
    from vclab.results.tolerances import TOLERANCES

    metrics = {m for t in TOLERANCES for m in t.metrics}
    assert {"switchover_ms", "longest_stall_ms", "heartbeat_gap_ms", "outage_ms"} <= metrics
    assert [t.limit_ms for t in TOLERANCES] == [500.0, 10_000.0, 12_000.0, 50.0]
    assert all(len(t.source) > 40 for t in TOLERANCES)
