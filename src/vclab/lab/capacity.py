"""What this machine's emulator forwards, measured: per path (calibration, cached) and per
link during a run (interface counters).

Calibration builds a small unshaped lab (prefix `vcq`): two hypervisors on two switches, so a
path crosses four userspace bridges like the default cluster's longest one, and sends the
vMotion replay's own TCP stream between them for about a second (`VmotionReplay.measure_rate`:
the median of three timed rounds). That is the most one flow of vclab's workloads gets through
one path here. It is cached (CACHE) for a day per machine (cores, kernel, Open vSwitch): a
fresh measurement takes ~10 s of lab build. `vclab run` stores it with the run.

`LinkCounters` samples the transmit byte counter of each shaped cable end
(/sys/class/net/IF/statistics/tx_bytes) every 0.1 s in a thread; each end's busiest 0.3 s, against its nominal (scaled) rate, says whether that link kept up.
Each reading carries the time of its own read, not of the sweep: on this busy 2-core machine the
thread can wait 0.1 s or more for a CPU or the GIL in the middle of a sweep, and a reading
labelled with the sweep's start then holds bytes counted later (vmotion-contention-10g's sdn
uplink showed 1.46 of its 0.5 Gbit/s rate, which HTB never lets through). A read that itself
took longer than MAX_READ_S is left out: when in it the counter was read is not known.
The bytes are weighed as a cable carries them, not as the veth counts them (scale.wire_bytes):
a TSO packet's segments each carry their own headers on a cable and in HTB's rate.

`StolenCpu` samples /proc/stat's steal time: the CPU time the hypervisor gave to something
else while this machine (a VM, as a Vagrant box or a CI runner is) had work to run. A lab on 2
cores has no slack for it: in a fresh-clone main job (2026-12-07, d072862) the hypervisor took
up to 45 % of the machine's CPU in single seconds of one repetition, and that repetition's
vMotion copied its first round in 22.5 s against 2.3-2.8 s in the 11 others (steal 0-6 % in
their worst second). Nothing inside the machine can prevent it, so the runner measures it and
runs a repetition it spoiled again (runner.STOLEN_LIMIT).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from vclab.experiments.scale import LinkFidelity, peak_rate_bps, wire_bytes
from vclab.lab.executor import MISSING, TIMED_OUT, run_short

CACHE = Path(os.environ.get("VCLAB_CAPACITY_CACHE", "/var/cache/vclab/capacity.json"))
MAX_AGE_S = 24 * 3600.0
PREFIX = "vcq"
# 3 % of the 0.3 s window: a reading whose time is less certain than this is left out.
MAX_READ_S = 0.01

CALIBRATION = """
cluster: calibration
mechanism: none
defaults: {link: {}}
networks:
  vmotion: {vlan: 20, subnet: 10.20.0.0/24}
switches:
  tor-a: {}
  tor-b: {}
links:
  - [tor-a, tor-b]
hypervisors:
  esx1: {nics: {vmnic0: tor-a}, networks: [vmotion]}
  esx2: {nics: {vmnic0: tor-b}, networks: [vmotion]}
