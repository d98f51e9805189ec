"""`vclab run`: for each mechanism x repetition, build, converge, start the workloads, apply the
faults on schedule, collect, tear down, and store the repetition in one transaction.

A repetition that fails is stored as failed with its reason and the run goes on. Ctrl-C or
SIGTERM ends the repetition in flight (its lab removes everything it built) and keeps every
finished one; `--resume` continues the run where it stopped."""

from __future__ import annotations

import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from vclab.errors import VclabError
from vclab.experiments.cabling import PlanCabling
from vclab.experiments.faults import apply as apply_fault, crash_victims, expand_schedule, kill_now, run_commands, sink_commands, sink_name
from vclab.experiments.loader import LoadedExperiment, cluster_for
from vclab.experiments.spec import MechanismChoice
from vclab.experiments.scale import (STOLEN, STOLEN_LIMIT, capacity_problem, choose_scale, fastest_rate, full_rate_flows,
                                     scale_cluster, scale_experiment, scale_text, source_uplinks, held_back_by,
                                     to_nominal, worst_loaded)
from vclab.lab.capacity import LinkCounters, StolenCpu
from vclab.lab.face import LabFace
from vclab.lab.signals import interrupts
from vclab.workloads.adapter import Adapter
from vclab.workloads.registry import adapter_for
from vclab.results.model import RAN_AGAIN, WORKLOAD_FAILED, Event, FaultRecord, Metric, Raw, RepetitionResult
from vclab.results.store import ResultStore

MIGRATION_WAIT_S = 300.0
# `vclab run` with neither --repetitions nor --budget: sized for the main job (scripts/main.sh,
# at most 12 min on a 2-core machine, where a round of the default experiment's 4 mechanisms
# takes about 3 min): rounds start while one more fits in 10 min (3 rounds: the least that gives
# a verdict an interval), leaving time for the install and the report.
DEFAULT_BUDGET_S = 10 * 60.0
MAX_ROUNDS = 100
# A repetition the hypervisor spoiled (scale.STOLEN_LIMIT) runs again, up to this many times
# and, with a budget, while another attempt and the rest of the least rounds fit in it; the
# last attempt is kept, and the report flags it if it was spoiled too. Steal comes in episodes
# of 1-25 s at random times (the host's other guests): three fresh-clone main jobs on
# 2026-12-07 had 1, 3 and 4 spoiled attempts.
STOLEN_RETRIES = 2
# ...and may take the least rounds this far past the budget: with the main job's 10 minutes
# three rounds leave less than one repetition's slack, and its wall time (at most 12 min with
# the install) still holds. Measured: sdn repetition 1 spoiled at 22 % and not run again for
# lack of slack made sdn's switch-failure outages 21-25 ms against 5-10 in its other rounds.
STOLEN_OVERRUN = 0.15


def dead_processes(tracked) -> list[str]:
    """Tracked processes that should be running and are not: the repetition measured a
    fabric without its controller, or storage without its target."""
    from vclab.lab.procs import MUST_LIVE, alive

    return [f"{t.label} (pid {t.pid})" for t in tracked
            if t.role in MUST_LIVE and not alive(t.pid, t.started)]

Progress = Callable[[str, int, str], None]  # (mechanism label, repetition, phase)


def shard_units(mechanisms: list[MechanismChoice], repetitions: int,
                shard: tuple[int, int] = (1, 1)) -> list[tuple[MechanismChoice, int]]:
    """The (mechanism, repetition) pairs shard i of n runs: every n-th, from the i-th, so each
    shard gets a share of every mechanism when repetitions outnumber shards."""
    units = [(c, i) for i in range(1, repetitions + 1) for c in mechanisms]
    return units[shard[0] - 1::shard[1]]


def _sleep_until(t_ns: int) -> None:
    while True:
        left = (t_ns - time.time_ns()) / 1e9
        if left <= 0:
            return
        time.sleep(min(left, 0.05) if left > 0.002 else 0)


