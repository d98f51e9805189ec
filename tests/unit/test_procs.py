"""ProcessTracker: a teardown and a workload's own thread ending the same process at once."""

import subprocess
import threading

from vclab.lab.procs import ProcessTracker, alive


def test_two_threads_ending_one_process(tmp_path):
    tracker = ProcessTracker(run_id="unit", state_dir=tmp_path)
    proc = subprocess.Popen(["sleep", "30"])
    tracker.track(proc.pid, "sleep")
    started = tracker.tracked[0].started
    errors = []

    def end():
        try:
            tracker.end(proc.pid)
        except Exception as e:  # the race this guards against raised ValueError
            errors.append(e)

    threads = [threading.Thread(target=end) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proc.wait(5)
    assert errors == [] and tracker.tracked == []
    assert not alive(proc.pid, started)


def test_end_all_while_another_thread_tracks(tmp_path):
    """end_all takes locked snapshots: a process tracked while it runs is ended too."""
    tracker = ProcessTracker(run_id="unit2", state_dir=tmp_path)
    procs = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    for p in procs[:2]:
        tracker.track(p.pid, "sleep")
    late = threading.Thread(target=tracker.track, args=(procs[2].pid, "late"))
    late.start()
    tracker.end_all(grace=0.5)
    late.join()
    tracker.end_all(grace=0.5)  # whatever the first one could not have seen yet
    for p in procs:
        p.wait(5)
    assert tracker.tracked == [] and not tracker.file.exists()


def test_roles_survive_the_state_file(tmp_path):
    from vclab.lab.procs import Role, Tracked
    import json

    tracker = ProcessTracker(run_id="unit3", state_dir=tmp_path)
    proc = subprocess.Popen(["sleep", "30"])
    tracker.track(proc.pid, "tgtd:array1", Role.TARGET, "array1")
    entry = Tracked(**json.loads(tracker.file.read_text().splitlines()[0]))
    assert entry.role is Role.TARGET and entry.node == "array1"
    tracker.end_all(grace=0.5)
    proc.wait(5)
