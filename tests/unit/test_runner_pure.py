"""The runner's pure parts: which dead processes void a repetition."""

import os
import subprocess

from vclab.experiments.runner import dead_processes
from vclab.lab.procs import Role, Tracked, start_time


def test_a_dead_controller_or_target_is_reported_and_nothing_else():
    done = subprocess.Popen(["true"])
    done.wait()
    me = Tracked(os.getpid(), start_time(os.getpid()), "vclab controller :6653", Role.CONTROLLER)
    gone_target = Tracked(done.pid, 12345, "tgtd:array1", Role.TARGET)
    gone_client = Tracked(done.pid, 12345, "iperf3 esx1>esx2 vm-web-client")  # ends by itself
    assert dead_processes([me, gone_target, gone_client]) == [f"tgtd:array1 (pid {done.pid})"]
