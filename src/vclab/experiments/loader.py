"""Load an experiment and its cluster, and check every name the experiment uses against it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vclab.errors import ConfigError, Problem, shown
from vclab.experiments.spec import Experiment, Fault, MechanismChoice, Sweep
from vclab.topology.loader import build_problems
from vclab.topology.spec import Cluster, Team, semantic_problems
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
    nodes = set(c.node_names())
    hosts = set(c.hypervisors) | set(c.storage) | set(c.management) | set(c.vms)

    def members(network: str) -> set[str]:
        m = {h for h, s in c.servers().items() if network in s.networks}
        m |= {a for a, s in c.storage.items() if network in s.portals}
        m |= {v for v, s in c.vms.items() if network in s.networks}
        return m

    def need(path, name, pool, what):
        if name not in pool:
            out.append((path, f"unknown {what} {shown(name)}; {what}s are: {', '.join(sorted(pool)) or '(none)'}"))
            return False
        return True

    for i, w in enumerate(e.workloads):
        base = ("workloads", i, w.kind)
        s = w.spec
        if w.kind in ("probe", "iperf3"):
            if s.src == s.dst:
                out.append((base + ("to",), f"{w.kind} from {s.src} to itself never leaves the host: "
                            "name another member of the network"))
            elif need(base + ("network",), s.network, set(c.networks), "network"):
                for end, key in ((s.src, "from"), (s.dst, "to")):
                    if need(base + (key,), end, hosts, "host") and end not in members(s.network):
                        out.append((base + (key,), f"{end!r} is not on network {s.network!r}; its members are: "
                                    f"{', '.join(sorted(members(s.network)))}"))
        elif w.kind == "vmotion":
            from vclab.workloads.vmotion.migration import migration_problems

            if need(base + ("vm",), s.vm, set(c.vms), "VM") and \
                    need(base + ("to",), s.to, set(c.hypervisors), "hypervisor"):
                whys = migration_problems(c, s.vm, s.to)
                for why in whys:
                    out.append((base + ("to",), f"{s.vm} cannot migrate to {s.to}: {why}"))
                if not whys:
                    out += vmotion_in_run(e, c, i)
        elif w.kind == "iscsi":
            for j, h in enumerate(s.hosts):
                need(base + ("hosts", j), h, set(c.hypervisors), "hypervisor")
            arrays = set(c.storage)
            array = s.array or (sorted(arrays)[0] if arrays else None)
            if array is None:
                out.append((base, "the cluster has no storage array"))
            elif need(base + ("array",), array, arrays, "storage array"):
                need(base + ("lun",), s.lun, set(c.storage[array].luns), "LUN")
        elif w.kind == "heartbeats" and s.isolation_address is not None:
            need(base + ("isolation_address",), s.isolation_address, hosts, "host")
        elif w.kind == "locking":
            out += locking_problems(e, c, i)

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


def vmotion_in_run(e: Experiment, c: Cluster, i: int) -> list[tuple[tuple, str]]:
    """A vMotion starts inside the run. It may end after it: the runner waits for a migration
    to finish (migration-storage-modes.yaml relies on that), but one that starts after the
    probes stopped measures nothing."""
    s = e.workloads[i].vmotion
    if s.at >= e.duration:
        return [(("workloads", i, "vmotion", "at"),
                 f"the migration of {s.vm} starts at {s.at:g} ms, when the run has ended "
                 f"({e.duration:g} ms): start it earlier or lengthen `duration`")]
    return []


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


def locking_problems(e: Experiment, c: Cluster, i: int) -> list[tuple[tuple, str]]:
    """A `locking` workload against its cluster: hosts that mount the datastore, the LUN (big
    enough for the VMs' lock records and disks), who runs each VM and where HA restarts it,
    and the other workloads that would clash with it."""
    from vclab.workloads.locking.layout import EXTENT_BLOCKS, lun_bytes_needed

    s = e.workloads[i].locking
    base = ("workloads", i, "locking")
    out: list[tuple[tuple, str]] = []
    storage_nets = set(c.networks_of_kind("storage"))
    covered_ms = EXTENT_BLOCKS * s.write_every
    if covered_ms < e.warmup + e.duration:
        out.append((base + ("write_every",), f"each owner's disk log holds {EXTENT_BLOCKS} writes: "
                    f"at one per {s.write_every:g} ms it wraps after {covered_ms / 1e3:g} s, "
                    f"before the run ends ({(e.warmup + e.duration) / 1e3:g} s with the warm-up) "
                    "and the dual-writer check would lose evidence; write less often"))
    for j, h in enumerate(s.hosts):
        if h not in c.hypervisors:
            out.append((base + ("hosts", j), f"unknown hypervisor {h!r}; hypervisors are: "
                        f"{', '.join(sorted(c.hypervisors)) or '(none)'}"))
    array = s.array or (sorted(c.storage)[0] if c.storage else None)
    if array is None:
        return out + [(base, "the cluster has no storage array")]
    if array not in c.storage:
        return out + [(base + ("array",), f"unknown storage array {array!r}; storage arrays are: "
                       f"{', '.join(sorted(c.storage)) or '(none)'}")]
    luns = c.storage[array].luns
    if s.lun not in luns:
        out.append((base + ("lun",), f"unknown LUN {s.lun!r}; LUNs of {array} are: "
                    f"{', '.join(sorted(luns)) or '(none)'}"))
    elif luns[s.lun] < lun_bytes_needed(len(s.vms)):
        out.append((base + ("lun",), f"LUN {s.lun} ({luns[s.lun]} bytes) is too small for "
                    f"{len(s.vms)} VMs' lock records and disk logs: it needs "
                    f"{lun_bytes_needed(len(s.vms))} bytes"))
    portals = set(c.storage[array].portals)
    for j, h in enumerate(s.hosts):
        if h in c.hypervisors and not set(c.hypervisors[h].networks) & portals & storage_nets:
            out.append((base + ("hosts", j), f"{h} is on none of {array}'s storage networks "
                        f"({', '.join(sorted(portals))}): it cannot reach the datastore"))
    if s.failover_host is not None and s.failover_host not in s.hosts:
        out.append((base + ("failover_host",), f"{s.failover_host!r} is not among hosts "
                    f"({', '.join(s.hosts)}): only they mount the datastore"))
    for j, vm in enumerate(s.vms):
        if vm not in c.vms:
            out.append((base + ("vms", j), f"unknown VM {vm!r}; VMs are: "
                        f"{', '.join(sorted(c.vms)) or '(none)'}"))
            continue
        runs_on = c.vms[vm].host
        if runs_on not in s.hosts:
            out.append((base + ("vms", j), f"{vm} runs on {runs_on}, which is not among hosts "
                        f"({', '.join(s.hosts)}): nobody would hold its lock"))
        elif s.failover_host == runs_on:
            out.append((base + ("failover_host",), f"{vm} already runs on {runs_on}: HA restarts "
                        "it on another host"))
    for k, other in enumerate(e.workloads):
        if other.kind == "iscsi" and (other.iscsi.array or sorted(c.storage)[0]) == array:
            out.append((base + ("array",), f"workloads.{k} (iscsi) also serves {array}: each "
                        "starts its own iSCSI target on the array's portals; use one"))
        elif other.kind == "locking" and k < i and \
                (other.locking.array or sorted(c.storage)[0]) == array:
            out.append((base + ("array",), f"workloads.{k} is already a locking workload on "
                        f"{array}: give it all the hosts and VMs"))
        elif other.kind == "vmotion" and other.vmotion.vm in s.vms and \
                other.vmotion.to not in s.hosts:
            out.append((base + ("hosts",), f"workloads.{k} migrates {other.vmotion.vm} to "
                        f"{other.vmotion.to}, which does not mount the datastore: add it to hosts"))
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
