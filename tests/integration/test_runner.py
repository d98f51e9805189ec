"""The runner for real: a cluster in Mininet/OVS, probes, a link failure on schedule, the store.

Root only. Uses the lab prefix `vcr` so it never collides with a cluster a user has up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vclab.experiments.loader import load_experiment
from vclab.experiments.runner import Runner
from vclab.results.store import ResultStore

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

EXPERIMENT = f"""
experiment: runner-test
topology: {ROOT / 'topologies/default.yaml'}
mechanisms: [rstp]
repetitions: 1
warmup: 1s
duration: 5s
workloads:
  - probe: {{from: esx1, to: array1, network: storage-b}}
  - probe: {{from: esx1, to: esx2, network: vmotion}}
faults:
  - {{at: 2s, link: tor-a/tor-b#1, action: down}}
  - {{at: 3500ms, link: tor-a/tor-b#1, action: up}}
"""


def leftovers(prefix: str, mark: Path | None = None) -> list[str]:
    """Bridges and links with the prefix, and processes whose command line names `mark`."""
    bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
    links = os.listdir("/sys/class/net")
    found = [n for n in bridges + links if n.startswith(prefix)]
    if mark is not None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(mark) in cmd and int(pid) != os.getpid() and "pytest" not in cmd:
                found.append(f"process {pid}: {cmd[:80]}")
    return found


def test_run_stores_faults_and_outages(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPERIMENT)
    summary = Runner(load_experiment(exp), tmp_path / "res", lab_prefix="vcr").run()
    assert (summary.ok, summary.failed, summary.interrupted) == (1, 0, False)
    assert leftovers("vcr", tmp_path / "res") == []
    with ResultStore(tmp_path / "res", create=False) as store:
        (rep,) = store.repetitions(summary.run_id)
        assert rep.status == "ok", rep.reason
        faults = store.faults(rep.id)
        assert [f.action for f in faults] == ["down", "up"]
        # applied on schedule: within 100 ms of the planned time, and the down was undone by the up
        assert abs(faults[0].applied_ms - 2000) < 100 and abs(faults[1].applied_ms - 3500) < 100
        assert faults[0].undone_ms == pytest.approx(faults[1].applied_ms)
        metrics = store.metrics(rep.id)
        by = {(m.workload, m.name, m.fault): m.value for m in metrics}
        storage = "probe esx1>array1 storage-b"
        # the storage-b path crosses the failed inter-switch link: RSTP's alternate port takes
        # over, so there is an outage, short but real, and it is over well before the link returns
        down = by[(storage, "outage_ms", faults[0].name)]
        assert 0 < down < 1400
        assert by[(storage, "noise_floor_ms", "")] >= 0
        assert store.series(rep.id, name="gap_ms")


def test_sigint_keeps_finished_repetitions_and_leaves_nothing(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPERIMENT.replace("repetitions: 1", "repetitions: 3")
                   .replace("duration: 5s", "duration: 4s"))
    code = ("import sys; from vclab.experiments.loader import load_experiment; "
            "from vclab.experiments.runner import Runner; "
            f"s = Runner(load_experiment({str(exp)!r}), {str(tmp_path / 'res')!r}, lab_prefix='vcr').run(); "
            "sys.exit(130 if s.interrupted else 0)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        # wait until one repetition is stored, then interrupt the second one mid-flight
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (tmp_path / "res" / "results.sqlite").exists():
                with ResultStore(tmp_path / "res", create=False) as store:
                    runs = store.runs()
                    if runs and store.repetitions(runs[-1].id):
                        break
            time.sleep(0.5)
        time.sleep(4)  # inside the second repetition: built, probing
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert leftovers("vcr", tmp_path / "res") == []
    with ResultStore(tmp_path / "res", create=False) as store:
        run = store.runs()[-1]
        assert run.status == "interrupted"
        reps = store.repetitions(run.id)
        assert len(reps) >= 1 and all(r.status == "ok" for r in reps)
    # --resume continues the same run with what is missing
    done_before = len(reps)
    summary = Runner(load_experiment(exp), tmp_path / "res", resume=True, lab_prefix="vcr",
                     repetitions=done_before + 1).run()
    assert summary.run_id == run.id and summary.ok == 1
    assert leftovers("vcr") == []