"""


def machine_key() -> str:
    """What the capacity depends on: cores, kernel, Open vSwitch version."""
    p = run_short(["ovs-vswitchd", "--version"])
    ovs = "?" if p.returncode in (MISSING, TIMED_OUT) else p.stdout.split("\n")[0].strip()
    # the switch ports' type moves the capacity most of all (AF_XDP: no TSO)
    ports = os.environ.get("VCLAB_PORTS", "system")
    return f"{os.cpu_count()} cpus, {platform.release()}, {ovs}, ports {ports}"


def calibrate(seconds: float = 1.0) -> dict[str, Any]:
    """Build the calibration lab and measure one path (needs root and the lab lock)."""
    from vclab.lab.lab import Lab
    from vclab.topology.loader import cluster_from_text
    from vclab.workloads.vmotion.workload import VmotionReplay
    from vclab.workloads.vmotion.model import VmotionSpec

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vclab-capacity-") as tmp:
        with Lab(cluster_from_text(CALIBRATION), prefix=PREFIX) as lab:
            spec = VmotionSpec(memory_bytes=2**20, link_rate_bps=1e9)
            replay = VmotionReplay(lab.node("esx1"), lab.node("esx2"),
                                   lab.plan.host("esx2").interface("vmotion").ip, spec,
                                   lab.tracker, Path(tmp), name="capacity")
            try:
                replay.check()
                rate = replay.measure_rate(seconds=seconds)
            finally:
                replay.stop()
    return {"rate_bps": rate, "samples_bps": replay.measured_samples_bps,
            "measured_at": time.time(), "load": load, "machine": machine_key(),
            "ports": lab.ports,
            "method": f"vMotion replay stream across 4 unshaped userspace bridges, {lab.ports} ports"}


def capacity(refresh: bool = False, cache: Path = CACHE) -> dict[str, Any]:
    """The per-path capacity: cached if fresh and from this machine, else measured now."""
    key = machine_key()
    if not refresh and cache.exists():
        try:
            c = json.loads(cache.read_text())
            if c.get("machine") == key and time.time() - c.get("measured_at", 0) < MAX_AGE_S:
                return {**c, "cached": True}
        except (OSError, ValueError):
            pass
    c = calibrate()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(c, indent=1))
    except OSError:
        pass  # an unwritable cache only costs the next run a calibration
    return {**c, "cached": False}


class Sampler:
    """Calls `_read` once at start(), every `interval_s` in a daemon thread, and once at
    stop(): what LinkCounters and StolenCpu share."""

    thread_name = "sampler"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self._read()

        self._read()
        self._thread = threading.Thread(target=loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._read()


def cpu_ticks(stat: str) -> tuple[int, int]:
    """(stolen, total) clock ticks of all CPUs, from /proc/stat's text. Guest time is already
    counted in user time, so the total is the first eight fields."""
    fields = [int(x) for x in stat.split("\n", 1)[0].split()[1:9]]
    return fields[7], sum(fields)


def worst_stolen_share(samples: list[tuple[float, int, int]], window_s: float) -> float:
    """The largest share of the CPU's time stolen over any `window_s` between samples
    (monotonic time, stolen ticks, total ticks); over the whole span when it is shorter. Pure."""
    worst, j = 0.0, 0
    for i, (t, stolen, total) in enumerate(samples):
        j = max(j, i + 1)
        while j < len(samples) - 1 and samples[j][0] - t < window_s:
            j += 1
        if j >= len(samples):
            break
        ticks = samples[j][2] - total
        if ticks > 0:
            worst = max(worst, (samples[j][1] - stolen) / ticks)
        if samples[j][0] - t < window_s:  # the rest of the span is shorter than a window
            break
    return worst


class StolenCpu(Sampler):
    """The hypervisor's steal time, sampled in a thread while a run goes on; `worst()` is the
    largest share of the machine's CPU it took in any one second."""

    thread_name = "stolen-cpu"

    def __init__(self, interval_s: float = 0.25, window_s: float = 1.0,
                 stat: Path = Path("/proc/stat")) -> None:
        super().__init__(interval_s)
        self.window_s, self.stat = window_s, stat
        self.samples: list[tuple[float, int, int]] = []

    def _read(self) -> None:
        try:
            self.samples.append((time.monotonic(), *cpu_ticks(self.stat.read_text())))
        except (OSError, ValueError, IndexError):  # no /proc/stat (or no steal field): nothing to say
            pass

    def worst(self, since: float | None = None) -> float | None:
        """The worst second's share (from monotonic time `since`, if given; the sample just
        before it opens the first window)."""
        s = self.samples
        if since is not None:
            first = max(0, next((i for i, x in enumerate(s) if x[0] >= since), len(s)) - 1)
            s = s[first:]
        return worst_stolen_share(s, self.window_s) if len(s) > 1 else None


class LinkCounters(Sampler):
    """Transmit counters of shaped cable ends, sampled in a thread while a run goes on."""

    thread_name = "link-counters"

    def __init__(self, plan, interval_s: float = 0.1, wired: bool = False) -> None:
        super().__init__(interval_s)
        # (cable name, root-namespace end, nominal rate) of every shaped cable end
        self.ends = [(v.name, e.ifname, float(v.shape.rate)) for v in plan.veths
                     if v.shape is not None and v.shape.rate for e in (v.a, v.b) if e.in_root]
        # Wired cables (topology/wire.py): an AF_XDP end's transmit counter counts what OVS
        # offered, before the wire's shaping; what the cable carried is what the far end
        # received.
        self._read_at = ({end: ("rx", far) for end, far in plan.cable_peers().items()}
                         if wired else {})
        self.bridge = {e.ifname: e.node for v in plan.veths for e in (v.a, v.b) if e.in_root}
        # A scaled migration can be over in a quarter second: the window must fit inside it.
        self.window_s = 0.3
        self.samples: dict[str, list[tuple[float, int]]] = {end: [] for _, end, _ in self.ends}
        self.uncertain = 0  # readings left out: their read took longer than MAX_READ_S
        self._last: dict[str, tuple[int, int]] = {}  # each end's last counters read
        self._wire: dict[str, float] = {end: 0.0 for _, end, _ in self.ends}  # bytes on the wire since the first

    def _tx_counters(self, end: str) -> tuple[int, int]:
        """(bytes, packets) the end has transmitted onto its cable."""
        way, dev = self._read_at.get(end, ("tx", end))
        stats = f"/sys/class/net/{dev}/statistics"
        with open(f"{stats}/{way}_bytes") as b, open(f"{stats}/{way}_packets") as p:
            return int(b.read()), int(p.read())

    def _read(self) -> None:
        for _, end, _ in self.ends:
            before = time.monotonic()
            try:
                counted = self._tx_counters(end)
            except (OSError, ValueError):
                continue  # an end that is gone (a failed switch's ports still exist; a moved VM's do)
            after = time.monotonic()
            if after - before > MAX_READ_S:
                self.uncertain += 1
                continue
            # Bytes as the cable carries them (scale.wire_bytes), summed reading by reading so
            # that each stretch's own mix of TSO segments and small packets is weighed.
            last = self._last.get(end)
            if last is not None:
                self._wire[end] += wire_bytes(counted[0] - last[0], counted[1] - last[1])
            self._last[end] = counted
            self.samples[end].append(((before + after) / 2, int(self._wire[end])))

    def links(self, start: float | None = None, end: float | None = None) -> list[LinkFidelity]:
        """Each end's busiest 0.3 s (between monotonic times start and end, if given)."""
        out = []
        for link, e, nominal in self.ends:
            s = [x for x in self.samples[e] if (start is None or x[0] >= start) and (end is None or x[0] <= end)]
            out.append(LinkFidelity(link, e, nominal, peak_rate_bps(s, self.window_s),
                                    self.bridge.get(e, "")))
        return out
