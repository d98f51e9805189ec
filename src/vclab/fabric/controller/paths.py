"""Paths through the fabric from the cabling alone: hop counts, each switch's ranked choices per
delivery phase, the flood tree. Pure, and no OpenFlow here: core.py turns these into messages
(see its docstring for the phase scheme that keeps unicast loop-free)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vclab.fabric.controller.model import Attachment, FabricSpec

Down = frozenset[tuple[str, int]]  # (switch name, port) pairs whose link is not live


@dataclass(frozen=True)
class Route:
    """How `switch` sends frames for `server` in delivery `phase`: port lists, best first."""

    switch: str
    server: str
    phase: int
    main: tuple[int, ...]  # fabric ports; or, on the phase's target switch, the server port
    delivers: bool  # this switch holds the phase's uplink: deliver, else move to next phase
    primary_peer: str | None  # neighbour of the first choice (None when delivering here)
    trunk: tuple[int, ...]  # every port to primary_peer: frames from them take `backup`
    backup: tuple[int, ...]


def _neighbours(spec: FabricSpec, down: Down = frozenset()) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {s.name: set() for s in spec.switches}
    for lk in spec.links:
        if (lk.a, lk.a_port) not in down and (lk.b, lk.b_port) not in down:
            graph[lk.a].add(lk.b)
            graph[lk.b].add(lk.a)
    return graph


def hops_to(spec: FabricSpec, target: str, avoid: Iterable[str] = ()) -> dict[str, int]:
    """Hop count from each switch (not in `avoid`) to `target`, over the whole cabling."""
    avoid = set(avoid)
    if target in avoid:
        return {}
    graph = _neighbours(spec)
    best = {target: 0}
    queue = [target]
    while queue:
        sw = queue.pop(0)
        for peer in sorted(graph[sw]):
            if peer not in best and peer not in avoid:
                best[peer] = best[sw] + 1
                queue.append(peer)
    return best


def _ranked(spec: FabricSpec, switch: str, target: str, avoid: set[str]) -> list[tuple]:
    """(cost, cable order, port, peer) for each cable out of `switch` that reaches `target`
    without passing through `switch` or `avoid` again."""
    costs = hops_to(spec, target, avoid | {switch})
    out = []
    for i, lk in enumerate(spec.links):
        if switch in (lk.a, lk.b):
            port, peer, _ = lk.end(switch)
            if peer in costs:
                out.append((1 + costs[peer], i, port, peer))
    return sorted(out)


def route(spec: FabricSpec, att: Attachment, switch: str, phase: int) -> Route:
    target = att.uplinks[phase]
    if target.switch == switch:
        return Route(switch, att.server, phase, (target.port,), True, None, (), ())
    main = _ranked(spec, switch, target.switch, set())
    peer = main[0][3] if main else None
    trunk = tuple(port for _, _, port, q in main if q == peer)
    backup = tuple(port for _, _, port, _ in _ranked(spec, switch, target.switch, {peer})
                   ) if peer else ()
    return Route(switch, att.server, phase, tuple(r[2] for r in main), False, peer, trunk, backup)


def flood_tree(spec: FabricSpec, down: Down = frozenset()) -> frozenset[frozenset[str]]:
    """Switch pairs that carry floods: BFS over live links from the lowest dpid (per island)."""
    graph = _neighbours(spec, down)
    dpid = {s.name: s.dpid for s in spec.switches}
    edges: set[frozenset[str]] = set()
    seen: set[str] = set()
    for root in sorted(graph, key=dpid.__getitem__):
        if root in seen:
            continue
        seen.add(root)
        queue = [root]
        while queue:
            sw = queue.pop(0)
            for peer in sorted(graph[sw], key=dpid.__getitem__):
                if peer not in seen:
                    seen.add(peer)
                    edges.add(frozenset((sw, peer)))
                    queue.append(peer)
    return frozenset(edges)


def neighbours_of(spec: FabricSpec, switch: str) -> list[str]:
    """Neighbour switches in cabling order (each once, however many parallel links)."""
    seen: list[str] = []
    for lk in spec.links_of(switch):
        peer = lk.end(switch)[1]
        if peer not in seen:
            seen.append(peer)
    return seen


def trunk_ports(spec: FabricSpec, switch: str, peer: str) -> list[int]:
    return [lk.end(switch)[0] for lk in spec.links_of(switch) if lk.end(switch)[1] == peer]


def _index(spec: FabricSpec, switch: str) -> int:
    return [s.name for s in spec.switches].index(switch)
