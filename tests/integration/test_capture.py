"""The capture lives through its port going down (issue 14): a switch failure used to end
scapy's socket on that port with "Socket ... failed with '[Errno 100] Network is down'" logged,
and nothing was captured there afterwards."""

from __future__ import annotations

import logging
import os
import subprocess
import time

import pytest

from vclab.workloads.capture import Capture

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (veths in the root namespace)")]

A, B = "vccapt0", "vccapt1"  # vclab's own prefix: `vclab clean` removes leftovers


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def gratuitous_arp(port: str) -> None:
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import sendp

    sendp(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01") /
          ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="10.99.0.1", pdst="10.99.0.1"),
          iface=port, verbose=False)


def test_capture_goes_on_after_its_port_was_down(tmp_path, caplog):
    ip("link", "add", A, "type", "veth", "peer", "name", B)
    try:
        ip("link", "set", A, "up")
        ip("link", "set", B, "up")
        cap = Capture([A], tmp_path)
        cap.check()
        with caplog.at_level(logging.WARNING, logger="scapy"):
            cap.start()
            gratuitous_arp(B)
            time.sleep(0.3)
            ip("link", "set", A, "down")  # the fault
            time.sleep(0.5)
            ip("link", "set", A, "up")  # the repair
            time.sleep(0.5)
            gratuitous_arp(B)
            time.sleep(0.5)
            cap.stop()
        frames = Capture.parse(cap.collect())
        assert frames["garp"] == 2, frames  # before the port went down and after it came back
        assert not [r for r in caplog.records if "Network is down" in r.getMessage()]
    finally:
        subprocess.run(["ip", "link", "del", A], capture_output=True)


def test_capture_starts_on_a_port_made_anew(tmp_path):
    """The runner builds a lab per repetition in one process, with the same port names on new
    devices. scapy kept the first lab's interfaces by name, and the stale entries made the
    sniffer fail before it started: in a main job 11 of 12 vMotions waited out the capture's
    10 s start timeout and began 11 s after their scheduled time."""
    try:
        for attempt in range(2):  # the second time: same name, new device
            ip("link", "add", A, "type", "veth", "peer", "name", B)
            ip("link", "set", A, "up")
            ip("link", "set", B, "up")
            cap = Capture([A], tmp_path / str(attempt))
            cap.check()
            started = time.monotonic()
            cap.start()
            took = time.monotonic() - started
            gratuitous_arp(B)
            time.sleep(0.3)
            cap.stop()
            assert Capture.parse(cap.collect())["garp"] == 1, attempt
            print(f"capture {attempt + 1} started in {took * 1e3:.0f} ms")
            assert took < 2.0, f"capture {attempt + 1} took {took:.1f} s to start"
            subprocess.run(["ip", "link", "del", A], capture_output=True)
    finally:
        subprocess.run(["ip", "link", "del", A], capture_output=True)


def test_capture_starts_on_a_port_that_is_down(tmp_path):
    """A migration during an uplink failure captures on the failed NIC's port while it is down:
    the capture starts at once and sees the port's frames once it is back up (it used to fail
    with 'Network is down', and the migration went on without its capture)."""
    try:
        ip("link", "add", A, "type", "veth", "peer", "name", B)
        ip("link", "set", B, "up")  # A stays down: the fault
        cap = Capture([A], tmp_path)
        cap.check()
        started = time.monotonic()
        cap.start()
        took = time.monotonic() - started
        ip("link", "set", A, "up")  # the repair
        time.sleep(0.3)
        gratuitous_arp(B)
        time.sleep(0.3)
        cap.stop()
        assert took < 2.0, f"the capture took {took:.1f} s to start"
        assert Capture.parse(cap.collect())["garp"] == 1
    finally:
        subprocess.run(["ip", "link", "del", A], capture_output=True)
