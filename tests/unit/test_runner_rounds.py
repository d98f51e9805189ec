"""The repetition loop (no lab: each repetition's numbers are made up, which is all the loop
looks at): rounds interleave the mechanisms, stop once every verdict is clear or the next round
would overrun the budget, a fixed count stays fixed, and --resume goes on where it stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from vclab.experiments import runner as runner_mod
from vclab.experiments.loader import load_experiment
from vclab.experiments.runner import Runner
from vclab.results.model import Metric, RepetitionResult
from vclab.results.store import ResultStore

EXPERIMENT = Path(__file__).parents[2] / "experiments" / "default.yaml"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Synthetic(Runner):
    """Each repetition 'takes' 45 s of a fake clock and reports an outage per mechanism."""

    def __init__(self, *a, outage=None, clock=None, stop_after=None, **kw):
        super().__init__(*a, **kw)
        self.outage, self.clock, self.ran, self.stop_after = outage, clock, [], stop_after

    def repetition(self, choice, index):
        if self.stop_after is not None and len(self.ran) == self.stop_after:
            raise KeyboardInterrupt
        self.ran.append((choice.label, index))
        self.clock.t += 45.0
        return RepetitionResult(choice.label, index, index, metrics=[
            Metric("probe", "probe", "vmotion", "outage_ms", self.outage(choice.label, index), fault="f")])


@pytest.fixture
def env(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(runner_mod.time, "monotonic", clock)
    monkeypatch.setattr("vclab.doctor.probe_all", lambda: [])
    monkeypatch.setattr("vclab.results.environment.software_versions", lambda: {})
    return load_experiment(EXPERIMENT), clock


def distinct(label, index):
    return {"sdn": 8.0, "rstp": 15.0, "stp": 10_500.0}.get(label, 3.0) + index % 2


def noisy(label, index):
    return [5, 40, 9, 30, 2, 25, 11, 8, 17][(index * 3 + len(label)) % 9]


def test_rounds_until_every_verdict_is_clear(tmp_path, env):
    loaded, clock = env
    r = Synthetic(loaded, tmp_path, budget_s=3600, outage=distinct, clock=clock)
    s = r.run()
    labels = [m.label for m in loaded.experiment.mechanisms]
    assert r.ran[:8] == [(m, i) for i in (1, 2) for m in labels]  # interleaved, round by round
    assert s.rounds == 3 and s.stopped_because == "every verdict is clear"  # 3: the interval's least n
    assert s.ok == 12


def test_the_budget_stops_rounds_that_would_not_fit(tmp_path, env):
    loaded, clock = env
    s = Synthetic(loaded, tmp_path, budget_s=9 * 60, outage=noisy, clock=clock).run()
    # a round is 4 x 45 s = 3 min: after 2 rounds (6 min) a third fits in 9, a fourth does not
    assert s.rounds == 3 and s.stopped_because == "the budget is spent"


def test_a_fixed_count_stays_fixed(tmp_path, env):
    loaded, clock = env
    r = Synthetic(loaded, tmp_path, repetitions=1, outage=distinct, clock=clock)
    s = r.run()
    assert s.rounds == 1 and len(r.ran) == 4 and s.stopped_because == ""
    with ResultStore(tmp_path) as store:
        assert store.run().settings["repetitions"] == 1 and store.run().settings["budget_s"] is None


def test_resume_goes_on_with_the_rounds(tmp_path, env):
    loaded, clock = env
    first = Synthetic(loaded, tmp_path, budget_s=3600, outage=distinct, clock=clock, stop_after=6)
    assert first.run().interrupted
    again = Synthetic(loaded, tmp_path, budget_s=3600, outage=distinct, clock=clock, resume=True)
    s = again.run()
    assert again.ran[0] == ("stp", 2) and s.stopped_because == "every verdict is clear"
    with ResultStore(tmp_path) as store:
        assert len(store.runs()) == 1 and len(store.repetitions(1)) == 12


def test_budget_option_reads_minutes_seconds_and_hours():
    import typer

    from vclab.cli import _budget_seconds

    assert [_budget_seconds(x) for x in ("10m", "600s", "1h", "90", "2min")] == [600, 600, 3600, 90, 120]
    with pytest.raises(typer.BadParameter, match="--budget|10m"):
        _budget_seconds("soon")


def test_one_mechanism_has_no_verdict_to_wait_for(tmp_path, env):
    loaded, clock = env
    loaded.experiment = loaded.experiment.model_copy(update={"mechanisms": loaded.experiment.mechanisms[:1]})
    s = Synthetic(loaded, tmp_path, budget_s=3600, outage=distinct, clock=clock).run()
    assert s.rounds == loaded.experiment.repetitions and s.stopped_because == "no verdict to wait for"


def test_vclab_run_prints_progress_lines_to_a_log_and_ends_on_the_verdicts(tmp_path, env, monkeypatch):
    """stdout not a terminal (CI): a plain line per step, then the summary, the last three lines
    exactly as the issue names them."""
    from typer.testing import CliRunner

    from vclab.cli import app

    loaded, clock = env

    def repetition(self, choice, index):
        self.progress(choice.label, index, "building")
        clock.t += 45.0
        self.progress(choice.label, index, "ok")
        return RepetitionResult(choice.label, index, index, metrics=[
            Metric("probe", "probe", "vmotion", "outage_ms", distinct(choice.label, index),
                   fault="link esx1.vmnic0 down@6s"),
            Metric("probe", "probe", "vmotion", "noise_floor_ms", 0.5 * index)])

    monkeypatch.setattr(Runner, "repetition", repetition)
    result = CliRunner().invoke(app, ["run", str(EXPERIMENT), "--results", str(tmp_path),
                                      "--budget", "30m", "--no-report", "--scale", "1"])  # no calibration lab
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("uplink-and-switch-failure: 4 mechanisms (sdn, rstp, stp, rstp+balance-slb), "
                               "at least 3 rounds")
    assert "[00:00] sdn repetition 1: building" in lines
    assert any(line.startswith("[") and "round 3: 1 of 1 verdicts clear" in line for line in lines)
    assert any(line.startswith("12 repetitions ok, 0 failed, 0 partial in 3 rounds") and
               "stopped: every verdict is clear" in line for line in lines)
    # --no-report: no report line; the summary is the last three
    assert lines[-3:] == ["link esx1.vmnic0 down@6s vmotion outage clear   rstp+balance-slb by 5 ms over sdn",
                          "verdicts: 1 clear of 1 rows (1 wins, 0 ties, 0 unclear)",
                          "noise floor: p95 1.5 ms worst (network vmotion, mechanism sdn)"]
