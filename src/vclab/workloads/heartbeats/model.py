"""vSphere HA (FDM) heartbeats as a pure state machine: events in, declarations out.

Each hypervisor runs one agent: one is the primary, the others secondaries. The primary sends a
heartbeat to every secondary each second and watches theirs; a secondary sends to the primary.
The management server (vCenter) gets a slower heartbeat from every hypervisor (vpxa) and marks
a host "not responding" when they stop. `HaAgent.handle(t, event)` is all the logic the agent
program (heartbeats.py) runs; `simulate_cluster` drives a whole cluster in virtual time, which
is how the unit tests check the published timelines.

Timeline the defaults reproduce (T0 = last heartbeat heard):
  secondary fails:    T3 heartbeat lost, T10 unreachable (primary pings its management address
                      for 5 s), T15 failed (hostDown) - or fdm_unreachable if it answered pings
  secondary isolated: T10 election, T25 elects itself primary and pings the isolation address,
                      T30 isolated, T60 isolation response
  primary isolated:   T3 (no secondary heard) pings the isolation address, T8 isolated, T38 response
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

# Published vSphere HA defaults. Sources: vSphere Availability guide ("heartbeats, by default
# every second"; "a 15-second period elapses without the receipt of heartbeats from a host, and
# the host cannot be pinged, the host is declared as failed"); D. Epping, "vSphere 5.0:
# das.failuredetectiontime, what happened?" (VMware blog 2011) and the HA deepdive timelines
# (T3s datastore-heartbeat check, T10s unreachable + 5 s of pings, T15s dead; slave isolation
# T10s election, T25s elects itself, T30s isolated; master isolation T0 pings, T5s isolated);
# vSphere API ClusterDasVmSettingsIsolationResponse ("isolation response workflow after a 30
# second delay", das.config.fdm.isolationPolicyDelaySec); vCenter host heartbeat: vpxa sends a
# UDP heartbeat every 10 s, vpxd marks the host not responding after 60 s
# (config.vpxd.heartbeat.notRespondingTimeout).
HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_LOST_S = 3.0
UNREACHABLE_S = 10.0
FAILED_S = 15.0
PING_INTERVAL_S = 1.0
PING_TIMEOUT_S = 1.0
ELECTION_AFTER_S = 10.0
ELECTION_S = 15.0
ISOLATION_PING_S = 5.0
ISOLATION_POLICY_DELAY_S = 30.0
MANAGER_HEARTBEAT_INTERVAL_S = 10.0
NOT_RESPONDING_S = 60.0

PRIMARY, SECONDARY, CANDIDATE, MANAGER = "primary", "secondary", "candidate", "manager"
ROLES = (PRIMARY, SECONDARY, MANAGER)  # a candidate is a secondary during an election
FDM, VPXA = "fdm", "vpxa"  # heartbeat kinds: between HA agents; hypervisor -> management server
ISOLATION = "isolation"  # ping target key of the isolation address

_EPS = 1e-9  # timers are compared on float clocks: 1.9 + 0.1 must reach 2.0

# Declarations that claim something is wrong: what "false declarations" counts.
ALARMS = ("failed", "fdm_unreachable", "isolated", "isolation_response", "not_responding")


class HaConfig(BaseModel):
    """Timers of one HA cluster, in seconds, defaults as published by VMware (see above)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_interval_s: float = Field(HEARTBEAT_INTERVAL_S, gt=0)
    heartbeat_lost_s: float = Field(HEARTBEAT_LOST_S, gt=0)
    unreachable_s: float = Field(UNREACHABLE_S, gt=0)
    failed_s: float = Field(FAILED_S, gt=0)
    ping_interval_s: float = Field(PING_INTERVAL_S, gt=0)
    # How long one echo may take. Not part of the published timeline; kept when the timers
    # are scaled down, so a busy machine's slow reply is not taken for isolation.
    ping_timeout_s: float = Field(PING_TIMEOUT_S, gt=0)
    election_after_s: float = Field(ELECTION_AFTER_S, gt=0)
    election_s: float = Field(ELECTION_S, gt=0)
    isolation_ping_s: float = Field(ISOLATION_PING_S, gt=0)
    isolation_policy_delay_s: float = Field(ISOLATION_POLICY_DELAY_S, ge=0)
    manager_heartbeat_interval_s: float = Field(MANAGER_HEARTBEAT_INTERVAL_S, gt=0)
    not_responding_s: float = Field(NOT_RESPONDING_S, gt=0)

    def scaled(self, factor: float) -> HaConfig:
        """Every timer times `factor`: the same timeline, faster (tests, quick benches).
        The ping timeout stays: a reply takes as long as it takes."""
        return HaConfig(**{k: v if k == "ping_timeout_s" else v * factor
                           for k, v in self.model_dump().items()})


