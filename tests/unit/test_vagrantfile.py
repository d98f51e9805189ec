"""The files that run vclab elsewhere: the Vagrantfile parses and provisions with the same install
script as the README, the CI example runs the test script as root, and the README explains every
missing kernel feature with the words `vclab doctor` uses."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from vclab.doctor import PROBES

ROOT = Path(__file__).resolve().parents[2]
VAGRANTFILE = ROOT / "Vagrantfile"
CI_EXAMPLE = ROOT / "docs" / "ci-example.yml"
README = ROOT / "README.md"
MODULES = ("openvswitch", "bonding", "8021q", "sch_netem")

needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None,
                                reason="ruby is not installed (scripts/install.sh installs it)")

# A stand-in for Vagrant's DSL: records every setting and call, then prints them as JSON, so the
# test reads what `vagrant up` would be told without Vagrant or a hypervisor.
_RECORDER = r'''
require "json"
class Rec
  def initialize; @h = {}; end
  def to_h; @h.transform_values { |v| v.is_a?(Rec) ? v.to_h : v }; end
  def respond_to_missing?(*); true; end
  def method_missing(name, *args, **kw, &blk)
    n = name.to_s
    if n.end_with?("=")
      @h[n.chomp("=")] = args[0]
    elsif blk || !args.empty? || !kw.empty?
      sub = Rec.new
      blk.call(sub) if blk
      (@h[n] ||= []) << {"args" => args, "options" => kw.transform_keys(&:to_s), "block" => sub.to_h}
    else
      @h[n] ||= Rec.new
    end
  end
end
module Vagrant
  def self.configure(version)
    c = Rec.new
    yield c
    puts JSON.generate({"version" => version, "config" => c.to_h})
  end
end
load ARGV[0]
'''


def _recorded() -> dict:
    p = subprocess.run(["ruby", "-e", _RECORDER, str(VAGRANTFILE)], capture_output=True, text=True,
                       timeout=30, env={"PATH": "/usr/bin:/bin"})  # no VCLAB_VM_* overrides
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@needs_ruby
def test_vagrantfile_parses():
    p = subprocess.run(["ruby", "-c", str(VAGRANTFILE)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "Syntax OK" in p.stdout, p.stderr


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
def test_vagrant_validate():
    p = subprocess.run(["vagrant", "validate"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


@needs_ruby
def test_vagrantfile_box_size_and_synced_folder():
    recorded = _recorded()
    assert recorded["version"] == "2"
    vm = recorded["config"]["vm"]
    assert vm["box"] == "debian/bookworm64"
    folder = vm["synced_folder"][0]
    assert folder["args"] == [".", "/vagrant"]
    assert ".venv/" in folder["options"]["rsync__exclude"]  # the host's venv is not the VM's
    providers = {p["args"][0]: p["block"] for p in vm["provider"]}
    assert set(providers) == {"virtualbox", "libvirt"}
    for settings in providers.values():
        assert settings["cpus"] >= 2 and settings["memory"] >= 4096


@needs_ruby
def test_provisioning_loads_the_modules_and_runs_the_install_script_as_root():
    (shell,) = _recorded()["config"]["vm"]["provision"]
    assert shell["args"] == ["shell"]
    assert shell["options"]["privileged"] is True
    script = shell["options"]["inline"]
    lines = [line.strip() for line in script.splitlines()]
    assert "cd /vagrant" in lines
    assert "bash scripts/install.sh" in lines
    assert lines.index("cd /vagrant") < lines.index("bash scripts/install.sh")
    assert f'modules="{" ".join(MODULES)}"' in lines and 'modprobe "$m"' in script
    assert "/etc/modules-load.d/vclab.conf" in script  # loaded again at every boot
    p = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


def test_install_script_installs_ruby_for_this_test():
    assert " ruby" in (ROOT / "scripts" / "install.sh").read_text()


def test_ci_example_runs_the_test_script_as_root():
    workflow = YAML(typ="safe").load(CI_EXAMPLE.read_text())
    assert workflow["on"] and workflow["jobs"]
    runs = {name: [s.get("run", "") for s in job["steps"]] for name, job in workflow["jobs"].items()}
    tests = [name for name, steps in runs.items() if any("scripts/test.sh" in r for r in steps)]
    assert "test" in tests, runs
    for name in tests:
        command = next(r for r in runs[name] if "scripts/test.sh" in r)
        # Root: sudo on the runner, or a privileged container (root inside, namespaces allowed).
        assert command.lstrip().startswith("sudo ") or "docker run --rm --privileged" in command, command
        job = workflow["jobs"][name]
        images = job.get("strategy", {}).get("matrix", {}).get("image", []) + [command]
        assert any(w in str(images) for w in ("debian:12", "ubuntu")), (name, command)
        assert "ubuntu" in str(job["runs-on"]) or "ubuntu" in str(job["strategy"]["matrix"]["runner"])
    # Shards: one job per shard of 4, then one that merges what they uploaded.
    shards = workflow["jobs"]["experiment-shards"]
    assert shards["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    assert "--shard ${{ matrix.shard }}/4" in json.dumps(shards)
    merge = workflow["jobs"]["experiment-report"]
    assert merge["needs"] == "experiment-shards"
    assert "vclab merge results/shard-* --into results/merged" in json.dumps(merge)


def test_readme_explains_each_missing_kernel_feature_in_doctors_words():
    text = README.read_text()
    for heading in ("## Running in the Vagrant VM", "## Running in CI",
                    "## What each missing kernel feature changes"):
        assert heading in text
    section = text.split("## What each missing kernel feature changes", 1)[1].split("\n## ", 1)[0]
    kernel = ("ovs-kernel-datapath", "ovs-userspace-tso", "ovs-send-buffer", "ovs-receive-buffer", "bonding-driver", "vlan-8021q", "netem",
              "htb", "tbf", "linux-bridge-stp")
    means = {name: text_ for name, _, text_ in PROBES}
    for name in kernel:
        assert f"`{name}`" in section and means[name] in section, name
    # The two set-up commands stay the first thing a reader runs.
    assert "bash scripts/main.sh" in text.split("## Set-up on a fresh Debian 12 machine (as root)", 1)[1][:200]
    assert "bash scripts/test.sh" in text.split("## Set-up on a fresh Debian 12 machine (as root)", 1)[1][:300]