@dataclass
class RunSummary:
    run_id: int
    results: Path
    ok: int
    failed: int
    interrupted: bool
    seconds: float
    partial: int = 0
    rounds: int = 0
    stopped_because: str = ""  # budget mode: "every verdict is clear" or "the budget is spent"


class Runner:
    def __init__(self, loaded: LoadedExperiment, results: Path, *, resume: bool = False,
                 repetitions: int | None = None, progress: Progress | None = None,
                 lab_prefix: str | None = None, shard: tuple[int, int] = (1, 1),
                 budget_s: float | None = None, scale: int | Literal["auto"] = 1,
                 lab_factory: Callable[..., LabFace] | None = None) -> None:
        self.loaded = loaded
        # What builds each repetition's lab (vclab.lab.lab.Lab); a test gives a fake one.
        self.lab_factory = lab_factory
        self.experiment = loaded.experiment
        self.results = Path(results)
        self.resume = resume
        self.repetitions = repetitions or self.experiment.repetitions
        # With a budget, the file's repetitions are the least number of rounds; more rounds
        # follow while a verdict is unclear and another round fits in the budget.
        self.budget_s = budget_s if shard == (1, 1) else None
        self.progress = progress or (lambda m, i, phase: None)
        self.lab_prefix = lab_prefix
        self.sink = sink_name(lab_prefix or "vc")
        self.shard = shard  # (i, n): this machine runs every n-th (mechanism, repetition), from the i-th
        # Time scale 1/k (experiments/scale.py); "auto" (vclab run's default) measures this
        # machine's capacity (a small lab build, cached for a day) and chooses k from it.
        self.scale: int | None = None if scale == "auto" else scale
        self.scaled = self.experiment
        self._started = time.monotonic()

    # ---- the run ----
    def run(self) -> RunSummary:
        # Ctrl-C and SIGTERM stop the run from its first probe on (lab/signals.py).
        with interrupts.interruptible():
            return self._run()

    def _run(self) -> RunSummary:
        from vclab.doctor import probe_all
        from vclab.results.environment import host_info, software_versions

        started = self._started = time.monotonic()
        self.results.mkdir(parents=True, exist_ok=True)
        store = ResultStore(self.results)
        done: set[tuple[str, int]] = set()
        info = store.resumable_run(self.experiment.experiment) if self.resume else None
        if info is not None:
            run_id = info.id
            store.resume_run(run_id)
            self.scale = info.settings.get("scale") or 1  # a resumed run keeps its scale
            done = store.completed(run_id)
            if self.budget_s is not None and info.settings.get("repetitions") is not None \
                    and info.settings.get("budget_s") is None:
                self.budget_s = None  # the run began with a fixed count: it keeps it
        else:
            caps = [c.as_dict() for c in probe_all()]
            fidelity = self._choose_scale()
            run_id = store.start_run(
                self.experiment.experiment, self.loaded.text, self.loaded.cluster_text,
                software=software_versions(), capabilities=caps, host=host_info(),
                settings={"repetitions": None if self.budget_s is not None else self.repetitions,
                          "budget_s": self.budget_s,
                          "min_repetitions": self.repetitions if self.budget_s is not None else None,
                          "shard": f"{self.shard[0]}/{self.shard[1]}", **self._ha_settings(),
                          # the switch ports' type asked for (lab.Lab._choose_ports)
                          "ports": os.environ.get("VCLAB_PORTS", "system"),
                          **fidelity})
        self.scaled = scale_experiment(self.experiment, self.scale or 1)
        summary = RunSummary(run_id, self.results, 0, 0, False, 0.0)
        try:
            if self.budget_s is None:
                for choice, index in shard_units(self.experiment.mechanisms, self.repetitions, self.shard):
                    if (choice.label, index) not in done:
                        self._one(store, run_id, choice, index, summary)
                summary.rounds = self.repetitions
            else:
                self._rounds(store, run_id, done, started, summary)
            store.finish_run(run_id, "finished")
        except (KeyboardInterrupt, SystemExit):
            summary.interrupted = True
            store.finish_run(run_id, "interrupted")
        finally:
            store.close()
        summary.seconds = time.monotonic() - started
        return summary

    def _one(self, store: ResultStore, run_id: int, choice: MechanismChoice, index: int,
             summary: RunSummary, left_after: int = 0) -> None:
        """Run and store one repetition. `left_after`: how many repetitions the least number
        of rounds still needs after this one (with a budget, a spoiled attempt runs again only
        if those still fit in it)."""
        spoiled: list[float] = []  # each earlier attempt's worst second of steal
        while True:
            t = time.monotonic()
            rep = self.repetition(choice, index)
            stolen = next((m.value for m in rep.metrics if m.name == STOLEN), None)
            # With a budget, another attempt and the repetitions the least rounds still need
            # must fit in what is left of it (the main job's wall time is bounded); otherwise
            # the spoiled one is kept, and flagged.
            took = time.monotonic() - t
            fits = self.budget_s is None or time.monotonic() - self._started \
                + took * (1 + left_after) <= self.budget_s * (1 + STOLEN_OVERRUN)
            if rep.status != "ok" or stolen is None or stolen < STOLEN_LIMIT \
                    or len(spoiled) == STOLEN_RETRIES or not fits:
                break
            spoiled.append(stolen)
            self.progress("", index, f"{choice.label} repetition {index}: the hypervisor took "
                                     f"{stolen:.0%} of this machine's CPU in one second (steal "
                                     f"time): running it again")
        if spoiled:
            rep.reason += ("ran again: the hypervisor took " + ", ".join(f"{x:.0%}" for x in spoiled)
                           + " of the CPU in one second of the attempt(s) before; ")
            rep.events.append(Event("host", 0.0, RAN_AGAIN, {"steal_shares": spoiled}))
        store.record_repetition(run_id, rep)
        summary.ok += rep.status == "ok"
        summary.partial += rep.status == "partial"
        summary.failed += rep.status == "failed"

    def _rounds(self, store: ResultStore, run_id: int, done: set[tuple[str, int]], started: float,
                summary: RunSummary) -> None:
        """Round after round (every mechanism once per round, interleaved so a round's pairs
        share the machine's load) until every verdict is clear or the next round would not
        fit in the budget."""
        from vclab.results.compare import compare

        spent: list[float] = []  # seconds of each round that ran something in this invocation
        for index in range(1, MAX_ROUNDS + 1):
            t = time.monotonic()
            todo = [c for c in self.experiment.mechanisms if (c.label, index) not in done]
            later = max(0, self.repetitions - index) * len(self.experiment.mechanisms)
            for j, choice in enumerate(todo):
                self._one(store, run_id, choice, index, summary, left_after=len(todo) - j - 1 + later)
            if todo:
                spent.append(time.monotonic() - t)
            summary.rounds = index
            if index < self.repetitions:
                continue
            counts = compare(store, run_id).counts()
            elapsed = time.monotonic() - started
            left = self.budget_s - elapsed
            self.progress("", index, f"round {index}: {counts['clear']} of {counts['rows']} verdicts "
                                     f"clear; {max(0.0, left) / 60:.1f} min of the budget left")
            if counts["rows"] == 0:  # one mechanism, or nothing measured twice: no contest
                summary.stopped_because = "no verdict to wait for"
                return
            if counts["clear"] == counts["rows"]:
                summary.stopped_because = "every verdict is clear"
                return
            per_round = sum(spent) / len(spent) if spent else 0.0
            if elapsed + per_round > self.budget_s:
                summary.stopped_because = "the budget is spent"
                return
        summary.stopped_because = f"{MAX_ROUNDS} rounds"

    def _choose_scale(self) -> dict:
        """Measure (or read the cached) per-path capacity and choose the scale; the settings
        that record both with the run."""
        from vclab.lab.capacity import capacity

        fastest = fastest_rate(self.loaded.cluster)
        cap = capacity() if self.scale is None else None
        if self.scale is None:
            self.scale = choose_scale(fastest, cap["rate_bps"])
        out = {"scale": self.scale, "scale_chosen": "auto" if cap else "--scale",
               "fastest_cable_bps": fastest}
        if cap:
            out.update(capacity_bps=cap["rate_bps"], capacity_measured_at=cap["measured_at"],
                       capacity_load=cap["load"], capacity_method=cap["method"],
                       capacity_ports=cap.get("ports", "system"))
            problem = capacity_problem(fastest, cap["rate_bps"], self.scale)
            if problem:
                out["capacity_problem"] = problem
        self.progress("", 0, f"scale {scale_text(self.scale)}: fastest cable "
                             f"{fastest / 1e9:g} Gbit/s runs at {fastest / self.scale / 1e9:g} Gbit/s"
                      + (f" (this machine forwards {cap['rate_bps'] / 1e9:.2f} Gbit/s per path)" if cap else ""))
        return out

    def _ha_settings(self) -> dict:
        settings: dict = {}
        for i, w in enumerate(self.experiment.workloads):
            if (a := adapter_for(w, i)) is not None:
                settings = {**a.settings(), **settings}  # the first workload of a kind decides
        return settings

    # ---- one repetition ----
    def repetition(self, choice: MechanismChoice, index: int) -> RepetitionResult:
        from vclab.lab.procs import ProcessTracker

        if self.lab_factory is None:
            from vclab.lab.lab import Lab  # Mininet is imported only when a lab is built

            self.lab_factory = Lab
        e = self.scaled
        k = self.scale or 1
        label = choice.label
        rep = RepetitionResult(mechanism=label, index=index, seed=e.seed + index)
        cluster = scale_cluster(cluster_for(self.loaded.cluster, choice), k)
        schedule = expand_schedule(e, cluster)
        duration_ms = max(e.duration, max((f.at for f in schedule), default=0) + e.settle)
        workdir = self.results / "work" / f"{label}-{index}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        adapters = [a for i, w in enumerate(e.workloads) if (a := adapter_for(w, i)) is not None]
        skipped = [w.kind for w in e.workloads if adapter_for(w, 0) is None]
        rep.started_ns = time.time_ns()
        executor = None  # the lab's: every fault command runs where the lab says
        try:
            self.progress(label, index, "building")
            kwargs = {"prefix": self.lab_prefix} if self.lab_prefix else {}
            with self.lab_factory(cluster, mechanism=choice.mechanism(),
                                  run_id=f"run-{os.getpid()}-{label}-{index}",
                                  workdir=workdir, **kwargs) as lab:
                tracker: ProcessTracker = lab.tracker
                executor = lab.executor
                cabling = PlanCabling(lab=lab)
                if any(f.action == "silent" for f in schedule):
                    run_commands(sink_commands(self.sink), executor=executor)
                self.progress(label, index, "starting workloads")
                running: list[tuple[Adapter, object]] = []
                deferred: list[tuple[Adapter, object]] = []
                for a in adapters:
                    w = a.make(lab, tracker, workdir, duration_s=duration_ms / 1e3)
                    w.check()
                    (deferred if a.start_at_ms is not None else running).append((a, w))
                for a, w in running + deferred:
                    a.connect(w, running + deferred)
                for a, w in running + deferred:
                    a.prepare(w)
                counters = LinkCounters(lab.plan, wired=getattr(lab, "ports", "system") == "afxdp")
                counters.start()
                stolen = StolenCpu()
                stolen.start()
                try:
                    for a, w in running:
                        w.start()
                    time.sleep(e.warmup / 1e3)
                    t0 = time.time_ns()
                    measured_from = time.monotonic()  # the steal that counts: from here on
                    rep.started_ns = t0
                    self.progress(label, index, "faults")
                    self._drive(schedule, deferred, running, cabling, t0, duration_ms, rep,
                                controller=lab.controller_action, crash=host_crasher(lab, tracker),
                                executor=executor)
                    dead = dead_processes(tracker.tracked)
                    if dead:
                        rep.status = "failed"
                        rep.reason += f"died during the run: {', '.join(dead)}; "
                    self.progress(label, index, "collecting")
                finally:
                    counters.stop()
                    stolen.stop()
                    # ...and a scheduled one whose time never came: what it readied goes.
                    for a, w in running + [d for d in deferred if d not in running]:
                        w.stop()
                flows = {h: to for h, to in full_rate_flows(e.workloads, cluster).items()
                         if h in cluster.hypervisors}
                rep.metrics += link_fidelity(
                    counters, rep, k, {h: lab.plan.bridge(h).name for h in flows},
                    destinations={lab.plan.bridge(h).name: to for h, to in flows.items()},
                    switches={lab.plan.bridge(s).name for s in cluster.switches})
                if (worst := stolen.worst(since=measured_from)) is not None:
                    rep.metrics.append(Metric(workload="host", kind="fidelity", traffic_class="",
                                              name=STOLEN, value=worst, unit=""))
                end_ns = rep.finished_ns or time.time_ns()
                for a, w in running:
                    try:
                        outcome = a.outcome(w.collect(), t0, end_ns, rep.faults)
                    except Exception as err:  # one workload's bad output must not lose the others
                        # ...nor count as a measurement: the repetition is partial, and this
                        # workload's rows leave it out.
                        rep.reason += f"{a.name}: {type(err).__name__}: {err}; "
                        if rep.status == "ok":
                            rep.status = "partial"
                        rep.events.append(Event(a.name, (end_ns - t0) / 1e6, WORKLOAD_FAILED, {
                            "workload": a.name, "kind": a.kind, "traffic_class": a.traffic_class,
                            "error": f"{type(err).__name__}: {err}"}))
                        continue
                    if k != 1:  # rates back to nominal; times are scale-free
                        for m in outcome.metrics:
                            m.value = to_nominal(m.kind, m.name, m.value, k)
                        for s in outcome.series:
                            s.points = [(t, to_nominal(s.kind, s.name, v, k)) for t, v in s.points]
                    rep.series += outcome.series
                    rep.metrics += outcome.metrics
                    rep.events += outcome.events
                    rep.raw += outcome.raw
                # What the fabric's controller did and when, beside the faults (sdn only).
                rep.events += [Event("controller", (e["t_ns"] - t0) / 1e6, e["kind"], e["detail"])
                               for e in lab.controller_events()
                               if t0 <= e["t_ns"] <= end_ns]
                if skipped:
                    rep.reason += f"not yet supported, skipped: {', '.join(skipped)}; "
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # recorded as failed with its reason; the run goes on
            rep.status = "failed"
            rep.reason += f"{type(err).__name__}: {err}"
            (workdir / "error.txt").write_text(traceback.format_exc())
        finally:
            run_commands([["ip", "link", "del", self.sink]], check=False, executor=executor)
        rep.finished_ns = time.time_ns()
        self.progress(label, index, rep.status)
        return rep

    def _drive(self, schedule, deferred, running, cabling, t0, duration_ms, rep,
               controller=None, crash=None, executor=None) -> None:
        """Apply each fault (and start each deferred workload) at its time; wait out the run;
        mend whatever is still broken so the workloads end on a whole fabric."""
        timeline = sorted([(f.at, 0, f) for f in schedule] +
                          [(a.start_at_ms, 1, (a, w)) for a, w in deferred], key=lambda x: x[:2])
        broken: dict[str, tuple[FaultRecord, list[list[str]]]] = {}
        try:
            for at, is_start, item in timeline:
                _sleep_until(t0 + int(at * 1e6))
                if is_start:
                    item[1].start()
                    running.append(item)
                    continue
                applied, undo = apply_fault(item, cabling, t0, controller=controller, sink=self.sink,
                                            crash=crash, executor=executor)
                self.progress(rep.mechanism, rep.index, f"fault: {applied.name}")
                record = FaultRecord(
                    name=f"{applied.name}@{at / 1e3:g}s", kind=applied.kind, target=applied.target,
                    action=applied.action, scheduled_ms=at, applied_ns=applied.applied_ns,
                    applied_ms=applied.applied_ms,
                    detail={**applied.detail, "uncertainty_ms": applied.uncertainty_ms})
                if applied.target in broken and not undo:  # an up/recover/restore/rejoin
                    broken.pop(applied.target)[0].undone_ms = applied.applied_ms
                elif undo:
                    broken[applied.target] = (record, undo)
                rep.faults.append(record)
                for a, w in running:
                    a.on_fault(w, record)
            _sleep_until(t0 + int(duration_ms * 1e6))
            # A workload that must end by itself (a migration that started) is waited for, up
            # to MIGRATION_WAIT_S.
            for a, w in running:
                a.finish(w, timeout=max(duration_ms / 1e3, MIGRATION_WAIT_S))
            rep.finished_ns = time.time_ns()
        finally:
            for record, undo in reversed(list(broken.values())):
                run_commands(undo, check=False, executor=executor)
                record.undone_ms = (time.time_ns() - t0) / 1e6


