"""Fault injection into vclab itself: the real `vclab run` is sent SIGINT or SIGKILL at a random
moment, again and again on the same results directory, and after each blow:

- SIGINT: the process ends by itself within a bound and leaves nothing: no `vcy*` bridge, OVS
  interface, link, namespace or qdisc, no process it started, no process record;
- SIGKILL: `vclab clean --prefix vcy` (the real CLI) removes everything the killed run left;
- either way the store opens, `PRAGMA integrity_check` says ok, every repetition it holds is
  whole (faults, series and metrics of both probes) and none recorded earlier was lost or
  changed; finally `vclab run --resume` finishes the rest and the count is right.

The moments are random but seeded: the seed is printed, `VCLAB_CHAOS_SEED=N` replays a run.
Processes: the test makes itself a child subreaper, so whatever vclab started (and whatever that
started) is re-parented to the test when vclab dies, never to init: "nothing left" is then
checked on the whole process tree, not only on what vclab recorded.

Root only. Lab prefix `vcy` and a state directory of its own, so other labs are never touched.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vclab.doctor import probe_owner
from vclab.results.store import ResultStore

PREFIX = "vcy"
VCLAB = str(Path(sys.executable).with_name("vclab"))
SIGINT_BOUND_S = 30.0  # a SIGINT'd run must be gone this long after the signal


def as_from_a_terminal() -> None:
    """The child's SIGINT as a terminal's Ctrl-C finds it (default). A suite started from a
    script's background job inherits SIGINT ignored; vclab takes the signal over from its first
    line (cli.main), but a blow in Python's own start-up, before that line, would be dropped,
    which no user at a terminal sees."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("ovs-vsctl") is None or subprocess.run(
        ["ovs-vsctl", "--timeout=3", "show"], capture_output=True).returncode != 0,
        reason="Open vSwitch is not running"),
    pytest.mark.skipif(not Path(VCLAB).exists(), reason=f"no {VCLAB}"),
]

CLUSTER = """
cluster: chaos
mechanism: rstp
networks:
  management: {vlan: 10, subnet: 10.10.0.0/24}
  vmotion:    {vlan: 20, subnet: 10.20.0.0/24}
  storage:    {vlan: 30, subnet: 10.30.0.0/24, kind: storage}
switches:
  tor-a: {priority: 4096}
  tor-b: {priority: 8192}
links:
  - {between: [tor-a, tor-b], cost: 2000}
  - {between: [tor-a, tor-b], cost: 4000}
hypervisors:
  esx1: &host
    nics: {vmnic0: tor-a, vmnic1: tor-b}
    team: {mode: active-backup}
    networks: [management, vmotion, storage]
  esx2: *host
"""

# One repetition is 6-8 s of wall time here (build + converge, 2.3 s of traffic, teardown).
EXPERIMENT = """
experiment: chaos
topology: cluster.yaml
mechanisms: [rstp]
repetitions: 1
warmup: 300ms
duration: 2s
workloads:
  - probe: {from: esx1, to: esx2, network: vmotion}
  - probe: {from: esx2, to: esx1, network: management}
faults:
  - {at: 700ms, link: tor-a/tor-b#1, action: down}
  - {at: 1400ms, link: tor-a/tor-b#1, action: up}
"""


@dataclass(frozen=True)
class Scenario:
    cluster: str
    experiment: str
    probes: tuple[str, ...]  # every stored repetition has their rtt series and outages
    faults: tuple[str, ...]  # ... and these faults, in this order
    series: tuple[tuple[str, str], ...] = ()  # (workload, series) every repetition must hold
    rep_s: float = 8.0       # one repetition's wall time here, roughly (loaded machine)
    mechanism: str = "rstp"


SMALL = Scenario(CLUSTER, EXPERIMENT, ("probe esx1>esx2 vmotion", "probe esx2>esx1 management"),
                 ("link tor-a/tor-b#1 down@0.7s", "link tor-a/tor-b#1 up@1.4s"))

