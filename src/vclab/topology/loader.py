"""Load a cluster file: YAML with positions -> validated `Cluster`, or every problem at once."""

from __future__ import annotations

from pathlib import Path

from vclab.errors import ConfigError, Problem, VclabError
from vclab.topology.spec import Cluster, semantic_problems
from vclab.yamlfile import load_model, load_yaml, position, validate


def load_cluster(path: Path | str) -> Cluster:
    return load_model(Cluster, path, semantic_problems)


def cluster_from_text(text: str, name: str = "<text>") -> Cluster:
    return validate(Cluster, load_yaml(name, text), name, semantic_problems)


def build_problems(cluster: Cluster, mechanism=None) -> list[tuple[tuple, str]]:
    """What `vclab up` would refuse before building anything, by the same code it runs: names
    the build needs for itself, and the mechanism's own check of the plan (`none` on a loop, a
    LAG under sdn or linux-stp...). `mechanism`: a name or Mechanism; default: the file's."""
    from vclab.fabric.registry import get_mechanism
    from vclab.topology.plan import build_plan, name_problems

    found = name_problems(cluster)
    if found:
        return found
    try:
        plan = build_plan(cluster)
    except VclabError as err:  # more ports or bridges than the build lays out
        return [((), str(err))]
    try:
        get_mechanism(mechanism or cluster.mechanism).check(plan)
    except VclabError as err:
        return [(("mechanism",), str(err))]
    return []


def check_buildable(cluster: Cluster, data, path: str) -> None:
    """Raise build_problems as a ConfigError pointing into the file (parsed `data`)."""
    found = build_problems(cluster)
    if found:
        raise ConfigError([Problem(why, path, *position(data, loc), ".".join(str(k) for k in loc))
                           for loc, why in found])