def link_fidelity(counters, rep: RepetitionResult, k: int, sources: dict[str, str],
                  destinations: dict[str, set[str]] | None = None,
                  switches: set[str] | None = None) -> list[Metric]:
    """The repetition's links against their (scaled) rates: every cable end's busiest 0.3 s
    goes to Raw fidelity.json. The uplinks of the hypervisors that start full-rate flows
    (`sources`: hypervisor -> virtual switch; `destinations`: virtual switch -> where its
    flows go) must reach the cable's rate, or a later cable on the flow's way must have
    (scale.held_back_by: then that cable's ratio counts, and fidelity.json names it); the
    worst of them (or, with no such flow, the worst link busier than half its rate) is the
    metric `link_achieved_ratio`: below KEPT_UP the report flags the repetition (the
    emulator, not the design, limited it)."""
    import json

    links = counters.links()
    judged = source_uplinks(links, sources)
    held = {x.end: by for x in judged if (by := held_back_by(
        x, links, switches or set(), (destinations or {}).get(x.bridge, set()))) is not None}
    rep.raw.append(Raw("fabric", json.dumps({
        "scale": k, "sources": sources, "uncertain_readings": counters.uncertain,
        "links": [{"link": x.link, "end": x.end, "bridge": x.bridge, "nominal_bps": x.nominal_bps * k,
                   "peak_bps": x.peak_bps * k, "ratio": x.ratio, "loaded": x.loaded,
                   "judged": x in judged,
                   **({"held_back_by": f"{held[x.end].link} ({held[x.end].end})"}
                      if x in judged and x.end in held else {})} for x in links]}),
        "fidelity.json"))
    ratios = [held[x.end].ratio if x.end in held else x.ratio for x in judged]
    if not ratios:
        worst = worst_loaded(links)
        ratios = [worst.ratio] if worst is not None else []
    if not ratios:
        return []
    return [Metric(workload="fabric", kind="fidelity", traffic_class="", name="link_achieved_ratio",
                   value=min(ratios), unit="")]


def host_crasher(lab, tracker) -> Callable[[str], list[str]]:
    """What a host crash does to processes: SIGKILL every one vclab started in the host and in
    the VMs it runs (not the namespaces' shells: the lab tears them down)."""
    def crash(host: str) -> list[str]:
        hosts = [host] + [vm for vm, spec in lab.cluster.vms.items() if spec.host == host]
        spare = {lab.node(h).pid for h in hosts}
        victims = crash_victims(tracker.tracked, hosts, spare)
        return kill_now(victims)
    return crash
