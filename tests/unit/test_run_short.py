"""run_short: every short command vclab runs on this machine outside a lab (doctor's checks,
clean, tgtadm, tool versions) fails as an exit status with its reason, never a traceback."""

import sys

from vclab.lab.executor import MISSING, TIMED_OUT, run_short


def test_a_command_answers_as_text_with_its_input():
    p = run_short([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
                  stdin="vc-a\n")
    assert (p.returncode, p.stdout) == (0, "VC-A\n\n")


def test_a_missing_tool_and_a_hung_one_are_exit_statuses_with_why():
    missing = run_short(["vclab-no-such-tool", "--version"])
    assert missing.returncode == MISSING and "vclab-no-such-tool" in missing.stderr
    hung = run_short([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3)
    assert (hung.returncode, hung.stderr) == (TIMED_OUT, "timed out after 0.3 s")
