"""Load an experiment and its cluster, and check every name the experiment uses against it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vclab.errors import ConfigError, Problem, VclabError
from vclab.experiments.spec import Experiment, Fault, MechanismChoice, Sweep
from vclab.topology.spec import Cluster, Team, semantic_problems
from vclab.yamlfile import load_yaml, position, validate


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
    from vclab.topology.plan import build_plan

    out: list[tuple[tuple, str]] = []
    for i, choice in enumerate(e.mechanisms):
        teamed = cluster_for(c, choice)
        found = [f"{'.'.join(str(k) for k in path)}: {why}" for path, why in semantic_problems(teamed)]
        if not found:
            try:
                choice.mechanism().check(build_plan(teamed, "vc"))
            except VclabError as err:
                found.append(str(err))
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
            out.append((path, f"unknown {what} {name!r}; {what}s are: {', '.join(sorted(pool)) or '(none)'}"))
            return False
        return True

    for i, w in enumerate(e.workloads):
        base = ("workloads", i, w.kind)
        s = w.spec
        if w.kind in ("probe", "iperf3"):
            if need(base + ("network",), s.network, set(c.networks), "network"):
                for end, key in ((s.src, "from"), (s.dst, "to")):
                    if need(base + (key,), end, hosts, "host") and end not in members(s.network):
                        out.append((base + (key,), f"{end!r} is not on network {s.network!r}; its members are: "
                                    f"{', '.join(sorted(members(s.network)))}"))
        elif w.kind == "vmotion":
            from vclab.workloads.migration import migration_problems

            if need(base + ("vm",), s.vm, set(c.vms), "VM") and \
                    need(base + ("to",), s.to, set(c.hypervisors), "hypervisor"):
                for why in migration_problems(c, s.vm, s.to):
                    out.append((base + ("to",), f"{s.vm} cannot migrate to {s.to}: {why}"))
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


def load_experiment(path: Path | str) -> LoadedExperiment:
    path = Path(path)
    data = load_yaml(path)
    text = path.read_text()
    e = validate(Experiment, data, str(path))
    try:
        cluster_file = e.cluster_path(path)
        found = cluster_file is None or cluster_file.is_file()
        why = "no such file"
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        cluster_file, found = path.parent / str(e.topology), False
        why = getattr(err, "strerror", None) or str(err)
    if cluster_file is not None:
        if not found:
            line, col = position(data, ("topology",))
            raise ConfigError([Problem(f"no cluster file at {str(cluster_file)!r} ({why})", str(path),
                                       line, col, "topology")])
        cluster_data = load_yaml(cluster_file)
        cluster = validate(Cluster, cluster_data, str(cluster_file), semantic_problems)
        cluster_text = cluster_file.read_text()
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
