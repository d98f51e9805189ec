"""Time-scaled emulation and the emulator's fidelity. Pure: no root, no lab.

One ovs-vswitchd thread forwards every frame of a userspace-datapath lab, so a 2-core machine
cannot carry a "10 Gbit/s" cable at 10 Gbit/s. What it cannot run at full rate it runs at scale
1/k: every rate (cables, NICs, network caps, iperf3 rates) and every amount of data that those
rates move (VM memory, VM disks, dirty rates, working sets) is divided by k. Transfer times
(amount / rate) are then the same as at full scale, so a migration modelled at 0.21 s takes
0.21 s here too, and measured throughputs are multiplied back by k when stored.

What does not scale keeps its real value: timers (HA heartbeats, BFD, RSTP hellos, probe
intervals, iSCSI timeouts, TCP's 200 ms minimum RTO), per-frame latencies and frame sizes.
Results that depend on how many frames fit in a timer (e.g. the bytes in flight at a failure)
are therefore not scale-free; README "Time-scaled emulation" says so.

k is the smallest of SCALES that leaves the fastest nominal cable at most HEADROOM of the
per-path capacity this machine measured (lab/capacity.py): the rest is for the other
workloads, the probes and the replay's own round trips that share the forwarding thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vclab.workloads.registry import rate_bound

SCALES = (1, 2, 4, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)
# Measured with a capacity of 7.4 Gbit/s: alone (bench/migration.py --quick) a migration over a
# cable at a third of it reached 0.87 of the cable's rate, at an eighth 0.95; under the default
# experiment's load (8 probes, iSCSI, iperf3, sdn's controller) a 1 Gbit/s cable (an eighth)
# reached 0.87, at 0.5 Gbit/s 0.94-0.98.
HEADROOM = 0.125
KEPT_UP = 0.9  # a link that reached less than this share of its (scaled) rate limited the result
# A repetition in which the hypervisor took this share of the machine's CPU or more in some
# second (steal time, lab/capacity.StolenCpu) measured the host's neighbours, not the design.
# Undisturbed repetitions of the default experiment stay at or below 6 %.
STOLEN_LIMIT = 0.10
STOLEN = "host_steal_share"  # the metric: the worst second's share
LOADED = 0.5  # a link busier than this share of its rate in its busiest second was asked for all


def choose_scale(fastest_bps: float, capacity_bps: float, headroom: float = HEADROOM) -> int:
    """The smallest k in SCALES with fastest/k within `headroom` of the capacity."""
    if capacity_bps <= 0 or headroom <= 0:
        raise ValueError("capacity and headroom must be > 0")
    if fastest_bps <= 0:
        return 1
    for k in SCALES:
        if fastest_bps / k <= headroom * capacity_bps:
            return k
    return SCALES[-1]


def parse_scale(text: str) -> int | None:
    """`--scale`: 'auto' (None: chosen from the capacity) or a whole k >= 1 ('10' or '1/10')."""
    t = text.strip().lower()
    if t == "auto":
        return None
    if t.startswith("1/"):
        t = t[2:]
    try:
        k = int(t)
    except ValueError:
        raise ValueError(f"--scale {text!r}: write auto, K or 1/K with K a whole number >= 1") from None
    if k < 1:
        raise ValueError(f"--scale {text!r}: K must be at least 1")
    return k


def scale_text(k: int) -> str:
    return "1" if k == 1 else f"1/{k}"


def _div(x, k: int):
    return None if x is None else x / k


def _div_int(x, k: int):
    return None if x is None else max(1, int(round(x / k)))


def cable_rates(cluster) -> list[float]:
    """Nominal rate of every cable the build shapes (None = unshaped: left out)."""
    default = cluster.defaults.link.rate
    rates = [link.rate or default for link in cluster.links]
    rates += [nic.rate or default for s in cluster.servers().values() for nic in s.nics.values()]
    rates += [default for a in cluster.storage.values() for _ in a.portals]
    return [float(r) for r in rates if r]


def fastest_rate(cluster) -> float:
    return max(cable_rates(cluster), default=0.0)


def scale_cluster(cluster, k: int):
    """The cluster at scale 1/k: rates and what they move divided by k."""
    if k == 1:
        return cluster
    d = cluster.defaults
    defaults = d.model_copy(update={"link": d.link.model_copy(update={"rate": _div(d.link.rate, k)})})
    links = [link.model_copy(update={"rate": _div(link.rate, k)}) for link in cluster.links]
    networks = {n: net.model_copy(update={"cap": _div(net.cap, k)}) for n, net in cluster.networks.items()}

    def server(s):
        return s.model_copy(update={"nics": {n: nic.model_copy(update={"rate": _div(nic.rate, k)})
                                             for n, nic in s.nics.items()}})

    vms = {n: vm.model_copy(update={"memory": _div_int(vm.memory, k), "disk": _div_int(vm.disk, k),
                                    "dirty_rate": vm.dirty_rate / k,
                                    "working_set": _div_int(vm.working_set, k)})
           for n, vm in cluster.vms.items()}
    return cluster.model_copy(update={
        "defaults": defaults, "links": links, "networks": networks, "vms": vms,
        "hypervisors": {n: server(s) for n, s in cluster.hypervisors.items()},
        "management": {n: server(s) for n, s in cluster.management.items()}})


def scale_experiment(experiment, k: int):
    """The experiment at scale 1/k: each workload entry as its kind scales (iperf3's rate
    divided by k; timers stay)."""
    if k == 1:
        return experiment
    workloads = [w.model_copy(update={w.kind: w.spec.at_scale(k)}) for w in experiment.workloads]
    return experiment.model_copy(update={"workloads": workloads})


def to_nominal(kind: str, name: str, value: float, k: int) -> float:
    """A stored number at full scale: what the scaled rates bound (as its kind declares)
    times k, anything else as it is."""
    return value * k if rate_bound(kind, name) else value


# ---- link counters ----

# A full-size tagged TCP frame: 1518 bytes, 1448 of them payload (fabric/qos.py). The 70 others
# are the headers every frame carries on a cable (Ethernet 14 + 802.1Q 4, which the userspace
# datapath sends in the data, + IPv4 20 + TCP with timestamps 32).
FRAME_BYTES = 1518
TCP_PAYLOAD_BYTES = 1448


def wire_bytes(tx_bytes: int, tx_packets: int) -> float:
    """What `tx_bytes` in `tx_packets` sent by a veth weigh as frames on a cable. Pure.

    With TSO a veth passes up to 64 KiB of a TCP stream as one packet with one set of headers,
    and its tx_bytes counts them once; a cable, and the HTB that shapes the veth to the cable's
    rate, count each frame's own (qdisc_pkt_len: a packet's segments times their headers).
    Measured on a full 0.5 Gbit/s uplink: tx_bytes 0.954 of HTB's count, the whole shortfall of
    the link's ratio. The frames are estimated as full-size segments of the payload; a packet
    smaller than a frame adds nothing, so the estimate never exceeds what a cable would carry
    (small packets among the segments make it slightly short)."""
    headers = FRAME_BYTES - TCP_PAYLOAD_BYTES
    if tx_packets <= 0:
        return float(tx_bytes)
    frames = (tx_bytes - tx_packets * headers) / TCP_PAYLOAD_BYTES
    return tx_bytes + max(0.0, frames - tx_packets) * headers


def peak_rate_bps(samples: Sequence[tuple[float, int]], window_s: float = 0.5) -> float:
    """Highest average rate over any stretch of at least `window_s` between samples
    (t seconds, byte counter), in bits/s."""
    best = 0.0
    j = 0
    for i in range(1, len(samples)):
        t, b = samples[i]
        while j + 1 < i and t - samples[j + 1][0] >= window_s:
            j += 1
        t0, b0 = samples[j]
        if t - t0 >= window_s and t > t0:
            best = max(best, (b - b0) * 8 / (t - t0))
    return best


@dataclass(frozen=True)
class LinkFidelity:
    link: str  # the cable's name
    end: str  # the interface whose transmissions were counted
    nominal_bps: float  # scaled
    peak_bps: float
    bridge: str = ""  # the switch (or virtual switch) that end belongs to: it transmits

    @property
    def ratio(self) -> float:
        return self.peak_bps / self.nominal_bps if self.nominal_bps else 0.0

    @property
    def loaded(self) -> bool:
        return self.ratio >= LOADED

    @property
    def kept_up(self) -> bool:
        return not self.loaded or self.ratio >= KEPT_UP


def full_rate_flows(workloads, cluster) -> dict[str, set[str]]:
    """Hosts that start a flow asking for all the rate it can get (each entry says: a
    vMotion's source, a TCP iperf3 without a rate) -> where those flows go. The source's uplink
    must carry it at the cable's rate unless a later cable on its way was full (see
    held_back_by); a flow's later hops may be held back by QoS or by this first hop, which says
    nothing of the emulator."""
    out: dict[str, set[str]] = {}
    for w in workloads:
        if (flow := w.spec.full_rate_flow(cluster)) is not None:
            out.setdefault(flow[0], set()).add(flow[1])
    return out


def source_uplinks(links: Iterable[LinkFidelity], bridges: dict[str, str]) -> list[LinkFidelity]:
    """Per source (hypervisor -> its virtual switch's name), its busiest uplink end (a team's
    active NIC): the links to judge."""
    out = []
    for bridge in bridges.values():
        mine = [x for x in links if x.bridge == bridge]
        if mine:
            out.append(max(mine, key=lambda x: x.ratio))
    return out


def held_back_by(uplink: LinkFidelity, links: Iterable[LinkFidelity], switches: set[str],
                 destinations: set[str]) -> LinkFidelity | None:
    """The cable on a full-rate flow's way that ran at its rate while the source's uplink did
    not, or None. Its way is what a switch (`switches`: their bridge names) sends onto a
    cable between two switches or onto a destination's cable (named `host.nic`). Such a flow
    was held back by the design (a team that sends it across the inter-switch cable that the
    background load also uses), and the emulator kept up: it forwarded that cable at its rate."""
    if uplink.ratio >= KEPT_UP:
        return None
    links = list(links)
    ends: dict[str, set[str]] = {}
    for x in links:
        ends.setdefault(x.link, set()).add(x.bridge)
    between_switches = {name for name, bridges in ends.items()
                        if len(bridges) == 2 and bridges <= switches}
    way = [x for x in links if x.bridge in switches and x.link != uplink.link and (
        x.link in between_switches or x.link.split(".")[0] in destinations)]
    full = [x for x in way if x.ratio >= KEPT_UP]
    return max(full, key=lambda x: x.ratio) if full else None


def worst_loaded(links: Iterable[LinkFidelity]) -> LinkFidelity | None:
    """The loaded link furthest below its rate (None when no link was loaded)."""
    loaded = [x for x in links if x.loaded]
    return min(loaded, key=lambda x: x.ratio) if loaded else None


def capacity_problem(fastest_bps: float, capacity_bps: float, k: int, headroom: float = HEADROOM) -> str:
    """In words, when the fastest cable at scale 1/k asks more than the capacity allows."""
    if capacity_bps and fastest_bps / k > headroom * capacity_bps:
        return (f"the fastest cable at scale {scale_text(k)} is {fastest_bps / k / 1e9:.2f} Gbit/s, "
                f"more than {headroom:.0%} of the {capacity_bps / 1e9:.2f} Gbit/s this machine "
                "forwards per path: the emulator, not the design, may limit the results")
    return ""
