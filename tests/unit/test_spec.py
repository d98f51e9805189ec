"""Validation of cluster files: each class of mistake is reported at its file:line:column with the
field path and what is allowed, all at once, and never as a traceback."""

from __future__ import annotations

import copy
import io
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from vclab.errors import ConfigError
from vclab.topology.analysis import Finding, analyse
from vclab.topology.loader import cluster_from_text, load_cluster
from vclab.topology.spec import Cluster

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad"
DEFAULT = ROOT / "topologies" / "default.yaml"

NAME_RULE = "cannot become a Linux interface or host name: use 1 to 15 lowercase letters, digits, '-' or '_', starting with a letter"
TOP_KEYS = "cluster, mechanism, defaults, networks, switches, links, hypervisors, storage, management, vms"


def problems_of_file(path: Path) -> list[str]:
    """`line:column: field: message` of every problem, after checking each names the file."""
    with pytest.raises(ConfigError) as info:
        load_cluster(path)
    assert all(p.file == str(path) for p in info.value.problems)
    return [str(p)[len(str(path)) + 1:] for p in info.value.problems]


def problems_of_text(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cluster_from_text(text, "c.yaml")
    return [str(p) for p in info.value.problems]


EXPECTED = {
    "unknown-key.yaml": [
        f"7:1: hypervisor: unknown key 'hypervisor'; allowed: {TOP_KEYS}",
        "12:29: management.vcenter.nics.eth0.speed: unknown key 'speed'; allowed: switch, rate, delay, loss",
    ],
    "undefined-references.yaml": [
        "12:13: links.0.between.1: unknown switch 'tor-c'; switches are: tor-a, tor-b",
        "15:27: hypervisors.esx1.nics.vmnic1: unknown switch 'tor-x'; switches are: tor-a, tor-b",
        "16:28: hypervisors.esx1.networks.1: unknown network 'vmotio'; networks are: management, storage, vmotion",
        "19:15: storage.array1.portals.storage-z: unknown network 'storage-z'; networks are: management, storage, vmotion",
        "21:10: vms.web1.host: unknown hypervisor 'esx9'; hypervisors are: esx1",
    ],
    "duplicate-name.yaml": [
        "9:3: hypervisors.esx1: name 'esx1' is already used in switches",
        "11:3: vms.esx1: name 'esx1' is already used in switches",
    ],
    "duplicate-key.yaml": [  # both, though a YAML parser stops at the first
        "12:7: hypervisors.esx1.nics.vmnic0: key 'vmnic0' is given twice; the first is on line 11",
        "14:3: hypervisors.esx1: key 'esx1' is given twice; the first is on line 9",
    ],
    "vlan-range.yaml": [
        "4:16: networks.management.vlan: VLAN 0 is outside 1..4094 (0 and 4095 are reserved by 802.1Q)",
        "5:16: networks.vmotion.vlan: VLAN 4095 is outside 1..4094 (0 and 4095 are reserved by 802.1Q)",
    ],
    "overlapping-subnets.yaml": [
        "5:26: networks.storage.subnet: subnet 10.10.0.0/16 overlaps 10.10.0.0/24 of network 'management'",
        "6:26: networks.vm.subnet: subnet 10.0.0.0/12 overlaps 10.10.0.0/24 of network 'management'",
        "6:26: networks.vm.subnet: subnet 10.0.0.0/12 overlaps 10.10.0.0/16 of network 'storage'",
    ],
    "bad-name.yaml": [
        f"8:3: hypervisors.Esx_1: 'Esx_1' {NAME_RULE}",
        f"9:17: hypervisors.esx2.nics.a-very-long-nic-name: 'a-very-long-nic-name' {NAME_RULE}",
    ],
    "bad-units.yaml": [
        "4:10: defaults.link.rate: '10G' is not a rate; write e.g. 10Gbit, 1Gb/s, 200MB/s",
        "14:38: vms.web1.memory: '4 gigs' is not a size; write e.g. 4GiB, 512MiB, 20GB",
        "14:54: vms.web1.dirty_rate: '200MB' is not a rate; write e.g. 10Gbit, 1Gb/s, 200MB/s",
        "14:73: vms.web1.disk: Input should be greater than 0 (got -1)",
    ],
    "lacp-two-switches.yaml": [
        "13:12: hypervisors.esx1.team.mode: LACP across independent switches needs MLAG, which vclab "
        "does not emulate: use active-backup or balance-slb, or cable every NIC to one switch",
        "13:24: hypervisors.esx1.team.primary: unknown NIC 'vmnic2'; NICs are: vmnic0, vmnic1",
    ],
    "shares.yaml": ["3:1: networks: the shares add up to 110%; at most 100% can be guaranteed"],
    "syntax-error.yaml": [
        "5:9: while parsing a flow mapping expected ',' or '}', but got ':' "
        "(what is unfinished began on line 4, column 15)",
    ],
    "empty.yaml": ["1:1: the file must be a mapping of keys (e.g. `cluster: NAME`)"],
    "not-a-mapping.yaml": ["1:1: the file must be a mapping of keys (e.g. `cluster: NAME`)"],
}


def test_every_bad_file_has_its_expectation():
    assert {p.name for p in BAD.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file(name):
    assert problems_of_file(BAD / name) == EXPECTED[name]


# ---- one mistake at a time in the default cluster ---------------------------------------------

def default_with(old: str, new: str) -> str:
    text = DEFAULT.read_text()
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize("old, new, expected", [
    ("vlan: 10,", "vlan: true,", "14:16: networks.management.vlan: Input should be a valid integer (got True)"),
    ("vlan: 31,", "vlan: 30,", "17:16: networks.storage-b.vlan: VLAN 30 is already used by network 'storage-a'"),
    ("10.10.0.0/24", "10.10.0.1/24", "14:26: networks.management.subnet: '10.10.0.1/24' is not an IPv4 network; "
                                     "write ADDRESS/PREFIX with the host bits zero, e.g. 10.10.0.0/24"),
    ("10.10.0.0/24", "5", "14:26: networks.management.subnet: 5 is not a subnet; write ADDRESS/PREFIX, e.g. 10.10.0.0/24"),
    ("share: 30%", "share: 120%", "15:48: networks.vmotion.share: '120%' is outside 0%..100%"),
    ("share: 30%", "share: 50%", "13:1: networks: the shares add up to 120%; at most 100% can be guaranteed"),
    ("mechanism: rstp", "mechanism: ospf",
     "12:1: mechanism: 'ospf' is not allowed; expected 'none', 'stp', 'rstp', 'linux-stp' or 'sdn'"),
    ("tor-b: {priority: 8192}", "tor-b: {priority: 8000}",
     "21:11: switches.tor-b.priority: Input should be a multiple of 4096 (got 8000)"),
    ("storage-b: tor-b}", "vm-web: tor-b}",
     "34:33: storage.array1.portals.vm-web: network 'vm-web' is of kind 'vm'; expected storage"),
    ("host: esx2, networks: [vm-web]", "host: esx2, networks: [vmotion]",
     "40:33: vms.web2.networks.0: network 'vmotion' is of kind 'vmotion'; expected vm"),
    ("host: esx2, networks: [vm-web]", "host: esx2, networks: [vm-web, vm-web]",
     "40:22: vms.web2.networks: a network is listed twice"),
    ("dirty_rate: 10MB/s, disk: 1GiB}\n  web2", "dirty_rate: .inf, disk: 1GiB}\n  web2",
     "39:58: vms.web1.dirty_rate: Input should be a finite number (got inf)"),
    ("memory: 256MiB, dirty_rate: 10MB/s, disk: 1GiB}\n  web2", "memory: 256MiB, working_set: 2GiB, disk: 1GiB}\n  web2",
     "39:58: vms.web1.working_set: the working set cannot exceed the VM's memory"),
    ("  vm-web:     {vlan: 100, subnet: 10.100.0.0/24, share: 20%, kind: vm}",
     "  vm-web:     {vlan: 100, subnet: 10.100.0.0/24, share: 20%}",
     "18:3: networks.vm-web: network 'vm-web' needs `kind:` (one of management, vmotion, storage, vm) "
     "since its name is not a kind"),
    ("  tor-b: {priority: 8192}", "  ~: {priority: 8192}", "21:3: switches.None: None cannot be a name here: write a name as text"),
])
def test_one_mistake(old, new, expected):
    assert [p[len("c.yaml:"):] for p in problems_of_text(default_with(old, new))] == [expected]


def test_a_mistake_in_an_anchor_is_reported_for_every_alias_at_the_anchor():
    found = problems_of_text(default_with("team: {mode: active-backup}", "team: {mode: active-backup, speed: 3}"))
    assert found == [f"c.yaml:28:33: hypervisors.esx{i}.team.speed: unknown key 'speed'; allowed: mode, primary"
                     for i in (1, 2, 3)]


def test_self_link_and_unknown_switch_in_long_form():
    found = problems_of_text(default_with(
        "  - {between: [tor-a, tor-b], cost: 2000}     # (spanning trees forward on it, block the other)\n"
        "  - {between: [tor-a, tor-b], cost: 4000}",
        "  - [tor-a, tor-a]\n  - {between: [tor-a, tor-z], rate: 1Gbit}"))
    assert found == [
        "c.yaml:23:5: links.0.between: a link joins two different switches, not 'tor-a' to itself",
        "c.yaml:24:23: links.1.between.1: unknown switch 'tor-z'; switches are: tor-a, tor-b",
    ]


def test_many_mistakes_are_reported_together_structural_first():
    text = default_with("vlan: 10,", "vlan: 0,").replace("dirty_rate: 10MB/s", "dirty_rate: fast", 1)
    assert [p.split(": ", 2)[1] for p in problems_of_text(text)] == ["networks.management.vlan", "vms.web1.dirty_rate"]


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_cluster(tmp_path / "nothere.yaml")
    assert str(info.value) == f"{tmp_path / 'nothere.yaml'}: cannot read the file: No such file or directory"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"cluster: lab\n\xff\xfe")
    with pytest.raises(ConfigError) as info:
        load_cluster(binary)
    assert str(info.value) == f"{binary}:2:1: not a text file (UTF-8): byte b'\\xff' here"


def test_a_key_that_is_a_mapping():
    assert problems_of_text("cluster: lab\nswitches:\n  ? {a: {b: 1}}\n  : {}\n") == [
        "c.yaml:3:5: a key must be a name, not a mapping or a list"]


def test_a_value_yaml_cannot_build():
    assert problems_of_text("cluster: !!int lab\n") == [
        "c.yaml:1:10: 'lab' is not a whole number, which its tag !!int asks for"]


def test_tab_indentation():
    assert problems_of_text("cluster: lab\nswitches:\n\ttor-a: {}\n") == [
        "c.yaml:3:1: while scanning for the next token found character '\\t' that cannot start any token"]


# ---- property: whatever the edit, a clean answer --------------------------------------------

# A few hundred cases by default; set VCLAB_HYPOTHESIS_EXAMPLES=5000 to hunt further.
EXAMPLES = int(os.environ.get("VCLAB_HYPOTHESIS_EXAMPLES", "300"))
_SAFE = YAML(typ="safe")
_BASE = _SAFE.load(DEFAULT.read_text())
_WORDS = ["tor-a", "tor-b", "esx1", "esx2", "web1", "vcenter", "array1", "management", "vmotion", "storage-a",
          "vm-web", "vmnic0", "lacp", "active-backup", "10Gbit", "4GiB", "200MB/s", "5ms", "25%", "10.10.0.0/24",
          "10.10.0.0/16", "rstp", "none", "Esx_1", "switch", "between", "primary", "nics", "networks", "host",
          "kind", "vm", "storage", "a-name-far-too-long", ""]
_scalars = st.one_of(st.sampled_from(_WORDS), st.integers(-5, 5000), st.integers(), st.booleans(), st.none(),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.sampled_from(_WORDS), inner, max_size=3)),
                       max_leaves=6)


