"""The registry: each kind's adapter declares its metrics; compare, the summary and the report
read labels, directions, units and table order from those declarations only."""

import pytest

from vclab.results.model import default_unit
from vclab.workloads.registry import ADAPTERS, METRICS, metric_info


def test_tables_open_on_what_a_fault_cost():
    assert list(METRICS)[:10] == ["outage_ms", "loss_outage_ms", "late_disruption_ms", "lost",
                                  "longest_stall_ms", "late_stall_ms", "false_failures", "total_ms",
                                  "downtime_ms", "throughput_during_fault_bps"]
    assert [m.section for m in METRICS.values()] == sorted(
        (m.section for m in METRICS.values()), key=("headline", "detail", "context").index)


def test_a_metric_two_kinds_store_is_declared_alike():
    both = [a.kind for a in ADAPTERS.values() if any(m.name == "throughput_bps" for m in a.metrics)]
    assert both == ["iscsi", "iperf3"]
    assert metric_info("throughput_bps").direction == "higher"


def test_units_follow_the_names_suffix():
    for m in METRICS.values():
        assert m.unit == default_unit(m.name), m


def test_an_undeclared_metric_is_shown_without_a_winner():
    info = metric_info("link_achieved_ratio")
    assert (info.label, info.direction) == ("link achieved ratio", None)


def test_an_adapter_stores_only_what_it_declares():
    adapter = object.__new__(ADAPTERS["probe"])
    adapter.index = 0
    with pytest.raises(KeyError, match="declares no metric 'takeover_ms'"):
        adapter.metric("takeover_ms", 1.0, workload="w", kind="probe", traffic_class="")
    m = adapter.metric("outage_ms", 12.5, fault="f", workload="w", kind="probe", traffic_class="n")
    assert (m.name, m.value, m.unit, m.fault) == ("outage_ms", 12.5, "ms", "f")


def test_the_timeline_reads_each_series_from_its_kind():
    """Series panels as a reader follows a failure (the probes first), titled, scaled and
    drawn as their kinds declare them; an older run's undeclared series keeps its own name."""
    from vclab.workloads.registry import SERIES, series_info

    assert list(SERIES) == ["gap_ms", "rtt_ms", "throughput_bps", "latency_ms"]
    assert [(s.label, s.axis_label, s.duration) for s in SERIES.values()] == [
        ("probe gaps", "gap (ms)", True), ("probe round-trip time", "RTT (ms)", False),
        ("iperf3 throughput", "Gbit/s", False), ("iSCSI I/O latency", "latency (ms)", True)]
    assert series_info("throughput_bps").scale == 1e9
    old = series_info("queue_depth_pkts")
    assert (old.label, old.axis_label, old.scale, old.duration) == ("queue depth pkts", "pkts", 1.0, False)
