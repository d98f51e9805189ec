"""Load a cluster file: YAML with positions -> validated `Cluster`, or every problem at once."""

from __future__ import annotations

from pathlib import Path

from vclab.topology.spec import Cluster, semantic_problems
from vclab.yamlfile import load_model, load_yaml, validate


def load_cluster(path: Path | str) -> Cluster:
    return load_model(Cluster, path, semantic_problems)


def cluster_from_text(text: str, name: str = "<text>") -> Cluster:
    return validate(Cluster, load_yaml(name, text), name, semantic_problems)