def _containers(node, path=()):
    """Every dict and list in the document with its path."""
    if isinstance(node, (dict, list)):
        yield path, node
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            yield from _containers(v, path + (k,))


def _dump(data) -> str:
    out = io.StringIO()
    _SAFE.dump(data, out)
    return out.getvalue()


def _check_outcome(text: str) -> None:
    try:
        cluster = cluster_from_text(text, "mut.yaml")
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert p.file == "mut.yaml" and p.line is not None and p.line >= 1, p
            assert str(p).startswith(f"mut.yaml:{p.line}")
        return
    assert isinstance(cluster, Cluster)
    # A file that loads must also analyse: analysis trusts validation.
    assert all(isinstance(f, Finding) for f in analyse(cluster))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_default_loads_or_fails_cleanly(data):
    doc = copy.deepcopy(_BASE)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        path, node = data.draw(st.sampled_from(list(_containers(doc))), label="where")
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        edit = data.draw(st.sampled_from(["delete", "replace", "add"] if keys else ["add"]), label="edit")
        if edit == "add":
            value = data.draw(_values, label="value")
            if isinstance(node, dict):
                node[data.draw(st.one_of(st.sampled_from(_WORDS), _scalars), label="key")] = value
            else:
                node.append(value)
            continue
        key = data.draw(st.sampled_from(keys), label="key")
        if edit == "delete":
            del node[key]
        else:
            node[key] = data.draw(_values, label="value")
    _check_outcome(_dump(doc))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mangled_default_text_loads_or_fails_cleanly(data):
    text = DEFAULT.read_text()
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        at = data.draw(st.integers(0, len(text)), label="at")
        cut = data.draw(st.integers(0, 6), label="cut")
        insert = data.draw(st.sampled_from(["", ":", "-", "[", "]", "{", "}", "&a ", "*a", "\t", "  ", "\n",
                                            "#", "'", '"', "!!int ", "<<: ", "? ", "|", ",", "%"]), label="insert")
        text = text[:at] + insert + text[at + cut:]
    _check_outcome(text)


def test_nan_and_huge_numbers_dump_and_fail_cleanly():
    doc = copy.deepcopy(_BASE)
    doc["networks"]["management"]["vlan"] = math.nan
    doc["vms"]["web1"]["memory"] = 10**30
    _check_outcome(_dump(doc))
