"""Cluster analysis: the shipped topologies match the analysis their header promises, and each
check fires on a small change to the default cluster and stays quiet without it."""

from __future__ import annotations

import copy
import re
from collections import Counter
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from vclab.topology.analysis import Finding, analyse, failures
from vclab.topology.loader import load_cluster
from vclab.topology.spec import Cluster, semantic_problems

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
SHIPPED = sorted(TOPOLOGIES.glob("*.yaml"))
_EXPECT = re.compile(r"^#\s+(error|warning|note)\s+(\S+)\s+(\S+)")


def expected_from_header(path: Path) -> list[tuple[str, str, str]]:
    """The `# Expected analysis` block of a shipped file: (severity, code, subject) per line."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Expected analysis"))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("#"):
            break
        m = _EXPECT.match(line)
        if m:
            out.append(m.groups())
    return out


def triples(findings: list[Finding]) -> Counter:
    return Counter((f.severity, f.code, f.subject) for f in findings)


def test_the_four_shipped_topologies_are_there():
    assert {p.name for p in SHIPPED} >= {"default.yaml", "single-switch.yaml", "no-team.yaml",
                                         "missing-vmotion.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_topology_matches_its_header(path):
    assert triples(analyse(load_cluster(path))) == Counter(expected_from_header(path))


def test_shipped_expectations_as_written_here():
    # The same facts spelled out, so a header edited together with a bug cannot hide it.
    def get(name):
        return sorted(triples(analyse(load_cluster(TOPOLOGIES / name))).elements())

    notes = [("note", "storage-path-lost", s) for s in ("array1.storage-a", "array1.storage-b", "tor-a", "tor-b")]
    assert get("default.yaml") == sorted(notes)
    assert get("missing-vmotion.yaml") == sorted([("error", "missing-network", "esx3"), *notes])
    assert get("single-switch.yaml") == sorted([
        ("error", "single-point-of-failure", "tor-a"),
        ("note", "storage-path-lost", "array1.storage-a"),
        ("note", "storage-path-lost", "array1.storage-b"),
        ("warning", "management-not-redundant", "vcenter")])
    assert get("no-team.yaml") == sorted([
        *(("error", "single-point-of-failure", s) for s in ("tor-a", "tor-b", "esx1.vmnic0", "esx2.vmnic0", "esx3.vmnic0")),
        *notes])


def by_subject(findings: list[Finding], code: str) -> dict[str, Finding]:
    return {f.subject: f for f in findings if f.code == code}


def test_messages_name_who_loses_what():
    spof = by_subject(analyse(load_cluster(TOPOLOGIES / "no-team.yaml")), "single-point-of-failure")
    assert spof["tor-a"].message == ("losing switch tor-a cuts esx1, esx3 from management, vmotion, vm-web, "
                                     "array1's storage; web1 from vm-web")
    assert spof["tor-a"].path == ("switches", "tor-a")
    assert spof["esx2.vmnic0"].path == ("hypervisors", "esx2", "nics", "vmnic0")
    assert spof["esx3.vmnic0"].message == ("losing NIC esx3.vmnic0 cuts esx3 from management, vmotion, "
                                           "vm-web, array1's storage")
    notes = by_subject(analyse(load_cluster(TOPOLOGIES / "default.yaml")), "storage-path-lost")
    assert notes["array1.storage-a"].path == ("storage", "array1", "portals", "storage-a")
    assert "esx1, esx2, esx3 only storage-b to array1" in notes["array1.storage-a"].message
    missing = by_subject(analyse(load_cluster(TOPOLOGIES / "missing-vmotion.yaml")), "missing-network")
    assert missing["esx3"].message == "esx3 is not on vmotion: VMs cannot migrate to or from esx3"
    assert missing["esx3"].path == ("hypervisors", "esx3", "networks")


# ---- variations on the default, built in memory -------------------------------------------

def default_data() -> dict:
    return YAML(typ="safe").load((TOPOLOGIES / "default.yaml").read_text())


def cluster(data: dict) -> Cluster:
    c = Cluster.model_validate(data)
    assert semantic_problems(c) == []
    return c


def changed(**sections) -> dict:
    data = copy.deepcopy(default_data())
    data.update(sections)
    return data


def test_failures_cover_every_component_in_file_order():
    names = [(f.kind, f.name) for f in failures(load_cluster(TOPOLOGIES / "default.yaml"))]
    assert names == [
        ("switch", "tor-a"), ("switch", "tor-b"), ("link", "tor-a/tor-b#1"), ("link", "tor-a/tor-b#2"),
        *(("NIC", f"esx{i}.vmnic{j}") for i in (1, 2, 3) for j in (0, 1)),
        ("NIC", "vcenter.eth0"), ("NIC", "vcenter.eth1"),
        ("portal", "array1.storage-a"), ("portal", "array1.storage-b")]


def test_finding_is_frozen_and_prints_plainly():
    f = Finding("error", "missing-network", "esx3", "esx3 is not on vmotion", ("hypervisors", "esx3"))
    assert str(f) == "error: missing-network: esx3: esx3 is not on vmotion"
    with pytest.raises(Exception):
        f.severity = "note"  # type: ignore[misc]


def test_single_link_is_a_spof_only_for_whoever_is_active_across_it():
    data = changed(links=[["tor-a", "tor-b"]])
    # Every team's active NIC is on tor-a: the split fabric only takes the storage-b portal away.
    found = analyse(cluster(data))
    assert triples(found)[("note", "storage-path-lost", "tor-a/tor-b#1")] == 1
    assert not by_subject(found, "single-point-of-failure")
    # esx2 prefers its tor-b NIC: the team does not see the split, so esx2 is cut off.
    data["hypervisors"]["esx2"] = {**data["hypervisors"]["esx2"], "team": {"mode": "active-backup", "primary": "vmnic1"}}
    spof = by_subject(analyse(cluster(data)), "single-point-of-failure")
    assert spof["tor-a/tor-b#1"].message == ("losing link tor-a/tor-b#1 cuts esx2 from management, vmotion, "
                                             "vm-web; web2 from vm-web")
    assert spof["tor-a/tor-b#1"].path == ("links", 0)


def test_array_with_one_portal_hangs_on_its_switch():
    data = changed()
    data["storage"]["array1"]["portals"] = {"storage-a": "tor-a"}
    found = analyse(cluster(data))
    spof = by_subject(found, "single-point-of-failure")
    assert set(spof) == {"tor-a", "array1.storage-a"}
    assert spof["array1.storage-a"].message == "losing portal array1.storage-a cuts esx1, esx2, esx3 from array1's storage"
    assert not by_subject(found, "storage-path-lost")


def test_management_server_with_one_nic():
    data = changed()
    data["management"]["vcenter"]["nics"] = {"eth0": "tor-b"}
    found = analyse(cluster(data))
    assert by_subject(found, "management-not-redundant")["vcenter"].message == (
        "management server vcenter has a single NIC (eth0): losing it or its switch cuts management off")
    spof = by_subject(found, "single-point-of-failure")
    assert spof["vcenter.eth0"].message == "losing NIC vcenter.eth0 cuts vcenter from management"
    assert spof["tor-b"].message == "losing switch tor-b cuts vcenter from management"
    assert set(spof) == {"vcenter.eth0", "tor-b"}


def test_management_without_share_while_vms_have_one():
    data = changed()
    del data["networks"]["management"]["share"]
    found = by_subject(analyse(cluster(data)), "management-not-isolated")
    assert list(found) == ["management"]
    assert found["management"].severity == "warning"
    assert found["management"].path == ("networks", "management")
    assert "VM network vm-web has one" in found["management"].message
    # No shares anywhere: nothing is guaranteed to anyone, nothing to flag.
    for net in data["networks"].values():
        net.pop("share", None)
    assert not by_subject(analyse(cluster(data)), "management-not-isolated")


def test_vm_on_a_network_its_host_lacks():
    data = changed()
    data["networks"]["vm-db"] = {"vlan": 101, "subnet": "10.101.0.0/24", "kind": "vm"}
    data["hypervisors"]["esx2"] = {**data["hypervisors"]["esx2"],
                                   "networks": [*data["hypervisors"]["esx2"]["networks"], "vm-db"]}
    data["vms"]["db1"] = {"host": "esx2", "networks": ["vm-db"]}
    data["vms"]["web1"]["networks"] = ["vm-web", "vm-db"]
    found = analyse(cluster(data))
    missing = {f.subject: f.message for f in found if f.code == "missing-network"}
    assert missing == {
        "esx1": "esx1 is not on VM network vm-db, used by web1, db1: web1 on it cannot reach vm-db",
        "esx3": "esx3 is not on VM network vm-db, used by web1, db1: web1, db1 cannot run there",
    }
    # web1 cannot be on vm-db at all: that is the missing network, not a point of failure.
    assert not by_subject(found, "single-point-of-failure")


def test_cluster_without_vmotion_or_storage_networks():
    data = changed()
    del data["networks"]["vmotion"]
    for hv in ("esx1", "esx2", "esx3"):
        data["hypervisors"][hv] = {**data["hypervisors"][hv],
                                   "networks": ["management", "storage-a", "storage-b", "vm-web"]}
    found = [f for f in analyse(cluster(data)) if f.code == "missing-network"]
    assert [(f.subject, f.message, f.path) for f in found] == [
        ("lab", "the cluster has no vmotion network, which every hypervisor needs", ("networks",))]


def test_storage_network_missing_on_one_hypervisor():
    data = changed()
    data["hypervisors"]["esx3"] = {**data["hypervisors"]["esx3"],
                                   "networks": ["management", "vmotion", "storage-a", "vm-web"]}
    found = analyse(cluster(data))
    assert by_subject(found, "missing-network")["esx3"].message == (
        "esx3 is not on storage-b (a storage network): esx3 has no path to the datastores behind storage-b")
    # With one path only, losing tor-a (where storage-a's portal is) cuts esx3 from the array.
    spof = by_subject(found, "single-point-of-failure")
    assert spof["tor-a"].message == "losing switch tor-a cuts esx3 from array1's storage"
    assert spof["array1.storage-a"].message == "losing portal array1.storage-a cuts esx3 from array1's storage"


def test_split_fabric_is_unreachable_before_anything_fails():
    data = changed(links=[])
    data["hypervisors"]["esx2"] = {**data["hypervisors"]["esx2"], "team": {"primary": "vmnic1"}}
    found = analyse(cluster(data))
    unreachable = [(f.subject, f.message) for f in found if f.code == "unreachable"]
    assert unreachable == [
        ("esx2", "esx2 cannot reach every member of management, vmotion, vm-web even with nothing "
                 "failed: the switches it needs are not linked"),
        ("web2", "web2 cannot reach every member of vm-web even with nothing failed: the switches "
                 "it needs are not linked")]
    # Split networks get no single-failure verdict; storage is judged per path: each hypervisor
    # reaches only the portal on its active NIC's switch, so that portal is its last path.
    spof = by_subject(found, "single-point-of-failure")
    assert {s: f.message for s, f in spof.items()} == {
        "array1.storage-a": "losing portal array1.storage-a cuts esx1, esx3 from array1's storage",
        "array1.storage-b": "losing portal array1.storage-b cuts esx2 from array1's storage"}


def test_array_out_of_reach_before_anything_fails():
    data = changed(links=[])
    data["storage"]["array1"]["portals"] = {"storage-b": "tor-b"}
    found = [(f.subject, f.message) for f in analyse(cluster(data)) if f.code == "unreachable"]
    assert found == [(f"esx{i}", f"esx{i} has no storage path to array1 even with nothing failed")
                     for i in (1, 2, 3)]


def test_management_server_on_no_management_network():
    data = changed()
    data["management"]["vcenter"]["networks"] = ["vmotion"]
    missing = by_subject(analyse(cluster(data)), "missing-network")
    assert missing["vcenter"].message == "management server vcenter is on no management network"
    assert missing["vcenter"].path == ("management", "vcenter", "networks")


def test_analysis_needs_no_hypervisors():
    data = {"cluster": "tiny", "networks": {"management": {"vlan": 10, "subnet": "10.10.0.0/24"}},
            "switches": {"sw1": {}}}
    assert analyse(cluster(data)) == []


def test_errors_come_first_then_warnings_then_notes():
    found = analyse(load_cluster(TOPOLOGIES / "single-switch.yaml"))
    assert [f.severity for f in found] == ["error", "warning", "note", "note"]


def test_every_finding_points_at_a_line_of_its_file():
    # The CLI prints file:line from a finding's path, the way validation problems are printed.
    from vclab.yamlfile import load_yaml, position

    path = TOPOLOGIES / "no-team.yaml"
    lines = path.read_text().splitlines()
    doc = load_yaml(path)
    where = {f.subject: position(doc, f.path) for f in analyse(load_cluster(path))}
    assert lines[where["tor-b"][0] - 1].strip().startswith("tor-b:")
    assert lines[where["esx2.vmnic0"][0] - 1].strip() == "nics: {vmnic0: tor-b}"
    assert where["esx2.vmnic0"][1] == lines[where["esx2.vmnic0"][0] - 1].index("vmnic0") + 1
    assert lines[where["array1.storage-b"][0] - 1].strip() == "portals: {storage-a: tor-a, storage-b: tor-b}"
