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