# -- events ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Heartbeat:
    sender: str
    role: str  # the sender's role when it sent
    kind: str = FDM


@dataclass(frozen=True)
class PingResult:
    target: str  # host name, or ISOLATION
    ok: bool


@dataclass(frozen=True)
class Tick:
    pass


Event = Heartbeat | PingResult | Tick


@dataclass(frozen=True)
class Declaration:
    t: float
    agent: str  # who declared
    kind: str
    subject: str  # the host it is about (the agent itself for isolation)


@dataclass
class Step:
    """What the agent must do after an event."""

    declarations: list[Declaration] = field(default_factory=list)
    send: list[tuple[str, str]] = field(default_factory=list)  # (to, kind)
    ping: list[str] = field(default_factory=list)  # host names or ISOLATION


@dataclass
class _Watch:
    """What the primary knows of one secondary (or the manager of one hypervisor)."""

    last: float
    state: str = "alive"  # alive | lost | unreachable | failed | fdm_unreachable
    ping_ok: bool = False
    next_ping: float = 0.0


class HaAgent:
    """One FDM agent (role primary/secondary) or the management server's watcher (manager)."""

    def __init__(self, name: str, role: str, hosts: Iterable[str], config: HaConfig | None = None,
                 now: float = 0.0, manager: str | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of primary, secondary, manager")
        self.name, self.role, self.cfg, self.manager = name, role, config or HaConfig(), manager
        self.hosts = sorted(h for h in hosts if h != name)  # the other hypervisors
        self.peers = {h: _Watch(now) for h in self.hosts}
        self.primary: str | None = None
        self.last_primary = now
        self.election_end: float | None = None
        self.election_start = now
        self.candidates: dict[str, float] = {}
        self.iso = "ok"  # ok | checking | reachable | isolated | responded
        self.iso_deadline = self.iso_response_at = self.iso_next_ping = 0.0
        self.next_hb = now
        self.next_vpxa = now

    # -- helpers ----------------------------------------------------------------------------
    def _declare(self, step: Step, t: float, kind: str, subject: str) -> None:
        step.declarations.append(Declaration(t, self.name, kind, subject))

    def _become_primary(self, t: float, heard: dict[str, float]) -> None:
        self.role, self.primary = PRIMARY, None
        self.peers = {h: _Watch(t, "alive" if h in heard else "lost") for h in self.hosts}
        self.iso = "ok"

    # -- the one entry point ----------------------------------------------------------------
    def handle(self, t: float, event: Event) -> Step:
        step = Step()
        if isinstance(event, Heartbeat):
            self._heartbeat(t, event, step)
        elif isinstance(event, PingResult):
            self._ping_result(t, event, step)
        self._timers(t, step)
        return step

    def _heartbeat(self, t: float, hb: Heartbeat, step: Step) -> None:
        if self.role == MANAGER:
            if hb.kind == VPXA:
                w = self.peers.setdefault(hb.sender, _Watch(t))
                w.last = t
                if w.state != "alive":
                    w.state = "alive"
                    self._declare(step, t, "responding", hb.sender)
            return
        if hb.kind != FDM or hb.sender not in self.peers:
            return
        if self.role == PRIMARY:
            if hb.role == PRIMARY and hb.sender > self.name:
                # Two primaries after a partition heals: the higher id wins (FDM prefers the
                # host with most datastores, then the highest managed object id).
                self.role, self.primary, self.last_primary = SECONDARY, hb.sender, t
                self.iso = "ok"
                self._declare(step, t, "stepped_down", hb.sender)
                return
            w = self.peers[hb.sender]
            w.last = t
            if w.state != "alive":
                if w.state != "lost":
                    self._declare(step, t, "alive", hb.sender)
                w.state = "alive"
            if self.iso in ("isolated", "responded"):
                self._declare(step, t, "isolation_ended", self.name)
            self.iso = "ok"
            return
        # secondary
        if hb.role == PRIMARY:
            if self.primary != hb.sender or self.election_end is not None:
                self._declare(step, t, "joined", hb.sender)
            self.primary, self.last_primary, self.election_end = hb.sender, t, None
        elif hb.role == CANDIDATE and self.election_end is not None:
            self.candidates[hb.sender] = t

    def _ping_result(self, t: float, res: PingResult, step: Step) -> None:
        if res.target == ISOLATION:
            if res.ok and self.iso == "checking":
                self.iso = "reachable"
            elif res.ok and self.iso in ("isolated", "responded"):
                # FDM stops the isolation workflow once the isolation address answers again.
                self.iso = "reachable"
                self._declare(step, t, "isolation_ended", self.name)
        elif res.target in self.peers and res.ok:
            self.peers[res.target].ping_ok = True

    def _timers(self, t: float, step: Step) -> None:
        cfg = self.cfg
        if self.role == MANAGER:
            for host, w in self.peers.items():
                if w.state == "alive" and t - w.last + _EPS >= cfg.not_responding_s:
                    w.state = "not_responding"
                    self._declare(step, t, "not_responding", host)
            return
        if self.manager and t + _EPS >= self.next_vpxa:
            step.send.append((self.manager, VPXA))
            self.next_vpxa = max(self.next_vpxa + cfg.manager_heartbeat_interval_s, t)
        if self.role == SECONDARY:
            self._secondary_timers(t, step)
        if self.role == PRIMARY:
            self._primary_timers(t, step)
        if t + _EPS >= self.next_hb:
            if self.role == PRIMARY:
                step.send += [(h, FDM) for h in self.hosts]
            elif self.election_end is not None or self.primary is None:
                step.send += [(h, FDM) for h in self.hosts]
            else:
                step.send.append((self.primary, FDM))
            # Keep the cadence; after a long stall send once and carry on from now.
            self.next_hb += cfg.heartbeat_interval_s
            if self.next_hb <= t + _EPS:
                self.next_hb = t + cfg.heartbeat_interval_s

    @property
    def sending_role(self) -> str:
        """The role heartbeats carry: a secondary in an election announces itself a candidate."""
        return CANDIDATE if self.role == SECONDARY and self.election_end is not None else self.role

    def _secondary_timers(self, t: float, step: Step) -> None:
        cfg = self.cfg
        if self.election_end is None:
            if t - self.last_primary + _EPS >= cfg.election_after_s:
                self.election_start, self.election_end = t, t + cfg.election_s
                self.candidates = {}
                self._declare(step, t, "election", self.name)
            return
        if t + _EPS < self.election_end:
            return
        heard = {c: tc for c, tc in self.candidates.items() if tc >= self.election_start}
        self.election_end = None
        if max([*heard, self.name]) == self.name:
            self._become_primary(t, heard)
            self._declare(step, t, "elected", self.name)
            # Primary timers now see every host it did not hear as lost: with none heard it
            # pings the isolation address at once (T25 in the published timeline).
            self.next_hb = t
        else:
            self.primary, self.last_primary = None, t  # wait for the winner's heartbeat

    def _primary_timers(self, t: float, step: Step) -> None:
        cfg = self.cfg
        isolated = self.iso in ("isolated", "responded")
        for host, w in self.peers.items():
            silent = t - w.last + _EPS
            if isolated:
                continue  # an isolated primary cannot tell failed hosts from its own isolation
            if w.state == "alive" and silent >= cfg.heartbeat_lost_s:
                w.state = "lost"
                self._declare(step, t, "heartbeat_lost", host)
            if w.state == "lost" and silent >= cfg.unreachable_s:
                w.state, w.ping_ok, w.next_ping = "unreachable", False, t
                self._declare(step, t, "unreachable", host)
            if w.state == "unreachable":
                if silent >= cfg.failed_s:
                    w.state = "fdm_unreachable" if w.ping_ok else "failed"
                    self._declare(step, t, w.state, host)
                elif t + _EPS >= w.next_ping:
                    step.ping.append(host)
                    w.next_ping = t + cfg.ping_interval_s
        if not self.peers:
            return
        if self.iso == "ok" and all(w.state != "alive" for w in self.peers.values()):
            self.iso, self.iso_next_ping = "checking", t
            self.iso_deadline = t + cfg.isolation_ping_s
        if self.iso == "checking" and t + _EPS >= self.iso_deadline:
            self.iso, self.iso_response_at = "isolated", t + cfg.isolation_policy_delay_s
            self._declare(step, t, "isolated", self.name)
        if self.iso == "isolated" and t + _EPS >= self.iso_response_at:
            self.iso = "responded"
            self._declare(step, t, "isolation_response", self.name)
        if self.iso in ("checking", "isolated", "responded") and t + _EPS >= self.iso_next_ping:
            step.ping.append(ISOLATION)
            self.iso_next_ping = t + cfg.ping_interval_s


# -- metrics ----------------------------------------------------------------------------------

def detection_times(declarations: Iterable[Declaration], failures: dict[str, float],
                    kind: str = "failed", by: str | None = None) -> dict[str, float | None]:
    """Seconds from each real failure (host -> time) to the first `kind` declaration about it
    (by agent `by`, or anyone); None if it was never declared."""
    out: dict[str, float | None] = {}
    for host, t_fail in failures.items():
        times = [d.t for d in declarations
                 if d.kind == kind and d.subject == host and d.t >= t_fail
                 and (by is None or d.agent == by)]
        out[host] = min(times) - t_fail if times else None
    return out


def false_declarations(declarations: Iterable[Declaration], truth: dict[str, float],
                       start: float = float("-inf"), end: float = float("inf"),
                       kinds: Iterable[str] = ALARMS) -> list[Declaration]:
    """Alarms in [start, end] about hosts that had not really failed (or been isolated) by
    then. `truth`: host -> when it really went down or was cut off."""
    kinds = set(kinds)
    return [d for d in declarations
            if d.kind in kinds and start <= d.t <= end
            and (d.subject not in truth or d.t < truth[d.subject])]


# -- a whole cluster in virtual time --------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    """`crash`: the host stops (agent and pings); `agent`: only the agent stops; `isolate`:
    the host's management network is cut (nothing in or out, its pings fail)."""

    t: float
    host: str
    kind: str  # crash | agent | isolate | heal


def simulate_cluster(hypervisors: list[str], primary: str, manager: str | None = "vcenter",
                     config: HaConfig | None = None, faults: Iterable[Fault] = (),
                     until: float = 120.0, dt: float = 0.05) -> list[Declaration]:
    """Every agent of a cluster fed from one clock; messages arrive at once unless a fault
    stops them. Returns all declarations in time order."""
    cfg = config or HaConfig()
    agents = {h: HaAgent(h, PRIMARY if h == primary else SECONDARY, hypervisors, cfg,
                         manager=manager) for h in hypervisors}
    if manager:
        agents[manager] = HaAgent(manager, MANAGER, hypervisors, cfg)
    pending = sorted(faults, key=lambda f: f.t)
    crashed: set[str] = set()
    no_agent: set[str] = set()
    cut: set[str] = set()
    out: list[Declaration] = []

    def reachable(a: str, b: str) -> bool:
        return a not in crashed | cut and b not in crashed | cut

    steps = int(round(until / dt))
    for i in range(steps + 1):
        t = i * dt
        while pending and pending[0].t <= t:
            f = pending.pop(0)
            {"crash": crashed, "agent": no_agent, "isolate": cut}.get(f.kind, set()).add(f.host)
            if f.kind == "heal":
                for s in (crashed, no_agent, cut):
                    s.discard(f.host)
        queue: list[tuple[str, Event]] = [(name, Tick()) for name in agents]
        while queue:
            name, event = queue.pop(0)
            if name in crashed or name in no_agent:
                continue
            agent = agents[name]
            step = agent.handle(t, event)
            out += step.declarations
            for to, kind in step.send:
                if to in agents and reachable(name, to) and to not in no_agent:
                    queue.append((to, Heartbeat(name, agent.sending_role, kind)))
            for target in step.ping:
                peer = (manager or "") if target == ISOLATION else target
                queue.append((name, PingResult(target, reachable(name, peer))))
    return out
