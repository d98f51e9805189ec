"""iperf3 JSON parsing on saved real output (iperf 3.12, tests/data/iperf3/) and the commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vclab.workloads.base import WorkloadError
from vclab.workloads.iperf.workload import Iperf3, client_args, server_args

DATA = Path(__file__).parent.parent / "data" / "iperf3"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_tcp_throughput_retransmits_and_series() -> None:
    doc = load("tcp_client.json")
    res = Iperf3.parse({"client": doc})
    assert res["protocol"] == "tcp"
    assert res["throughput_bps"] == doc["end"]["sum_received"]["bits_per_second"]
    assert res["throughput_bps"] == pytest.approx(288054234.36, rel=1e-9)
    assert res["retransmits"] == doc["end"]["sum_sent"]["retransmits"] == 19984
    assert res["sent_bps"] == doc["end"]["sum_sent"]["bits_per_second"]
    series = res["intervals"]
    assert len(series) == 6  # -t 3 -i 0.5
    assert series[0]["start_s"] == 0
    for a, b in zip(series, series[1:]):
        assert b["start_s"] == pytest.approx(a["end_s"])
    t0 = doc["start"]["timestamp"]["timesecs"]
    assert [s["t"] - t0 for s in series] == pytest.approx([s["start_s"] for s in series])
    assert res["min_interval_bps"] == min(s["bits_per_second"] for s in series) > 0
    assert res["duration_s"] == 3 and res["reverse"] is False


def test_udp_jitter_and_loss() -> None:
    doc = load("udp_client.json")
    res = Iperf3.parse(doc)  # the bare document works as well
    s = doc["end"]["sum"]
    assert res["protocol"] == "udp"
    assert (res["jitter_ms"], res["lost_packets"], res["packets"]) == (
        s["jitter_ms"], s["lost_packets"], s["packets"])
    assert res["packets"] == 12934 and res["lost_packets"] == 123
    assert res["lost_percent"] == pytest.approx(100 * 123 / 12934)
    # what arrived (the receiver's count, 123 packets short), not the sender's -b 50M
    assert res["throughput_bps"] == doc["end"]["sum_received"]["bits_per_second"]
    assert res["sent_bps"] == pytest.approx(50e6, rel=0.01)
    assert res["throughput_bps"] < res["sent_bps"]
    assert all(iv["packets"] > 0 for iv in res["intervals"])
    older = json.loads(json.dumps(doc))
    del older["end"]["sum_received"], older["end"]["sum_sent"]  # iperf3 before 3.10
    assert Iperf3.parse(older)["throughput_bps"] == pytest.approx(s["bits_per_second"] * (1 - 123 / 12934))


def test_workload_start_time_is_preferred_to_whole_seconds() -> None:
    doc = load("tcp_client.json")
    res = Iperf3.parse({"client": doc, "client_started": 1795630406.25})
    assert res["t_start"] == 1795630406.25
    assert res["intervals"][1]["t"] == pytest.approx(1795630406.25 + 0.5, abs=0.01)


def test_refused_connection_raises_iperf3s_message() -> None:
    with pytest.raises(WorkloadError, match="Connection refused"):
        Iperf3.parse({"client": load("refused_client.json")})


def test_missing_or_truncated_output_raises() -> None:
    with pytest.raises(WorkloadError, match="no JSON"):
        Iperf3.parse({"client": {"error": "no JSON from iperf3: no output"}})
    doc = load("tcp_client.json")
    del doc["end"]["sum_received"]
    with pytest.raises(WorkloadError, match="incomplete"):
        Iperf3.parse(doc)


def test_commands() -> None:
    srv = server_args("10.0.0.2", 5201)
    assert srv[:3] == ["iperf3", "-s", "-1"] and "--json" in srv and "-D" not in srv
    tcp = client_args("10.0.0.2", 5201, "tcp", 10, 0.5)
    assert tcp == ["iperf3", "-c", "10.0.0.2", "-p", "5201", "--json", "-t", "10", "-i", "0.5"]
    udp = client_args("10.0.0.2", 5201, "udp", 5, 1, rate_bps=50e6, length=1200, parallel=2,
                      reverse=True)
    assert udp[-8:] == ["-u", "-b", "50000000", "-l", "1200", "-P", "2", "-R"]


def test_client_cut_off_before_the_results_exchange_uses_the_servers_count() -> None:
    # Real output: a TCP flow on a flooded 100 Mbit/s NIC whose control connection stalled, so
    # the runner stopped the client at the end of the schedule, before iperf3 swapped results.
    client, server = load("tcp_interrupted_client.json"), load("tcp_interrupted_server.json")
    assert client["end"]["sum_received"]["bits_per_second"] == 0 and client["error"]
    res = Iperf3.parse({"client": client, "server": server})
    assert res["throughput_bps"] == server["end"]["sum_received"]["bits_per_second"] > 1e6
    assert res["throughput_from"] == "server"
    # a finished test keeps the client's own figure
    assert "throughput_from" not in Iperf3.parse({"client": load("tcp_client.json")})