# The default cluster (VMs made small so the vMotion is quick) with the sdn controller and every
# process kind a run starts: the controller (restarted mid-run), probe agents, heartbeat agents,
# a migration, tgtd and an iSCSI initiator, iperf3. ~20 s a repetition here.
FULL_EXPERIMENT = """
experiment: chaos-full
topology: cluster.yaml
mechanisms: [sdn]
repetitions: 1
warmup: 500ms
duration: 3s
workloads:
  - probe: {from: esx1, to: esx2, network: vmotion}
  - probe: {from: esx1, to: array1, network: storage-b}
  - heartbeats: {isolation_address: vcenter}
  - vmotion: {vm: web1, to: esx3, at: 1s}
  - iscsi: {hosts: [esx1], lun: datastore1, pattern: random-4k, mix: 70/30}
  - iperf3: {from: esx3, to: esx2, network: vm-web, rate: 50Mbit}
faults:
  - {at: 1s, link: esx1.vmnic0, action: down}
  - {at: 2s, link: esx1.vmnic0, action: up}
  - {at: 2500ms, controller: restart}
"""
FULL = Scenario(
    (Path(__file__).resolve().parents[2] / "topologies/default.yaml").read_text()
    .replace("memory: 256MiB", "memory: 32MiB"),
    FULL_EXPERIMENT, ("probe esx1>esx2 vmotion", "probe esx1>array1 storage-b"),
    ("link esx1.vmnic0 down@1s", "link esx1.vmnic0 up@2s", "controller restart restart@2.5s"),
    (("iscsi esx1", "latency_ms"), ("iperf3 esx3>esx2 vm-web", "throughput_bps")), rep_s=20.0,
    mechanism="sdn")


# ---- processes: the whole tree under the test ----

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36


def _subreaper(on: bool) -> None:
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _table() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, state)} of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2:].split()
        out[int(name)] = (int(rest[1]), rest[0])
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def descendants(root: int | None = None) -> dict[int, str]:
    """Live processes under `root` (default: this test), with their command lines. Zombies
    re-parented to the test are reaped on the way: they are dead, just not yet waited for."""
    root = root or os.getpid()
    table = _table()
    for pid, (ppid, state) in table.items():
        if ppid == os.getpid() and state == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        if table[pid][1] != "Z":
            found[pid] = _cmdline(pid)
    return found


def processes_left(baseline: set[int], wait_s: float = 3.0) -> dict[int, str]:
    """Processes under the test that were not there before, after up to `wait_s` for the ones
    being ended right now (SIGTERM, then SIGKILL after a grace) to go."""
    deadline = time.monotonic() + wait_s
    while True:
        left = {p: c for p, c in descendants().items() if p not in baseline}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# ---- kernel and OVS objects ----

def _out(args: list[str]) -> str:
    return subprocess.run(args, capture_output=True, text=True).stdout


def objects_left(pids: set[int] = frozenset(), prefix: str = PREFIX) -> list[str]:
    """Every bridge, OVS interface record, link, named namespace and qdisc named with `prefix`,
    and every object the capability probes of the vclab processes `pids` named as theirs."""
    def ours(name: str) -> bool:
        return name.startswith(prefix) or probe_owner(name) in pids

    found = [f"bridge {b}" for b in _out(["ovs-vsctl", "--timeout=10", "list-br"]).split() if ours(b)]
    found += [f"ovs interface {i}" for i in _out(["ovs-vsctl", "--timeout=10", "--bare",
                                                 "--columns=name", "list", "interface"]).split()
              if ours(i)]
    found += [f"link {n}" for n in os.listdir("/sys/class/net") if ours(n)]
    found += [f"netns {line.split()[0]}" for line in _out(["ip", "netns", "list"]).splitlines()
              if line.startswith(prefix)]
    found += [f"qdisc {line}" for line in _out(["tc", "qdisc", "show"]).splitlines()
              if f" dev {prefix}" in line]
    return found


# ---- the store ----

def check_store(results: Path, sc: Scenario) -> dict[tuple[str, int], tuple[int, int, int]]:
    """Open the store as a user would and check it whole; returns {(mechanism, index): (row
    id, started_ns, finished_ns)} of the repetitions it holds (empty before the first one)."""
    db = results / "results.sqlite"
    if not db.exists():
        return {}
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        raw.close()
    held = {}
    with ResultStore(results, create=False) as store:
        runs = store.runs()
        assert len(runs) <= 1, f"a resumed run must continue, not start over: {runs}"
        for run in runs:
            for rep in store.repetitions(run.id):
                assert rep.status == "ok", f"{rep.mechanism} {rep.index}: {rep.status} {rep.reason}"
                assert rep.finished_ns > rep.started_ns
                assert [f.name for f in store.faults(rep.id)] == list(sc.faults)
                series = store.series(rep.id, name="rtt_ms")
                assert sorted(s.workload for s in series) == sorted(sc.probes)
                assert all(len(s.points) > 100 for s in series), [len(s.points) for s in series]
                held_series = {(s.workload, s.name) for s in store.series(rep.id) if s.points}
                assert set(sc.series) <= held_series, set(sc.series) - held_series
                got = {(m.workload, m.name, m.fault) for m in store.metrics(rep.id)}
                for probe in sc.probes:
                    assert (probe, "noise_floor_ms", "") in got
                    for fault in sc.faults:
                        assert (probe, "outage_ms", fault) in got
                store.events(rep.id)
                store.raw(rep.id)
                held[(rep.mechanism, rep.index)] = (rep.id, rep.started_ns, rep.finished_ns)
    return held


