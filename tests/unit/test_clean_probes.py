"""`vclab clean` and the objects a killed capability probe (vclab.doctor) left behind: found
by the PID in their names, for any lab prefix, never while that PID lives."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from vclab.doctor import probe_name, probe_owner

DEAD = 4_194_303  # above the default pid_max: never a live process here


def test_probe_names_carry_the_pid_and_fit_an_interface_name():
    assert probe_name("br", pid=0x3fffff) == "vcd_3fffff_br"
    assert probe_owner(probe_name("a", pid=1234)) == 1234
    assert len(probe_name("a", pid=DEAD) + ".5") <= 15  # the 802.1Q probe's device
    assert probe_owner(probe_name("x")) == os.getpid()
    # lab objects, rigs and the old fixed names are no probe's
    assert [probe_owner(n) for n in ("vcd-br", "vcdab-br", "vcys0", "vcd_zz_a")] == [None] * 4


class FakeSystem:
    def __init__(self, links, bridges):
        self.links, self.bridges = set(links), dict(bridges)
        self.deleted: list[str] = []

    def run(self, args, stdin=None):
        out = ""
        if "list" in args and "bridge" in args:
            rows = [[n, ["map", sorted(ids.items())]] for n, ids in self.bridges.items()]
            out = json.dumps({"data": rows, "headings": ["name", "external_ids"]})
        elif "list-br" in args:
            out = "\n".join(self.bridges)
        elif "list-ifaces" in args:
            out = ""
        elif "del-br" in args:
            for i, a in enumerate(args):
                if a == "del-br":
                    self.deleted.append(args[i + 1])
                    self.bridges.pop(args[i + 1], None)
                    self.links.discard(args[i + 1])
        elif args[:2] == ["ip", "-force"]:
            for line in stdin.splitlines():
                self.deleted.append(line.split()[-1])
                self.links.discard(line.split()[-1])
        return subprocess.CompletedProcess(args, 0, out, "")


@pytest.fixture
def system(monkeypatch):
    import vclab.lab.clean as clean_mod
    live = probe_name("a")  # this process is alive: its probe may be running right now
    fake = FakeSystem(
        links={"eth0", "vcys0p1", probe_name("a", DEAD), probe_name("b", DEAD), live,
               probe_name("br", DEAD), "vcd-br"},
        bridges={"vcys0": {"vclab-name": "tor-a"}, probe_name("br", DEAD): {}, "vcd-br": {}})
    monkeypatch.setattr(clean_mod, "_run", fake.run)
    monkeypatch.setattr(clean_mod.os, "listdir", lambda path: sorted(fake.links))
    monkeypatch.setattr(clean_mod, "end_recorded", lambda d: [])
    return fake


def test_clean_with_a_prefix_also_removes_a_dead_probes_objects(system, tmp_path):
    from vclab.lab.clean import clean
    removed = clean(state_dir=tmp_path, prefix="vcy")
    gone = set(system.deleted)
    assert {probe_name("br", DEAD), probe_name("a", DEAD), "vcys0", "vcys0p1"} <= gone
    assert probe_name("a") not in gone and "vcd-br" not in gone and "eth0" not in gone
    assert f"bridge {probe_name('br', DEAD)} (a killed capability probe's)" in removed


def test_clean_of_one_run_leaves_probes_alone(system, tmp_path):
    from vclab.lab.clean import clean
    clean(run_id="r1", state_dir=tmp_path)
    assert not any(probe_owner(n) for n in system.deleted)


def test_a_prefix_outside_vclabs_is_refused(tmp_path):
    from vclab.lab.clean import clean
    from vclab.errors import VclabError
    with pytest.raises(VclabError, match="must start with 'vc'"):
        clean(state_dir=tmp_path, prefix="br")
