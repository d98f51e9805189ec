"""Load an experiment and its cluster, and check every name the experiment uses against it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vclab.errors import ConfigError, Problem, shown
from vclab.experiments.spec import Experiment, Fault, MechanismChoice, Sweep
from vclab.topology.loader import build_problems
from vclab.topology.spec import Cluster, Team, semantic_problems
from vclab.workloads.spec import unknown
from vclab.yamlfile import load_yaml, position, read_text, validate


@dataclass
class LoadedExperiment:
    experiment: Experiment
    cluster: Cluster
    path: Path
    text: str  # stored verbatim with the results
    cluster_text: str


def cluster_for(cluster: Cluster, choice: MechanismChoice) -> Cluster:
    """The cluster with the mechanism's team mode on every server with more than one NIC."""
    if choice.team is None:
        return cluster
    def reteam(servers):
        return {n: s.model_copy(update={"team": Team(mode=choice.team, primary=s.team.primary)})
                if len(s.nics) > 1 else s for n, s in servers.items()}
    return cluster.model_copy(update={"hypervisors": reteam(cluster.hypervisors),
                                      "management": reteam(cluster.management)})


def mechanism_problems(e: Experiment, c: Cluster) -> list[tuple[tuple, str]]:
    """Each mechanism checked on the cluster it will run (its team mode applied) before
    anything is built: LACP across two switches, `none` on a looped fabric, sdn with LACP."""
    out: list[tuple[tuple, str]] = []
    for i, choice in enumerate(e.mechanisms):
        teamed = cluster_for(c, choice)
        found = [f"{'.'.join(str(k) for k in path)}: {why}" for path, why in semantic_problems(teamed)]
        if not found:
            found = [why for _, why in build_problems(teamed, choice.mechanism())]
        out += [(("mechanisms", i), f"{choice.label}: {why}") for why in found]
    return out


def reference_problems(e: Experiment, c: Cluster) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = []

    def need(path, name, pool, what):
        why = unknown(name, pool, what)
        if why:
            out.append((path, why))
        return why is None

    for i, w in enumerate(e.workloads):
        out += [(("workloads", i, w.kind) + path, why) for path, why in w.spec.problems(e, c, i)]

    links = {l.name for l in c.link_list()}
    links |= {f"{h}.{nic}" for h, s in c.servers().items() for nic in s.nics}
    links |= {f"{a}.{net}" for a, s in c.storage.items() for net in s.portals}
    for i, f in enumerate(e.faults):
        if isinstance(f, Sweep):
            continue
        base = ("faults", i)
        if f.at > e.duration:
            out.append((base + ("at",), f"at {f.at:g} ms is after the end of the run ({e.duration:g} ms)"))
        if f.link is not None:
            need(base + ("link",), f.link, links, "link")
        elif f.switch is not None:
            need(base + ("switch",), f.switch, set(c.switches), "switch")
        elif f.host is not None:
            if need(base + ("host",), f.host, set(c.servers()), "server") and \
                    f.action in ("storage-partition", "storage-rejoin") and \
                    not set(c.servers()[f.host].networks) & set(c.networks_of_kind("storage")):
                out.append((base + ("host",), f"{f.host} is on no storage network: nothing to "
                            f"partition ({', '.join(c.networks_of_kind('storage')) or 'none'})"))
        elif f.controller is not None and not any(m.fabric == "sdn" for m in e.mechanisms):
            out.append((base + ("controller",), "controller faults need the sdn mechanism among `mechanisms`"))
    return out + schedule_problems(e, c)


class _One:
    """An experiment of one schedule item, to expand it with the runner's own expand_schedule."""

    def __init__(self, item) -> None:
        self.faults = [item]


# What each action does to its target's state; the state it needs first, and what it leaves.
_STATE_CHANGE = {
    "down": ("down", False, True), "up": ("down", True, False),
    "silent": ("silent", False, True), "restore": ("silent", True, False),
    "fail": ("failed", False, True), "recover": ("failed", True, False),
    "isolate": ("isolated", False, True), "rejoin": ("isolated", True, False),
    "storage-partition": ("partitioned", False, True), "storage-rejoin": ("partitioned", True, False),
    "crash": ("crashed", False, True),
}
_UNDOES = {"up": "down", "restore": "silent", "recover": "fail", "rejoin": "isolate",
           "storage-rejoin": "storage-partition"}
_UNDONE_BY = {done: undo for undo, done in _UNDOES.items()}


