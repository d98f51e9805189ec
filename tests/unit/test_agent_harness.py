"""The agent harness (vclab.lab.agent, workloads through vclab.workloads.agent): spawn, the ready
handshake, drain-then-kill, stderr kept (real processes)."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

from vclab.lab.procs import ProcessTracker, alive
from vclab.workloads.agent import Agent, parse_event
from vclab.workloads.base import WorkloadError

HERE = SimpleNamespace(name="here", popen=subprocess.Popen)  # the root namespace as a node


def test_one_line_protocol_short_and_json_forms():
    assert parse_event(b"ready 1733000000000000000\n").t_ns == 1733000000000000000
    assert parse_event("ready").event == "ready" and parse_event("ready").t_ns is None
    ev = parse_event('{"t": 5, "event": "acquired", "vm": "web1"}')
    assert (ev.event, ev.t_ns, ev.fields) == ("acquired", 5, {"vm": "web1"})
    assert parse_event("Traceback (most recent call last):") is None
    assert parse_event("") is None


def agent(tmp_path, code: str, **kw) -> Agent:
    tracker = ProcessTracker(run_id="harness", state_dir=tmp_path)
    return Agent(HERE, [sys.executable, "-c", code], tracker, "test-agent", **kw).spawn()


def test_ready_then_drain_on_sigterm(tmp_path):
    out = tmp_path / "records"
    a = agent(tmp_path, f"""
import signal, sys, time
def done(*_):
    open({str(out)!r}, "w").write("drained"); sys.exit(0)
signal.signal(signal.SIGTERM, done)
print("ready", time.time_ns(), flush=True)
time.sleep(30)
""")
    assert a.ready(10) > 0
    pid = a.pid
    a.stop(drain_s=5)
    assert out.read_text() == "drained"  # it was asked, and had the time to write
    assert not alive(pid, None) and a.tracker.tracked == [] and a.proc is None


def test_no_ready_line_fails_with_its_stderr_and_leaves_nothing(tmp_path):
    a = agent(tmp_path, "import sys; sys.stderr.write('cannot bind 10.0.0.1'); sys.exit(3)")
    with pytest.raises(WorkloadError, match="cannot bind 10.0.0.1"):
        a.ready(10)
    assert a.tracker.tracked == [] and "cannot bind" in a.stderr


def test_a_hung_agent_is_killed_after_the_drain(tmp_path):
    a = agent(tmp_path, """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
""")
    assert a.ready(10) is None
    pid = a.pid
    a.stop(drain_s=0.2, grace=0.2)
    assert not alive(pid, None) and a.tracker.tracked == []


def test_a_process_of_this_machine_appends_its_stdout_and_stderr_across_restarts(tmp_path):
    """The controller's way: no handshake, one log for both streams, kept over a restart;
    a failure outside a workload is the harness's own AgentError."""
    from vclab.lab.agent import STDOUT, THIS_MACHINE, AgentError
    from vclab.lab.agent import Agent as LabAgent

    tracker = ProcessTracker(run_id="harness", state_dir=tmp_path)
    log = tmp_path / "controller.stderr"
    for run in ("first", "second"):
        a = LabAgent(THIS_MACHINE, [sys.executable, "-c",
                                    f"import sys; print('out {run}', flush=True); "
                                    f"sys.stderr.write('err {run}\\n')"],
                     tracker, "test-controller", stderr=log, stdout=STDOUT, append=True).spawn()
        a.proc.wait(timeout=10)
        assert not a.running()
        a.stop(drain_s=0)
    assert log.read_text().split("\n")[:4] == ["out first", "err first", "out second", "err second"]
    assert "err second" in a.stderr and tracker.tracked == []
    quiet = LabAgent(THIS_MACHINE, [sys.executable, "-c", "pass"], tracker, "quiet").spawn()
    with pytest.raises(AgentError, match="quiet did not say 'ready'") as e:
        quiet.ready(10)
    assert not isinstance(e.value, WorkloadError) and tracker.tracked == []
