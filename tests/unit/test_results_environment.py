"""The host and version facts stored with every run."""

from __future__ import annotations

from vclab.results.environment import host_info, software_versions, version_from


def test_versions_from_tool_banners():
    assert version_from("ovs-vswitchd (Open vSwitch) 3.1.0") == "3.1.0"
    assert version_from("iperf 3.12 (cJSON 1.7.15)") == "3.12"
    assert version_from("ip utility, iproute2-6.1.0, libbpf 1.1.0") == "6.1.0"
    assert version_from("1.0.85") == "1.0.85"
    assert version_from("no number here") is None


def test_host_and_software_are_recorded():
    host = host_info()
    assert set(host) == {"hostname", "os", "kernel", "machine", "cpus", "memory"}
    assert isinstance(host["cpus"], int) and host["cpus"] >= 1
    soft = software_versions()
    assert soft["python"].startswith("3.") and soft["vclab"]
    assert "matplotlib" in soft and "pydantic" in soft
    assert all(isinstance(v, str) and v for v in soft.values())
