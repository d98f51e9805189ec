"""Capture a window of frames on root-namespace ports (OVS ports are veth ends there) with
scapy's AsyncSniffer, kept as one pcap per port with the run.

The BPF filter is compiled into the kernel socket, so a port carrying a migration's gigabits
hands Python only the frames asked for (by default ARP and RARP: the announcements a failover
or a migration sends). One pcap per port, because classic pcap has no field for the interface
and "where was the RARP seen" is the question.

    cap = Capture(["vcv1p1", "vcv2p1"], outdir / "capture", tracker=lab.tracker)
    cap.check(); cap.start(); ...; cap.stop()
    Capture.parse(cap.collect())   # {"frames": [...], "rarp": n, "garp": n, ...}
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from vclab.lab.procs import ProcessTracker
from vclab.workloads.base import Workload, WorkloadError

DEFAULT_FILTER = "arp or rarp"
ETH_ARP, ETH_RARP = 0x0806, 0x8035
DLT_EN10MB = 1  # pcap link type: Ethernet


def _listen_socket():
    """scapy's listening socket, made to live through its port going down.

    When a fault takes a captured port down (a switch fails, a cable is cut), the kernel
    reports ENETDOWN once on the packet socket's next read. scapy's sniffer takes any read
    error as the socket's end: it closes it, logs "Socket ... failed with '[Errno 100] Network
    is down'" and captures nothing more on that port, not even after the port comes back.
    Read as "no frame this time" instead, so the port is captured again once it is up.

    A port that is down when the capture starts (a migration during an uplink failure) has
    that error pending from its bind, and scapy's opening flush reads it and raises, so the
    whole sniffer failed ("did not start: OSError: [Errno 100] Network is down" in 11 of 12
    repetitions of a main job). The flush takes it as "nothing to flush" instead; the kernel
    hooks the socket to the port when it comes up."""
    import errno
    import select

    import scapy.arch.linux as scapy_linux
    from scapy.config import conf

    def flush_through_port_down(fd: int) -> None:
        while select.select([fd], [], [], 0)[0]:
            try:
                os.read(fd, 65535)
            except OSError as e:
                if e.errno != errno.ENETDOWN:
                    raise
                return

    if hasattr(scapy_linux, "_flush_fd"):  # scapy's own, run by L2Socket.__init__
        scapy_linux._flush_fd = flush_through_port_down
    base = conf.L2listen

    class ListenThroughPortDown(base):  # type: ignore[misc, valid-type]
        def recv_raw(self, x=65535):
            try:
                return super().recv_raw(x)
            except OSError as e:
                if e.errno == errno.ENETDOWN:
                    return None, None, None
                raise

    return ListenThroughPortDown


class Capture(Workload):
    kind = "capture"

    def __init__(self, ports: list[str], outdir: Path, *, bpf: str = DEFAULT_FILTER,
                 tracker: ProcessTracker | None = None, start_timeout: float = 10.0) -> None:
        self.ports = list(dict.fromkeys(ports))
        self.outdir, self.bpf, self.start_timeout = Path(outdir), bpf, start_timeout
        self.tracker = tracker  # the sniffer is a thread of ours: no process to track
        self._sniffer = None
        self.files: dict[str, Path] = {}

    def check(self) -> None:
        problems = []
        missing = [p for p in self.ports if not os.path.exists(f"/sys/class/net/{p}")]
        if not self.ports:
            problems.append("no port to capture on")
        if missing:
            problems.append(f"no such root-namespace interface: {', '.join(missing)}")
        try:
            import scapy.all  # noqa: F401
        except ImportError as e:
            problems.append(f"scapy is missing ({e})")
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            problems.append(f"cannot write the pcap under {self.outdir}: {e}")
        if problems:
            raise WorkloadError("capture: " + "; ".join(problems))

    def start(self) -> None:
        from scapy.config import conf
        from scapy.sendrecv import AsyncSniffer

        # scapy keeps the interfaces it has seen, by name, for the process's life. The runner
        # builds a lab per repetition with the same port names on new devices, and a stale
        # entry's interface index failed the sniffer's thread before it opened its sockets
        # (OSError: No such device): 11 of 12 vMotions of a main job waited out the start
        # timeout below and began 11 s after their scheduled time. Read them anew.
        conf.ifaces.reload()
        started = threading.Event()
        sniffer = self._sniffer = AsyncSniffer(iface=self.ports, filter=self.bpf, store=True,
                                               started_callback=started.set,
                                               L2socket=_listen_socket())
        sniffer.start()
        # Frames sent before the sockets are open are lost: return only once they are; a
        # sniffer that failed says why at once instead of after the whole timeout.
        deadline = time.monotonic() + self.start_timeout
        while not started.wait(0.02):
            if sniffer.exception is not None or time.monotonic() > deadline:
                why = f": {type(sniffer.exception).__name__}: {sniffer.exception}" \
                    if sniffer.exception is not None else f" within {self.start_timeout:g} s"
                self.stop()
                raise WorkloadError(f"capture on {', '.join(self.ports)} did not start{why}")

    def stop(self) -> None:
        from scapy.utils import wrpcap

        sniffer, self._sniffer = self._sniffer, None
        if sniffer is None:
            return
        try:
            packets = sniffer.stop(join=True) or []
        except Exception:  # stop() raises if the thread already ended; keep what it stored
            packets = sniffer.results or []
        for port in self.ports:
            path = self.outdir / f"{port}.pcap"
            wrpcap(str(path), [p for p in packets if getattr(p, "sniffed_on", None) == port],
                   linktype=DLT_EN10MB)  # also for an empty capture, which has no frame to tell
            self.files[port] = path

    def collect(self) -> dict[str, str]:
        """{port: pcap path}."""
        return {port: str(path) for port, path in self.files.items()}

    @staticmethod
    def parse(raw: dict[str, str]) -> dict[str, Any]:
        """Every frame in the pcaps, oldest first, classified; and the counts per kind.

        A RARP is ethertype 0x8035; a gratuitous ARP is an ARP whose sender and target
        addresses are the same (request or reply)."""
        from scapy.utils import rdpcap

        frames = []
        for port, path in raw.items():
            for pkt in rdpcap(path):
                frames.append({"port": port, "t_ns": int(pkt.time * 1e9), **describe(pkt)})
        frames.sort(key=lambda f: f["t_ns"])
        counts = {k: sum(1 for f in frames if f["kind"] == k) for k in ("rarp", "garp", "arp", "other")}
        return {"frames": frames, **counts, "files": dict(raw)}


def describe(pkt) -> dict[str, Any]:
    """One frame as a dict: kind (rarp, garp, arp, other), MACs, VLAN, ARP fields."""
    from scapy.layers.l2 import ARP, Dot1Q, Ether

    if Ether not in pkt:
        return {"kind": "other"}
    eth = pkt[Ether]
    out: dict[str, Any] = {"src": eth.src, "dst": eth.dst, "vlan": None}
    # On a trunk the frame carries an 802.1Q tag: the ethertype that counts is the inner one.
    inner, etype = eth.payload, eth.type
    if Dot1Q in pkt:
        inner, etype, out["vlan"] = pkt[Dot1Q].payload, pkt[Dot1Q].type, int(pkt[Dot1Q].vlan)
    # scapy binds ARP to 0x0806 only: a RARP's body is decoded as ARP by hand.
    arp = pkt[ARP] if ARP in pkt else (ARP(bytes(inner)) if etype == ETH_RARP else None)
    if arp is not None:
        out.update(mac=arp.hwsrc, ip=arp.psrc, op=int(arp.op))
        if etype == ETH_RARP:
            out["kind"] = "rarp"
        elif arp.psrc == arp.pdst and arp.psrc != "0.0.0.0":
            out["kind"] = "garp"
        else:
            out["kind"] = "arp"
    else:
        out["kind"] = "other"
    return out
