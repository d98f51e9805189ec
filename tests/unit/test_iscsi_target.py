"""tgtd target: generated tgtadm commands, LUN planning, control ports, session parsing."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vclab.errors import VclabError
from rigs.netns import NetnsNode
from vclab.lab.procs import end_pid
from vclab.workloads.iscsi.target import (
    CONTROL_PORTS,
    Chap,
    IscsiTarget,
    Lun,
    _redact,
    parse_sessions,
    pick_control_port,
    plan_luns,
    remove_control_files,
    setup_commands,
    taken_control_ports,
    teardown_commands,
    tgtd_command,
)

DATA = Path(__file__).parent.parent / "data" / "iscsi"
MiB = 2**20


def test_luns_numbered_from_one_in_order(tmp_path) -> None:
    luns = plan_luns({"datastore1": 64 * MiB, "heartbeat": 4096}, tmp_path)
    assert luns == [Lun("datastore1", 1, 64 * MiB, tmp_path / "datastore1.img"),
                    Lun("heartbeat", 2, 4096, tmp_path / "heartbeat.img")]


def test_bad_luns_all_named(tmp_path) -> None:
    with pytest.raises(VclabError) as e:
        plan_luns({"bad name": 4096, "odd": 1000, "zero": 0}, tmp_path)
    msg = str(e.value)
    assert "'bad name'" in msg and "odd" in msg and "zero" in msg
    with pytest.raises(VclabError, match="at least one LUN"):
        plan_luns({}, tmp_path)


def test_tgtd_binds_first_portal_on_own_control_port() -> None:
    assert tgtd_command(23456, "10.0.0.1") == [
        "tgtd", "-f", "-C", "23456", "--iscsi", "portal=10.0.0.1:3260"]


def test_setup_commands_without_chap(tmp_path) -> None:
    luns = plan_luns({"ds1": 4096, "ds2": 8192}, tmp_path)
    cmds = setup_commands(20001, "iqn.x:array", luns, ["10.0.0.1", "10.0.1.1"])
    assert all(c[:5] == ["tgtadm", "-C", "20001", "--lld", "iscsi"] for c in cmds)
    tails = [c[5:] for c in cmds]
    assert tails == [
        ["--op", "new", "--mode", "portal", "--param", "portal=10.0.1.1:3260"],
        ["--op", "new", "--mode", "target", "--tid", "1", "--targetname", "iqn.x:array"],
        ["--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "--backing-store",
         str(tmp_path / "ds1.img")],
        ["--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "2", "--backing-store",
         str(tmp_path / "ds2.img")],
        ["--op", "bind", "--mode", "target", "--tid", "1", "--initiator-address", "ALL"],
    ]


def test_setup_commands_with_chap_bind_incoming_account(tmp_path) -> None:
    cmds = setup_commands(20001, "iqn.x:array", plan_luns({"ds1": 4096}, tmp_path), ["10.0.0.1"],
                          Chap("esx1", "s3cret-s3cret"))
    tails = [c[5:] for c in cmds]
    assert tails[-2:] == [
        ["--op", "new", "--mode", "account", "--user", "esx1", "--password", "s3cret-s3cret"],
        ["--op", "bind", "--mode", "account", "--tid", "1", "--user", "esx1"],
    ]
    assert not any("--outgoing" in c for c in cmds)  # one-way CHAP
    assert "s3cret" not in _redact(cmds[-2], Chap("esx1", "s3cret-s3cret"))


def test_teardown_forces_delete_then_offline_then_exit() -> None:
    tails = [c[5:] for c in teardown_commands(20001)]
    assert tails == [
        ["--op", "delete", "--mode", "target", "--tid", "1", "--force"],
        ["--op", "update", "--mode", "sys", "--name", "State", "--value", "offline"],
        ["--op", "delete", "--mode", "system"],
    ]


def test_chap_needs_user_and_secret() -> None:
    with pytest.raises(VclabError):
        Chap("", "secret")
    with pytest.raises(VclabError):
        Chap("user", "with space")


def test_control_ports(tmp_path) -> None:
    for name in ("socket.20001", "socket.20001.lock", "socket.25000.lock", "other"):
        (tmp_path / name).touch()
    taken = taken_control_ports(tmp_path)
    assert taken == {20001, 25000}
    assert taken_control_ports(tmp_path / "missing") == set()
    rng = random.Random(1)
    picks = {pick_control_port(taken, rng) for _ in range(200)}
    assert picks <= set(CONTROL_PORTS) and not picks & taken
    with pytest.raises(VclabError):
        pick_control_port(set(CONTROL_PORTS), rng)


def test_control_files_kept_while_a_tgtd_holds_the_lock(tmp_path) -> None:
    lock = tmp_path / "socket.20002.lock"
    (tmp_path / "socket.20002").touch()
    lock.touch()
    # A separate process takes the lock as tgtd does (POSIX record lock on byte 0).
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_WRONLY);"
         "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1); print('locked', flush=True);"
         "time.sleep(30)", str(lock)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        assert not remove_control_files(20002, tmp_path)
        assert lock.exists()
    finally:
        end_pid(holder.pid, None, grace=0.5)
        holder.wait()
    assert remove_control_files(20002, tmp_path)
    assert not lock.exists() and not (tmp_path / "socket.20002").exists()
    assert remove_control_files(20003, tmp_path)  # nothing there: nothing to do


def test_parse_sessions_from_saved_show() -> None:
    sessions = parse_sessions((DATA / "tgtadm-show-two-paths.txt").read_text())
    assert sessions == [
        {"nexus": "1", "initiator": "iqn.2025-01.lab.vclab:vcx-b", "address": "10.250.41.2"},
        {"nexus": "2", "initiator": "iqn.2025-01.lab.vclab:vcx-b", "address": "10.250.40.2"},
    ]
    assert parse_sessions("Target 1: iqn.x\n    I_T nexus information:\n") == []


def test_target_checks_its_inputs(tmp_path) -> None:
    from vclab.lab.procs import ProcessTracker

    tracker = ProcessTracker(run_id="unit", state_dir=tmp_path / "state")
    with pytest.raises(VclabError) as e:
        IscsiTarget(object(), ["10.0.0.300"], {"ds": 4096}, tracker=tracker, workdir=tmp_path)
    assert "10.0.0.300" in str(e.value) and "popen" in str(e.value)
    t = IscsiTarget(NetnsNode("vcx-a"), ["10.0.0.1", "10.0.1.1"], {"ds": 4096, "hb": 4096},
                    tracker=tracker, workdir=tmp_path)
    assert t.iqn == "iqn.2025-01.lab.vclab:vcx-a"
    assert t.lun_numbers == {"ds": 1, "hb": 2}
    assert t.url("hb", "10.0.1.1") == "iscsi://10.0.1.1/iqn.2025-01.lab.vclab:vcx-a/2"
    t.stop()  # never started: nothing to do, no error
    assert time.time() > 0