def run_status(results: Path) -> str | None:
    if not (results / "results.sqlite").exists():
        return None
    with ResultStore(results, create=False) as store:
        runs = store.runs()
        return runs[-1].status if runs else None


# ---- the injections ----

@dataclass
class Blow:
    signal: str
    delay_s: float
    outcome: str = ""
    exit_s: float = 0.0
    cleaned: list[str] = field(default_factory=list)
    stored: int = 0


def chaos(tmp_path: Path, injections: int, repetitions: int, seed: int,
          sc: Scenario = SMALL) -> list[Blow]:
    rng = random.Random(seed)
    exp = tmp_path / "exp.yaml"
    (tmp_path / "cluster.yaml").write_text(sc.cluster)
    exp.write_text(sc.experiment)
    results = tmp_path / "res"
    state = tmp_path / "state"
    env = {**os.environ, "VCLAB_STATE_DIR": str(state)}
    base = [VCLAB, "run", str(exp), "--results", str(results), "--prefix", PREFIX,
            "--repetitions", str(repetitions), "--no-report"]
    # Both signals at least once, then at random.
    kinds = ["SIGINT", "SIGKILL"] + [rng.choice(["SIGINT", "SIGKILL"]) for _ in range(injections - 2)]
    rng.shuffle(kinds)
    blows: list[Blow] = []
    held: dict = {}
    pids: set[int] = set()
    baseline = set(descendants())
    assert objects_left(pids) == [], "a vcy lab is up already: `vclab clean --prefix vcy`"
    finished = False
    for k, kind in enumerate(kinds):
        # Anywhere from the start of the process to well into its second repetition; one in
        # four in the first 1.5 s (capability probes, opening the store, the first build).
        # Never past the estimated end of what is left, so the blow lands inside the run.
        left_s = 0.8 * sc.rep_s * (repetitions - len(held))
        blow = Blow(kind, round(rng.uniform(0.0, 1.5) if rng.random() < 0.25
                                else rng.uniform(0.0, min(2.2 * sc.rep_s, left_s)), 2))
        blows.append(blow)
        status_before = run_status(results)
        log = tmp_path / f"run{k}.log"
        with log.open("w") as f:
            proc = subprocess.Popen(base + (["--resume"] if k else []), env=env,
                                    stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    preexec_fn=as_from_a_terminal)
        pids.add(proc.pid)
        try:
            try:
                proc.wait(blow.delay_s)
                finished = True  # the whole run ended before the blow: nothing left to resume
            except subprocess.TimeoutExpired:
                pass
            if finished:
                blow.outcome = f"run finished first (exit {proc.returncode})"
                assert proc.returncode == 0, log.read_text()[-3000:]
                blow.stored = repetitions
                break
            sent = time.monotonic()
            proc.send_signal(getattr(signal, kind))
            try:
                code = proc.wait(SIGINT_BOUND_S if kind == "SIGINT" else 10)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"injection {k} ({kind} at {blow.delay_s} s): vclab still "
                                     f"running {SIGINT_BOUND_S} s after the signal") from None
            blow.exit_s = time.monotonic() - sent
            stderr = log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        where = f"injection {k} ({kind} after {blow.delay_s} s, seed {seed})"
        if kind == "SIGINT":
            # 130 from vclab's own handler; -SIGINT if it came before Python had set one up.
            assert code in (130, -signal.SIGINT), f"{where}: exit {code}\n{stderr[-2000:]}"
            blow.outcome = f"exit {code} after {blow.exit_s:.2f} s"
            assert objects_left(pids) == [], where
            assert processes_left(baseline) == {}, where
            assert sorted(p.name for p in state.glob("*.procs")) == [], where
            # interrupted, or as it was: a SIGINT before the runner took the run over (imports,
            # opening the store) leaves a SIGKILL'd run's "running" as it found it; or, a blow
            # that landed after the last repetition was stored (the closing summary), finished:
            # still exit 130, and the run says it had finished
            status = run_status(results)
            if status == "finished":
                assert " repetitions ok, " in stderr, f"{where}: finished without its closing line"
                blow.outcome += " (the run had finished)"
                finished = True
            else:
                assert status in (None, "interrupted", status_before), where
        else:
            assert code == -signal.SIGKILL
            blow.outcome = "killed"
            clean = subprocess.run([VCLAB, "clean", "--prefix", PREFIX], env=env,
                                   capture_output=True, text=True, timeout=120)
            assert clean.returncode == 0, clean.stderr
            blow.cleaned = [line for line in clean.stdout.splitlines() if line.startswith("removed")]
            assert objects_left(pids) == [], f"{where}: after vclab clean"
            assert processes_left(baseline) == {}, f"{where}: after vclab clean"
            assert sorted(p.name for p in state.glob("*.procs")) == [], where
        now = check_store(results, sc)
        lost = {key: row for key, row in held.items() if now.get(key) != row}
        assert not lost, f"{where}: finished repetitions lost or changed: {lost}"
        held = now
        blow.stored = len(held)
        if finished:
            break
    if not finished:
        done = subprocess.run(base + ["--resume"], env=env, capture_output=True, text=True,
                              timeout=60 + 4 * sc.rep_s * repetitions)
        assert done.returncode == 0, done.stderr[-3000:]
        missing = repetitions - len(held)
        assert f"{missing} repetitions ok, 0 failed" in done.stdout, done.stdout[-2000:]
    final = check_store(results, sc)
    assert sorted(final) == [(sc.mechanism, i) for i in range(1, repetitions + 1)]
    assert all(final[key] == row for key, row in held.items()), "resume rewrote a finished repetition"
    assert run_status(results) == "finished"
    assert objects_left(pids) == [] and processes_left(baseline) == {}
    return blows


