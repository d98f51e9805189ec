"""bench/fault_timing.py reads `ovs-ofctl monitor --timestamp` logs (one saved from a real
switch failure and recovery of tor-a under sdn on this machine)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("fault_timing", ROOT / "bench" / "fault_timing.py")
ft = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ft)
LOG = (ROOT / "tests" / "data" / "ofctl" / "monitor-sdn-switch-fail.log").read_text()
FAIL_NS, RECOVER_NS = 1796605065173295842, 1796605069171967328  # as the runner recorded them
PORTS = ["vcfs1p1", "vcfs1p2"]  # tor-b's ends of the two inter-switch cables


def test_each_port_status_with_its_time_and_state():
    events = ft.port_events(LOG)
    assert len(events) == 8 and {p for _, p, _ in events} == set(PORTS)
    assert [s for _, p, s in events if p == PORTS[0]] == ["0", "LINK_DOWN", "0", "LIVE"]


def test_carrier_down_and_up_at_once_live_after_bfd():
    events = ft.port_events(LOG)
    down = ft.seen_within(events, PORTS, FAIL_NS, "down", RECOVER_NS)
    # the recovery's 14 ioctls took ~2 ms before its applied time was read
    up = ft.seen_within(events, PORTS, RECOVER_NS, "up", RECOVER_NS + 10**10, slack_ms=3)
    live = ft.seen_within(events, PORTS, RECOVER_NS, "live", RECOVER_NS + 10**10, slack_ms=3)
    assert down[1] == up[1] == live[1] == 2
    assert down[0] < 10 and up[0] < 10  # ms: the switch reported both cables at once
    assert 1000 < live[0] < 1300  # BFD's down state sends once a second (RFC 5880)


def test_lines_name_missing_ports():
    rows = [("fail", 7.0, 14, 14), ("fail", 3.0, 13, 14), ("recover", 1.0, 14, 14)]
    assert ft.lines(rows) == ["switch fail: ports seen down within 7 ms (13 of 14 ports)",
                              "switch recover: ports seen up within 1 ms (14 ports)"]
