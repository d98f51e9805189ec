"""The iscsi entry of an experiment: tgtd on the array, an initiator per host; IOPS,
throughput, stalls and failover per fault."""

from __future__ import annotations

from vclab.results.model import Series
from vclab.workloads.adapter import Adapter, MetricInfo, Outcome, SeriesInfo, address, ms_since
from vclab.workloads.base import Workload
from vclab.workloads.iscsi.spec import IscsiSpec
from vclab.workloads.iscsi.target import Chap, IscsiTarget
from vclab.workloads.iscsi.workload import Iscsi, parse, quiet_stall

# The noise floor's stretch ends this long before the first fault or workload event (as the
# probes' ten intervals of 1 ms), so a stall that event caused is never part of it.
QUIET_MARGIN_NS = 10_000_000
# A fault-free stretch shorter than this holds too few gaps to be the floor (a second: ~300
# completions at queue depth one); without one, each fault's gaps are kept as measured.
QUIET_MIN_NS = 1_000_000_000


class _IscsiGroup(Workload):
    """One tgtd on the array and one initiator per hypervisor, started and stopped together."""

    kind = "iscsi"

    def __init__(self, target, initiators):
        self.target, self.initiators = target, initiators

    def check(self):
        for i in self.initiators:
            i.check()

    def start(self):
        self.target.start()
        try:
            for i in self.initiators:
                i.start()
        except BaseException:
            self.stop()
            raise

    def stop(self):
        for i in self.initiators:
            i.stop()
        self.target.stop()

    def collect(self):
        return {str(getattr(i.host, "name", k)): i.collect() for k, i in enumerate(self.initiators)}

    @staticmethod
    def parse(raw):
        return {host: parse(r) for host, r in raw.items()}


class IscsiAdapter(Adapter):
    spec_type = IscsiSpec
    metrics = (
        # Per fault: the stall at the fault, 0 when no longer than the noise floor; for the
        # whole run: the longest stall anywhere.
        MetricInfo("longest_stall_ms", "iSCSI stall", "lower", "headline", short="iSCSI stall"),
        MetricInfo("late_stall_ms", "iSCSI later stall (above the noise floor)", "lower",
                   "headline", short="late stall"),
        MetricInfo("failover_ms", "iSCSI path failover", "lower", short="iSCSI failover"),
        MetricInfo("throughput_bps", "throughput", "higher", short="throughput"),
        MetricInfo("iops", section="context"),
        # what the parser also reports, should the adapter store them
        MetricInfo("fault_stall_ms", "iSCSI stall at the fault", "lower"),
        MetricInfo("detect_ms", "failure detection", "lower"),
        MetricInfo("stall_noise_floor_ms", "iSCSI stall noise floor (no fault)", None, "context"),
    )
    series = (SeriesInfo("latency_ms", "iSCSI I/O latency", "latency", "ms", duration=True),)

    @property
    def traffic_class(self) -> str:
        return "storage"

    def _array(self, cluster) -> str:
        return self.spec.array or sorted(cluster.storage)[0]

    @property
    def name(self) -> str:
        return f"iscsi {','.join(self.spec.hosts)} {self.spec.lun}"

    def make(self, lab, tracker, workdir, duration_s):
        cluster = lab.cluster
        array = self._array(cluster)
        spec = cluster.storage[array]
        nets = list(spec.portals)  # file order: the first portal is the preferred path
        chap = Chap(spec.chap.user, spec.chap.secret) if spec.chap else None
        target = IscsiTarget(lab.node(array), [address(lab, array, n) for n in nets], dict(spec.luns),
                             chap, tracker=tracker, workdir=workdir / f"iscsi{self.index}")
        initiators = []
        for k, host in enumerate(self.spec.hosts):
            # A host reaches the portals on the storage networks it is on; multipath uses them all.
            mine = [n for n in nets if n in cluster.hypervisors[host].networks]
            if not self.spec.multipath:
                mine = mine[:1]
            initiators.append(Iscsi.to(target, lab.node(host), self.spec.lun, tracker,
                                       portals=[address(lab, array, n) for n in mine],
                                       pattern=self.spec.pattern, mix=self.spec.mix, seed=k,
                                       login_timeout_s=10.0, start_timeout=40.0,
                                       name=f"iscsi {host}", workdir=workdir / f"iscsi{self.index}-{host}"))
        return _IscsiGroup(target, initiators)

    def outcome(self, raw, t0_ns, end_ns, faults):
        out = Outcome()
        applied = sorted(faults, key=lambda f: f.applied_ns)
        # The noise floor: the longest gap between completions where no fault and no workload
        # event is scheduled. A fault is charged only with what exceeds it, as a probe's
        # later disruption is (I/O at a queue depth of one pauses 5-10 ms with nothing broken
        # under the default load: that was booked as every fault's stall).
        quiet = self.quiet(t0_ns, end_ns, applied, QUIET_MARGIN_NS, QUIET_MIN_NS)
        for host, r in raw.items():
            common = dict(workload=f"iscsi {host}", kind=self.kind, traffic_class=self.traffic_class)
            whole = parse(r)
            for name in ("iops", "throughput_bps"):
                if whole.get(name) is not None:
                    out.metrics.append(self.metric(name, whole[name], **common))
            for name in ("longest_stall_ms",):
                if whole.get(name) is not None:
                    out.metrics.append(self.metric(name, whole[name], **common))
            floor = quiet_stall(r, quiet)
            if floor is not None:
                out.metrics.append(self.metric("stall_noise_floor_ms", floor, **common))
            s = whole.get("series") or {}
            out.series.append(Series(name="latency_ms", points=[
                (ms_since(t0_ns, r.get("trailer", {}).get("t_start_ns") or t0_ns) + t, v)
                for t, v in zip(s.get("t_ms", []), s.get("latency_max_ms", [])) if v], **common))
            for i, f in enumerate(applied):
                # Each fault is judged on the I/O that completed before the next one.
                nxt = applied[i + 1].applied_ns if i + 1 < len(applied) else end_ns
                window = {**r, "rows": [row for row in r.get("rows", []) if row[2] < nxt]}
                uncertainty = int(float(f.detail.get("uncertainty_ms") or 0.0) * 1e6)
                m = parse(window, f.applied_ns, floor_ms=floor, uncertainty_ns=uncertainty)
                if m.get("fault_stall_ms") is not None:
                    out.metrics.append(self.metric("longest_stall_ms", m["fault_stall_ms"], fault=f.name,
                                                   **common))
                    out.metrics.append(self.metric("late_stall_ms", m["late_stall_ms"], fault=f.name,
                                                   **common))
                if m.get("failover_ms") is not None:
                    out.metrics.append(self.metric("failover_ms", m["failover_ms"], fault=f.name, **common))
        return out