def _run_chaos(tmp_path: Path, injections: int, repetitions: int, sc: Scenario = SMALL) -> None:
    seed = int(os.environ.get("VCLAB_CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"\nchaos seed {seed} (VCLAB_CHAOS_SEED={seed} replays it)")
    started = time.monotonic()
    _subreaper(True)
    try:
        blows = chaos(tmp_path, injections, repetitions, seed, sc)
    finally:
        _subreaper(False)
        # Whatever a failed check left: end it the way a user would.
        subprocess.run([VCLAB, "clean", "--prefix", PREFIX], capture_output=True,
                       env={**os.environ, "VCLAB_STATE_DIR": str(tmp_path / "state")})
        descendants()
    for i, b in enumerate(blows):
        extra = f", clean removed {len(b.cleaned)} objects" if b.cleaned else ""
        print(f"  {i}: {b.signal:7} at {b.delay_s:5.2f} s: {b.outcome}{extra}; "
              f"{b.stored} repetitions stored")
    print(f"  {len(blows)} injections, {repetitions} repetitions complete in "
          f"{time.monotonic() - started:.0f} s")


@pytest.mark.parametrize("kind", ["SIGINT", "SIGKILL"])
def test_blow_during_the_capability_probes(tmp_path, kind):
    """The run's first half second: `vclab doctor`'s throw-away veths exist. A SIGINT must
    remove them on the way out, a SIGKILL's must go with `vclab clean --prefix`."""
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "exp.yaml").write_text(EXPERIMENT)
    env = {**os.environ, "VCLAB_STATE_DIR": str(tmp_path / "state")}
    # Each probe object lives a few ms: a kill can land between two of them, leaving nothing
    # to clean. Such a blow proves nothing either way, so it is dealt again (at most 5 times).
    for attempt in range(5):
        proc = subprocess.Popen([VCLAB, "run", str(tmp_path / "exp.yaml"), "--results",
                                 str(tmp_path / f"res{attempt}"), "--prefix", PREFIX,
                                 "--no-report"], env=env, preexec_fn=as_from_a_terminal,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not any(probe_owner(n) == proc.pid for n in os.listdir("/sys/class/net")):
                assert time.monotonic() < deadline and proc.poll() is None, "no probe device seen"
                time.sleep(0.005)
            seen = sorted(n for n in os.listdir("/sys/class/net") if probe_owner(n) == proc.pid)
            proc.send_signal(getattr(signal, kind))
            code = proc.wait(SIGINT_BOUND_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        print(f"\n{kind} with {seen} up (attempt {attempt + 1}): exit {code}")
        if kind == "SIGINT":
            assert code in (130, -signal.SIGINT)
            break
        if objects_left({proc.pid}):
            clean = subprocess.run([VCLAB, "clean", "--prefix", PREFIX], env=env,
                                   capture_output=True, text=True, timeout=60)
            print(clean.stdout.strip())
            break
    else:
        pytest.fail("5 SIGKILLs in a row landed between two probe objects")
    assert objects_left({proc.pid}) == []


def test_chaos_three_blows(tmp_path):
    _run_chaos(tmp_path, injections=3, repetitions=3)


@pytest.mark.slow
@pytest.mark.soak  # three_blows runs the same path in CI; this is the longer soak
def test_chaos_twelve_blows(tmp_path):
    _run_chaos(tmp_path, injections=12, repetitions=5)


@pytest.mark.slow
def test_chaos_every_process_kind(tmp_path):
    """sdn controller, tgtd, iSCSI initiator, iperf3, heartbeats, a migration: all ended."""
    _run_chaos(tmp_path, injections=6, repetitions=3, sc=FULL)