def schedule_problems(e: Experiment, c: Cluster) -> list[tuple[tuple, str]]:
    """The schedule as it will run (flaps and sweeps expanded by the runner's expand_schedule),
    walked in time order with the state of each target: no `down` twice before `up`, no `up`
    without a `down`, no recover without a fail, no host crashed twice, no two faults on one
    target at one instant; a flap inside the run."""
    from vclab.experiments.faults import expand_schedule

    out: list[tuple[tuple, str]] = []
    steps: list[tuple[float, int, int, Fault]] = []
    for i, item in enumerate(e.faults):
        expanded = expand_schedule(_One(item), c)
        steps += [(f.at, i, k, f) for k, f in enumerate(expanded)]
        if isinstance(item, Fault) and item.action == "flap" and expanded and expanded[-1].at > e.duration:
            out.append((("faults", i, "count"), f"the flap's last `up` is at {expanded[-1].at:g} ms "
                        f"({item.count} x {item.period:g} ms from {item.at:g} ms), after the end of "
                        f"the run ({e.duration:g} ms)"))
    steps.sort(key=lambda s: (s[0], s[1], s[2]))
    state: dict[tuple[str, str, str], tuple[float, int]] = {}  # (kind, target, what) -> (since, fault)
    last: dict[tuple[str, str], tuple[float, int, str]] = {}  # (kind, target) -> latest step
    reported: set[int] = set()

    def blame(i: int, text: str) -> None:
        if i not in reported:  # one problem per line of the file: the first thing wrong there
            reported.add(i)
            key = "action" if isinstance(e.faults[i], Fault) else "sweep"
            out.append((("faults", i, key), text))

    for at, i, _, f in steps:
        kind, target = f.target_kind, f.target
        action = f.action or str(f.controller)
        previous = last.get((kind, target))
        if previous is not None and previous[0] == at and previous[1] != i:
            blame(i, f"{kind} {target} already gets `{previous[2]}` at {at:g} ms (faults.{previous[1]}); "
                     "two faults on one target at one instant happen in no defined order: "
                     "give them different times")
        last[(kind, target)] = (at, i, action)
        change = _STATE_CHANGE.get(action)
        if change is None:
            continue
        what, needs, leaves = change
        key = (kind, target, what)
        now = state.get(key)
        if needs and now is None:
            blame(i, f"`{action}` of {kind} {target} at {at:g} ms has no earlier "
                     f"`{_UNDOES[action]}` to undo")
        elif not needs and now is not None:
            blame(i, f"{kind} {target} is already {what} at {at:g} ms (since {now[0]:g} ms, "
                     f"faults.{now[1]}): it needs `{_UNDONE_BY[action]}` before another "
                     f"`{action}`"
                  if action != "crash" else
                  f"host {target} already crashed at {now[0]:g} ms (faults.{now[1]}); "
                  "a crashed host stays down until the run ends")
        if leaves:
            state[key] = (at, i)
        else:
            state.pop(key, None)
    return out


def load_experiment(path: Path | str, text: str | None = None) -> LoadedExperiment:
    path = Path(path)
    text = read_text(path) if text is None else text
    data = load_yaml(path, text)
    e = validate(Experiment, data, str(path))
    cluster_file = e.cluster_path(path)  # a name too long or with a NUL: read_text says so
    if cluster_file is not None:
        try:
            cluster_text = read_text(cluster_file)
        except ConfigError as err:
            # Not readable as a file at all: blame the experiment's `topology:` line.
            (problem,) = err.problems
            if problem.line is not None:
                raise
            line, col = position(data, ("topology",))
            raise ConfigError([Problem(f"no cluster file at {shown(str(cluster_file), 200)}: "
                                       f"{problem.message}", str(path), line, col, "topology")]) from None
        cluster_data = load_yaml(cluster_file, cluster_text)
        cluster = validate(Cluster, cluster_data, str(cluster_file), semantic_problems)
    else:
        # Inline: positions point into the experiment file, under `topology`.
        try:
            cluster = validate(Cluster, data["topology"], str(path), semantic_problems)
        except ConfigError as err:
            for p in err.problems:
                object.__setattr__(p, "field", "topology." + p.field if p.field else "topology")
            raise
        cluster_text = ""
    problems = reference_problems(e, cluster) + mechanism_problems(e, cluster)
    if problems:
        raise ConfigError([Problem(text_, str(path), *position(data, loc), ".".join(str(k) for k in loc))
                           for loc, text_ in problems])
    return LoadedExperiment(e, cluster, path, text, cluster_text)
