"""The runner against a fake lab: no root, no Mininet. The lab's face is what the runner uses
(plan, cluster, tracker, node, executor, controller_action); the fake records every command
the faults send through the executor, so the schedule's effect is checked command by command."""

from __future__ import annotations

from pathlib import Path

from vclab.experiments.loader import load_experiment
from vclab.experiments.runner import Runner
from vclab.lab.procs import ProcessTracker
from vclab.results.store import ResultStore
from vclab.topology.commands import LinkState, Tc
from vclab.topology.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]


class RecordingExecutor:
    def __init__(self):
        self.ran: list[list[str]] = []

    def run(self, args, check=True, stdin=None, server=None) -> str:
        self.ran.append(args)
        return ""


class FakeLab:
    built: list["FakeLab"] = []

    def __init__(self, cluster, mechanism=None, run_id="fake", workdir=None, prefix="vcf"):
        self.cluster, self.mechanism, self.workdir = cluster, mechanism, workdir
        self.plan = build_plan(cluster, prefix)
        self.tracker = ProcessTracker(run_id, state_dir=Path(workdir) / "state")
        self.executor = RecordingExecutor()
        self.actions: list[str] = []
        self.stopped = False
        FakeLab.built.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stopped = True

    def node(self, name):
        raise AssertionError("no workload here asks for a node")

    def controller_action(self, what):
        self.actions.append(what)

    def controller_events(self):
        return []

    def vm_will_move(self, vm, to):
        pass


def fake_run(tmp_path, monkeypatch, duration: str, faults: str = "", budget_s=None):
    """One rstp repetition of a short experiment on the fake lab; `faults`: its YAML lines."""
    monkeypatch.setattr("vclab.doctor.probe_all", lambda: [])
    monkeypatch.setattr("vclab.results.environment.software_versions", lambda: {})
    monkeypatch.setattr("vclab.lab.capacity.capacity", lambda: {
        "rate_bps": 5e9, "measured_at": 0, "load": 0.0, "method": "test"})
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"""experiment: fake
topology: {ROOT / 'topologies' / 'default.yaml'}
mechanisms: [rstp]
repetitions: 1
warmup: 10ms
duration: {duration}
{faults}""")
    FakeLab.built.clear()
    return Runner(load_experiment(exp), tmp_path / "res", repetitions=1, lab_prefix="vcf",
                  lab_factory=FakeLab, budget_s=budget_s).run()


def test_a_repetition_applies_and_mends_its_faults_through_the_lab(tmp_path, monkeypatch):
    summary = fake_run(tmp_path, monkeypatch, "300ms", """faults:
  - {at: 50ms, link: esx1.vmnic0, action: down}
  - {at: 150ms, link: esx1.vmnic0, action: up}
  - {at: 200ms, link: tor-a/tor-b#1, action: silent}
""")
    assert (summary.ok, summary.failed, summary.interrupted) == (1, 0, False)
    lab, = FakeLab.built
    assert lab.stopped
    ran = lab.executor.ran
    nic = {c.dev for c in ran if isinstance(c, LinkState)}
    ends = set(next((v.a.ifname, v.b.ifname) for v in lab.plan.cables() if v.name == "esx1.vmnic0"))
    assert nic == ends  # the cable's ends, by ioctl-able LinkState
    states = [(c.dev, c.up) for c in ran if isinstance(c, LinkState)]
    # one veth pair on one machine: closing one end takes both carriers; the repair raises both
    assert [up for _, up in states] == [False, True, True]
    # the silent fault: the sink first, then tc on both ends, mended at the end, sink removed
    assert ran[0] == ["ip", "link", "add", "vcfsink0", "type", "ifb"]
    silent = [c for c in ran if isinstance(c, Tc)]
    isl = set(next((v.a.ifname, v.b.ifname) for v in lab.plan.cables() if v.name == "tor-a/tor-b#1"))
    assert [c[2] for c in silent] == ["replace"] * 4 + ["del"] * 2
    assert {c.dev for c in silent} == isl
    assert ran[-1] == ["ip", "link", "del", "vcfsink0"]
    with ResultStore(tmp_path / "res", create=False) as store:
        run = store.runs()[-1]
        rep, = store.repetitions(run.id)
        assert [f.name for f in store.faults(rep.id)] == [
            "link esx1.vmnic0 down@0.05s", "link esx1.vmnic0 up@0.15s", "link tor-a/tor-b#1 silent@0.2s"]


def steal_readings(*shares):
    """lab.capacity.StolenCpu as it would have measured: one worst-second share per attempt."""
    left = iter(shares)

    class Steal:
        def start(self):
            pass

        def stop(self):
            pass

        def worst(self, since=None):
            return next(left)

    return Steal


def run_with_steal(tmp_path, monkeypatch, shares, budget_s):
    """fake_run with the steal readings given."""
    from vclab.experiments import runner as runner_mod

    monkeypatch.setattr(runner_mod, "StolenCpu", steal_readings(*shares))
    return fake_run(tmp_path, monkeypatch, "100ms", budget_s=budget_s)


def test_a_repetition_the_hypervisor_spoiled_runs_again(tmp_path, monkeypatch):
    """Steal time at or above the limit in some second: the same repetition runs again, the
    kept attempt says so (reason, event), and its steal is stored as a fidelity metric."""
    from vclab.results.model import RAN_AGAIN

    summary = run_with_steal(tmp_path, monkeypatch, (0.45, 0.02), budget_s=None)
    assert (summary.ok, summary.failed) == (1, 0)
    assert len(FakeLab.built) == 2  # built twice: the spoiled attempt and the kept one
    with ResultStore(tmp_path / "res", create=False) as store:
        rep, = store.repetitions(store.runs()[-1].id)
        assert "hypervisor took 45%" in rep.reason
        assert [e.detail["steal_shares"] for e in store.events(rep.id, kind=RAN_AGAIN)] == [[0.45]]
        steal = [m.value for m in store.metric_rows(rep.run_id) if m.name == "host_steal_share"]
        assert steal == [0.02]


def test_a_spoiled_repetition_is_kept_when_no_attempt_fits_in_the_budget(tmp_path, monkeypatch):
    summary = run_with_steal(tmp_path, monkeypatch, (0.5, 0.5, 0.5), budget_s=0.001)
    assert summary.ok == 1 and len(FakeLab.built) == 1  # no second attempt: the budget is spent
    with ResultStore(tmp_path / "res", create=False) as store:
        steal = [m.value for m in store.metric_rows(store.runs()[-1].id) if m.name == "host_steal_share"]
        assert steal == [0.5]  # kept, so the report can flag it
