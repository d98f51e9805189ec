"""The os-ken shell driven by fake events: what it sends, and in which order, with no switch."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from vclab.fabric.controller import app, core, model
from vclab.fabric.controller.model import Attachment, FabricSpec, Link, Network, Switch, Uplink
from vclab.fabric.controller.trace import link_down

OF = core.OFP13.ofproto
PARSER = core.OFP13.ofproto_parser
_xids = itertools.count(1)


def triangle() -> FabricSpec:
    def server(name: str, i: int, uplinks) -> Attachment:
        return Attachment(name, tuple(Uplink(s, p) for s, p in uplinks), (10,),
                          {10: (f"02:00:00:00:00:{i:02x}",)})
    return FabricSpec(
        switches=(Switch("a", 1), Switch("b", 2), Switch("c", 3)),
        links=(Link("ab", "a", 1, "b", 1), Link("bc", "b", 2, "c", 2), Link("ca", "c", 1, "a", 2)),
        attachments=(server("s1", 1, [("a", 10), ("b", 10)]),
                     server("s2", 2, [("b", 11), ("c", 11)])),
        networks=(Network("management", 10, "management", 10, 16),),
    )


class FakeDatapath:
    ofproto = OF
    ofproto_parser = PARSER

    def __init__(self, dpid: int) -> None:
        self.id = dpid
        self.sent: list = []

    def send_msg(self, msg) -> None:
        msg.xid = msg.xid or next(_xids)
        msg.serialize()
        self.sent.append(msg)


def port(no: int, live: bool = True, name: str = "") -> SimpleNamespace:
    state = OF.OFPPS_LIVE if live else OF.OFPPS_LINK_DOWN
    return SimpleNamespace(port_no=no, state=state, config=0, name=name.encode())


@pytest.fixture
def controller(tmp_path, monkeypatch):
    spec = triangle()
    path = tmp_path / "fabric.json"
    model.dump(spec, path)
    ctl = app.FabricController(fabric_file=str(path))
    dps = {s.name: FakeDatapath(s.dpid) for s in spec.switches}
    for s in spec.switches:
        ports = [port(p) for p in ctl._spec_ports(s.name)]
        ctl.port_description(SimpleNamespace(msg=SimpleNamespace(datapath=dps[s.name],
                                                                 body=ports)))
    return ctl, spec, dps


def kinds(msgs) -> list[str]:
    return [type(m).__name__ for m in msgs]


def test_connect_installs_everything_and_probes_the_cabling(controller):
    ctl, spec, dps = controller
    sent = dps["a"].sent
    assert "OFPGroupMod" in kinds(sent) and "OFPFlowMod" in kinds(sent)
    lldp_out = [m for m in sent if type(m).__name__ == "OFPPacketOut"]
    assert {m.actions[0].port for m in lldp_out} == set(spec.fabric_ports("a"))
    assert app.parse_lldp(lldp_out[0].data) == (spec.switch("a").dpid,
                                               lldp_out[0].actions[0].port)


def test_port_down_moves_the_flood_tree_in_two_barriered_steps(controller):
    ctl, spec, dps = controller
    for dp in dps.values():
        dp.sent.clear()
    lk = next(lk for lk in spec.links if lk.name == "ab")
    dp_a = dps["a"]
    ctl.port_status(SimpleNamespace(msg=SimpleNamespace(datapath=dp_a,
                                                         desc=port(lk.a_port, live=False))))
    # Step 1: the shared edges only (a-c), then a barrier on every switch that changed.
    assert ctl.barriers and ctl.tree == frozenset({frozenset("ac")})
    step1 = {name: list(dp.sent) for name, dp in dps.items()}
    assert all(kinds(msgs)[-1] == "OFPBarrierRequest" for msgs in step1.values() if msgs)
    assert not any(m.command == OF.OFPGC_DELETE for msgs in step1.values() for m in msgs
                   if type(m).__name__ == "OFPGroupMod")
    # Step 2 only once every barrier came back.
    for name, xid in sorted(ctl.barriers):
        ctl.barrier_reply(SimpleNamespace(msg=SimpleNamespace(datapath=dps[name], xid=xid)))
    assert ctl.tree == core.flood_tree(spec, frozenset(link_down(spec, "ab")))
    assert not ctl.barriers


def test_port_up_again_restores_the_first_tree(controller):
    ctl, spec, dps = controller
    first = ctl.tree
    lk = next(lk for lk in spec.links if lk.name == "ab")
    for live in (False, True):
        ctl.port_status(SimpleNamespace(msg=SimpleNamespace(
            datapath=dps["a"], desc=port(lk.a_port, live=live))))
        while ctl.barriers:
            name, xid = sorted(ctl.barriers)[0]
            ctl.barrier_reply(SimpleNamespace(msg=SimpleNamespace(datapath=dps[name], xid=xid)))
    assert ctl.tree == first


def test_unicast_is_never_touched_by_port_status(controller):
    ctl, spec, dps = controller
    for dp in dps.values():
        dp.sent.clear()
    nic = spec.attachments[0].uplinks[0]
    ctl.port_status(SimpleNamespace(msg=SimpleNamespace(datapath=dps[nic.switch],
                                                         desc=port(nic.port, live=False))))
    assert all(not dp.sent for dp in dps.values())  # the datapath already failed over


def test_disconnect_forgets_the_switch_and_reconnect_overwrites(controller):
    ctl, spec, dps = controller
    ctl.switch_gone(SimpleNamespace(datapath=dps["b"]))
    assert "b" not in ctl.datapaths and "b" not in ctl.installed
    dps["b"].sent.clear()
    ctl.port_description(SimpleNamespace(msg=SimpleNamespace(
        datapath=dps["b"], body=[port(p) for p in ctl._spec_ports("b")])))
    groups = [m for m in dps["b"].sent if type(m).__name__ == "OFPGroupMod"]
    assert groups[0].command == OF.OFPGC_MODIFY and groups[1].command == OF.OFPGC_ADD
    assert not any(getattr(m, "command", None) == OF.OFPFC_DELETE for m in dps["b"].sent)


def test_port_live_follows_ovs_flags():
    assert app.port_live(port(1))
    assert not app.port_live(port(1, live=False))
    bfd_down = SimpleNamespace(port_no=1, state=0, config=0)  # carrier up, LIVE cleared
    assert not app.port_live(bfd_down)
