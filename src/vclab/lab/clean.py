"""Remove what vclab created and a killed run left behind: processes, bridges, veths, namespaces.

Only vclab's own: processes recorded by PID (vclab.lab.procs), OVS bridges named with the prefix
AND carrying external_ids:vclab-name (a bridge somebody else named vc... stays), links and named
namespaces with the prefix. With `run_id`, only what that run created (its bridges, their ports'
veths and its recorded processes), so a test can clean up after itself while other runs go on.
With a longer `prefix` (a lab built with `--prefix vcy`), only objects named with it; processes
are those recorded in the state directory (VCLAB_STATE_DIR), which names no prefix. Without
`run_id`, also whatever a killed capability probe left (vclab.doctor names it by its PID).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from vclab import PREFIX
from vclab.errors import VclabError
from vclab.doctor import probe_owner
from vclab.lab.executor import run_short
from vclab.lab.procs import alive, default_state_dir, end_recorded


def _run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    # No timeout: a cleanup waits for each step (ovs-vsctl calls carry their own --timeout).
    return run_short(args, timeout=None, stdin=stdin)


def vclab_bridges(run_id: str | None = None, prefix: str = PREFIX) -> dict[str, str]:
    """{bridge: its user name} for the bridges vclab created (of one run, or one prefix)."""
    p = _run(["ovs-vsctl", "--timeout=10", "--format=json", "--columns=name,external_ids",
              "list", "bridge"])
    if p.returncode != 0:
        return {}
    out = {}
    for name, ids in json.loads(p.stdout)["data"]:
        ids = dict(ids[1]) if isinstance(ids, list) and ids[0] == "map" else {}
        if not name.startswith(prefix) or "vclab-name" not in ids:
            continue
        if run_id is not None and ids.get("vclab-run") != run_id:
            continue
        out[name] = ids["vclab-name"]
    return out


def leftovers(plan) -> list[str]:
    """A planned lab's bridges and root-namespace links that still exist (empty once torn down)."""
    bridges = set(_run(["ovs-vsctl", "list-br"]).stdout.split())
    links = set(os.listdir("/sys/class/net"))
    return ([b.name for b in plan.bridges if b.name in bridges]
            + [n for n in plan.root_links() if n in links])


def _dead_probes(names) -> list[str]:
    """The names a `vclab doctor` probe (vclab.doctor.probe_name) gave objects and left
    behind: their owner's PID is gone."""
    owners = {n: probe_owner(n) for n in names}
    return sorted(n for n, pid in owners.items() if pid is not None and not alive(pid, None))


def _end_processes(run_id: str | None, state_dir: Path) -> list[str]:
    if run_id is None:
        return end_recorded(state_dir)
    file = state_dir / f"{run_id}.procs"
    if not file.exists():
        return []
    # end_recorded reads a whole directory: give it one holding just this run's file.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.move(str(file), tmp)
        return end_recorded(Path(tmp))


def clean(run_id: str | None = None, state_dir: Path | None = None,
          prefix: str = PREFIX) -> list[str]:
    """Remove vclab's leftovers; returns what was removed, one line per object."""
    if not prefix.startswith(PREFIX):
        raise VclabError(f"a lab's name prefix must start with {PREFIX!r}, not {prefix!r}")
    removed = [f"process {p}" for p in _end_processes(run_id, state_dir or default_state_dir())]

    bridges = vclab_bridges(run_id, prefix)
    ports: list[str] = []
    if bridges:
        for bridge in bridges:
            ports += _run(["ovs-vsctl", "--timeout=10", "list-ifaces", bridge]).stdout.split()
        args = ["ovs-vsctl", "--timeout=30"]
        for bridge in bridges:
            args += ["--", "--if-exists", "del-br", bridge]
        _run(args)
        removed += [f"bridge {b} ({friendly})" for b, friendly in bridges.items()]

    if run_id is None:
        # A capability probe killed mid-way (SIGKILL in a run's first second) left its bridge
        # or veth; its name says whose, and a dead owner's objects are garbage for any prefix.
        dead = _dead_probes(_run(["ovs-vsctl", "--timeout=10", "list-br"]).stdout.split())
        if dead:
            args = ["ovs-vsctl", "--timeout=30"]
            for bridge in dead:
                args += ["--", "--if-exists", "del-br", bridge]
            _run(args)
            removed += [f"bridge {b} (a killed capability probe's)" for b in dead]

    present = set(os.listdir("/sys/class/net"))
    if run_id is None:
        # A bridge that stays (not vclab's) keeps its own device of the same name.
        others = set(_run(["ovs-vsctl", "--timeout=10", "list-br"]).stdout.split())
        links = sorted(n for n in present if n not in others and
                       (n.startswith(prefix) or n in _dead_probes(present)))
    else:
        links = sorted(n for n in ports if n in present)
    if links:
        _run(["ip", "-force", "-batch", "-"], stdin="".join(f"link del {n}\n" for n in links))
        left = set(os.listdir("/sys/class/net"))
        # Deleting one end of a veth takes its peer too: report only what we asked for.
        removed += [f"link {n}" for n in links if n not in left]

    if run_id is None:
        names = [line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines()
                 if line.strip()]
        for ns in names:
            if ns.startswith(prefix) and _run(["ip", "netns", "del", ns]).returncode == 0:
                removed.append(f"netns {ns}")
    return removed
