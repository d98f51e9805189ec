"""The controller's input file: JSON round trip and every mistake reported at once."""

from __future__ import annotations

import json

import pytest

from vclab.fabric.controller import model
from vclab.errors import ConfigError

DOC = {
    "switches": [{"name": "tor-a", "dpid": 1}, {"name": "tor-b", "dpid": 2}],
    "links": [{"name": "isl1", "a": "tor-a", "a_port": 1, "b": "tor-b", "b_port": 1}],
    "attachments": [{"server": "esx1", "uplinks": [["tor-a", 10], ["tor-b", 10, "vcc-b10"]],
                     "vlans": [10, 20], "macs": {"10": ["02:00:00:00:01:0A"]}}],
    "networks": [{"name": "management", "vlan": 10, "kind": "management", "share": 10,
                  "dscp": 16},
                 {"name": "vmotion", "vlan": 20, "kind": "vmotion", "share": 30, "dscp": 10,
                  "cap_mbps": 500}],
    "options": {"use_set_queue": True},
}


def test_short_form_loads_and_round_trips(tmp_path):
    spec = model.from_dict(DOC)
    att = spec.attachments[0]
    assert att.uplinks[1] == model.Uplink("tor-b", 10, "vcc-b10")
    assert att.macs == {10: ("02:00:00:00:01:0a",)}  # lower-cased, int VLAN keys
    assert spec.options.use_set_queue and spec.network(20).cap_mbps == 500
    path = tmp_path / "fabric.json"
    model.dump(spec, path)
    assert model.load(path) == spec
    assert json.loads(path.read_text())["attachments"][0]["macs"] == {"10": ["02:00:00:00:01:0a"]}


def test_every_problem_is_reported_with_its_field():
    doc = json.loads(json.dumps(DOC))
    doc["links"].append({"name": "bad", "a": "tor-a", "a_port": 1, "b": "tor-c", "b_port": 2})
    doc["attachments"][0]["vlans"].append(99)
    doc["attachments"][0]["macs"]["10"].append("not-a-mac")
    doc["networks"][1]["dscp"] = 16
    with pytest.raises(ConfigError) as err:
        model.from_dict(doc, file="fabric.json")
    text = str(err.value)
    assert "links.1.a: tor-a port 1 already used by isl1" in text
    assert "links.1.b: unknown switch 'tor-c'" in text
    assert "vlan 99 is not a network" in text
    assert "'not-a-mac' is not a MAC" in text
    assert "dscp 16 shared" in text
    assert text.startswith("fabric.json:")


def test_malformed_file_names_the_file():
    with pytest.raises(ConfigError, match="malformed"):
        model.loads('{"switches": [{"name": "a"}]}', "x.json")


def test_default_dscp_gives_each_network_its_own_value():
    taken: set[int] = set()
    for kind in ("management", "storage", "storage", "vmotion", "vm", "other"):
        taken.add(model.default_dscp(kind, taken))
    assert sorted(taken) == [8, 10, 16, 18, 26, 28]
