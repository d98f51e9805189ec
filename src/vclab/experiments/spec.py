"""An experiment as the user writes it: a cluster, the mechanisms to compare, the workloads, a
fault schedule and repetitions. Validated whole and against its cluster before anything runs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo,
                      field_validator, model_validator)

from vclab.topology.spec import Cluster, Mechanism, Name, TeamMode, semantic_problems
from vclab.units import Millis, Percent, Rate


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# Times: finite and not negative (units.Millis), and within a day, which no run comes near.
DAY_MS = 86_400_000.0
Instant = Annotated[Millis, Field(le=DAY_MS)]  # a moment or a wait: 0 is allowed
Span = Annotated[Millis, Field(gt=0, le=DAY_MS)]  # a length or a period: more than 0
Count = Annotated[int, Field(strict=True)]  # `true` is not 1


class MechanismChoice(Strict):
    """A fabric mechanism, optionally with the hypervisors' NIC team mode overridden."""

    fabric: Mechanism
    team: TeamMode | None = None
    # sdn only: BFD on every server NIC too, so a team leaves a silent NIC (~3 x 50 ms). Off by
    # default: on a loaded 2-core host the sessions flap, and each false alarm is an outage.
    bfd_nics: bool = False

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data):
        return {"fabric": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _bfd_nics_is_sdn(self):
        if self.bfd_nics and self.fabric != "sdn":
            raise ValueError(f"bfd_nics is the sdn controller's option, not {self.fabric}'s")
        return self

    @property
    def label(self) -> str:
        label = self.fabric if self.team is None else f"{self.fabric}+{self.team}"
        return label + "+bfd-nics" if self.bfd_nics else label

    def mechanism(self):
        """The mechanism object this choice builds with."""
        from vclab.fabric.registry import get_mechanism
        from vclab.fabric.sdn import Sdn

        return Sdn(bfd_nics=True) if self.bfd_nics else get_mechanism(self.fabric)


# ---- workloads: one key names the kind, as in `- probe: {...}` ----

class ProbeSpec(Strict):
    src: Name = Field(alias="from")
    dst: Name = Field(alias="to")
    network: Name
    every: Span = 1.0


class HeartbeatsSpec(Strict):
    isolation_address: Name | None = None  # a node whose management address hosts ping
    interval: Span = 1000.0
    failure_after: Span | None = None  # defaults: the HA product's published defaults
    isolation_after: Span | None = None


class VmotionSpec(Strict):
    vm: Name
    to: Name
    at: Instant = 0.0
    mode: Literal["shared", "shared-nothing"] = "shared"


class IscsiSpec(Strict):
    hosts: list[Name] = Field(min_length=1)
    array: Name | None = None
    lun: Name
    pattern: Literal["random-4k", "sequential-64k"] = "random-4k"
    mix: str = Field(default="70/30", pattern=r"^\d{1,3}/\d{1,3}$")  # read/write percent
    multipath: bool = True

    @field_validator("mix")
    @classmethod
    def _adds_up(cls, mix: str) -> str:
        from vclab.workloads.iscsi.agent import parse_mix  # what the agent itself will refuse

        parse_mix(mix)
        return mix


class Iperf3Spec(Strict):
    src: Name = Field(alias="from")
    dst: Name = Field(alias="to")
    network: Name
    protocol: Literal["tcp", "udp"] = "tcp"
    # The rate first: its error ("must be more than 0") is the one to show for `rate: 0`.
    rate: Union[Annotated[Rate, Field(gt=0)], Literal["max"]] = "max"


class LockingSpec(Strict):
    """Lock managers on the hypervisors that share one datastore LUN (VMFS-style: each host
    heartbeats its slot; a VM's files are locked by the host running it). Each VM's lock is
    taken at start by the host the cluster runs it on. When that host crashes or loses its
    storage path, HA restarts the VM on its failover host, which breaks the stale lock once the
    owner's heartbeat stood still for `break_after`; a vMotion of a locked VM hands its lock
    over inside the switch-over.

    The timers must keep two writers apart without a shared clock (locking/model.py):
    break_after > lease * (1 + clock_drift) / (1 - clock_drift), and lease > heartbeat +
    (io_timeout + 50 ms) * (1 + clock_drift)."""

    hosts: list[Name] = Field(min_length=2)  # hypervisors that mount the datastore
    array: Name | None = None  # default: the cluster's first storage array
    lun: Name
    vms: list[Name] = Field(min_length=1, max_length=64)  # VMs whose files are locked
    failover_host: Name | None = None  # where HA restarts them; default: the first other host
    restart_after: Instant = 0.0  # HA's failure detection before the restart attempt
    heartbeat: Instant = 200.0
    io_timeout: Instant = 500.0  # TCP_USER_TIMEOUT of the agents' iSCSI sessions
    # max clock rate error, as a fraction (strict: `false` is not 0)
    clock_drift: float = Field(0.001, ge=0, lt=0.5, strict=True)
    lease: Instant = 1500.0
    break_after: Instant = 3000.0
    primitive: Literal["auto", "compare-and-write", "persistent-reservation"] = "auto"
    # how often each running VM writes its disk (the evidence the dual-writer checker reads:
    # each owner's log holds 1024 writes, so 20 ms covers 20 s of one owner)
    write_every: Instant = 20.0

    @field_validator("hosts", "vms")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        twice = sorted(n for n, k in Counter(names).items() if k > 1)
        if twice:
            raise ValueError(f"named more than once: {', '.join(twice)}")
        return names

    @field_validator("heartbeat", "io_timeout", "lease", "break_after", "write_every")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0 ms")
        return value

    @field_validator("restart_after")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("lease")
    @classmethod
    def _lease_outlasts_a_heartbeat(cls, lease: float, info: ValidationInfo) -> float:
        d = info.data
        if {"heartbeat", "io_timeout", "clock_drift"} <= d.keys():
            least = d["heartbeat"] + (d["io_timeout"] + 50.0) * (1 + d["clock_drift"])
            if lease <= least:
                raise ValueError(f"lease {lease:g} ms must exceed heartbeat + (io_timeout + 50 ms)"
                                 f" * (1 + clock_drift) = {least:.4g} ms, or an owner stops "
                                 "writing between two good heartbeats")
        return lease

    @field_validator("break_after")
    @classmethod
    def _no_split_brain(cls, break_after: float, info: ValidationInfo) -> float:
        d = info.data
        if {"lease", "clock_drift"} <= d.keys():
            least = d["lease"] * (1 + d["clock_drift"]) / (1 - d["clock_drift"])
            if break_after <= least:
                raise ValueError(f"break_after {break_after:g} ms must exceed lease * (1 + "
                                 f"clock_drift) / (1 - clock_drift) = {least:.5g} ms: a host "
                                 "could break a lock whose owner still writes (split brain)")
        return break_after

    def timing(self):
        """The agents' timers (locking.model.Timing), in seconds."""
        from vclab.workloads.locking.model import Timing

        return Timing(heartbeat_s=self.heartbeat / 1e3, lease_s=self.lease / 1e3,
                      break_after_s=self.break_after / 1e3, io_timeout_s=self.io_timeout / 1e3,
                      drift=self.clock_drift, write_interval_s=self.write_every / 1e3)


WORKLOAD_KINDS = {"probe": ProbeSpec, "heartbeats": HeartbeatsSpec, "vmotion": VmotionSpec,
                  "iscsi": IscsiSpec, "iperf3": Iperf3Spec, "locking": LockingSpec}


class Workload(Strict):
    probe: ProbeSpec | None = None
    heartbeats: HeartbeatsSpec | None = None
    vmotion: VmotionSpec | None = None
    iscsi: IscsiSpec | None = None
    iperf3: Iperf3Spec | None = None
    locking: LockingSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in WORKLOAD_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"each workload is one of {', '.join(WORKLOAD_KINDS)}; got "
                             f"{', '.join(given) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in WORKLOAD_KINDS if getattr(self, k) is not None)

    @property
    def spec(self) -> BaseModel:
        return getattr(self, self.kind)


# ---- faults ----

LinkAction = Literal["down", "up", "silent", "restore", "flap"]


class Fault(Strict):
    """One scheduled fault. The target is one of link, nic, switch, controller, host."""

    at: Instant
    link: str | None = None  # `tor-a/tor-b#1` or a NIC's cable `esx1.vmnic0`
    switch: Name | None = None
    controller: Literal["kill", "restart"] | None = None
    # host: isolate/rejoin cut/mend its management NICs; crash SIGKILLs every process vclab
    # started in it and cuts all its cables (mended at teardown); storage-partition/-rejoin
    # silently drop/pass its storage networks only (management stays up)
    host: Name | None = None
    action: Literal["down", "up", "silent", "restore", "flap", "fail", "recover",
                    "isolate", "rejoin", "crash", "storage-partition",
                    "storage-rejoin"] | None = None
    direction: Literal["both", "forward", "reverse"] = "both"  # silent loss: one way only
    period: Span | None = None  # flap
    count: Count | None = Field(default=None, ge=1, le=1000)  # flap

    @model_validator(mode="after")
    def _one_target(self):
        targets = [k for k in ("link", "switch", "controller", "host") if getattr(self, k) is not None]
        if len(targets) != 1:
            raise ValueError("a fault names exactly one of link, switch, controller, host; got "
                             f"{', '.join(targets) or 'none'}")
        allowed = {"link": ("down", "up", "silent", "restore", "flap"),
                   "switch": ("fail", "recover"),
                   "host": ("isolate", "rejoin", "crash", "storage-partition", "storage-rejoin"),
                   "controller": (None,)}[targets[0]]
        if targets[0] != "controller" and self.action not in allowed:
            raise ValueError(f"a {targets[0]} fault's action is one of {', '.join(allowed)}")
        if targets[0] == "controller" and self.action is not None:
            raise ValueError(f"a controller fault takes no `action`: `controller: kill` or "
                             f"`controller: restart` says what happens (got action {self.action!r})")
        if self.action == "flap" and (self.period is None or self.count is None):
            raise ValueError("a flap needs `period` and `count`")
        # A key the fault would ignore is a mistake in the file, not a setting.
        ignored = [k for k, used_by in (("period", "flap"), ("count", "flap"), ("direction", "silent"))
                   if k in self.model_fields_set and self.action != used_by]
        if ignored:
            raise ValueError(f"{' and '.join(f'`{k}`' for k in ignored)} only "
                             f"{'apply' if len(ignored) > 1 else 'applies'} to a "
                             f"{'flap' if ignored[0] != 'direction' else 'silent'} fault, not to "
                             f"{self.action or self.controller!r}")
        return self

    @property
    def target_kind(self) -> str:
        return next(k for k in ("link", "switch", "controller", "host") if getattr(self, k) is not None)

    @property
    def target(self) -> str:
        return str(getattr(self, self.target_kind))


class Sweep(Strict):
    """Generated schedules: `sweep: single-failures` fails every switch, link and NIC in turn."""

    sweep: Literal["single-failures"]
    at: Instant = 2000.0
    hold: Span = 3000.0  # how long each failure lasts before it is undone


FaultOrSweep = Annotated[
    # Tags unlike any key: pydantic puts the tag in an error's path, where `sweep` would be read
    # as the sweep's own key and the line of `hold` lost.
    Union[Annotated[Fault, Tag("Fault")], Annotated[Sweep, Tag("Sweep")]],
    Discriminator(lambda d: "Sweep" if (isinstance(d, dict) and "sweep" in d) or isinstance(d, Sweep) else "Fault"),
]


class Experiment(Strict):
    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # names the results
    topology: Union[str, dict[str, Any]]  # a path relative to this file, or the cluster inline
    mechanisms: list[MechanismChoice] = Field(min_length=1)
    repetitions: Count = Field(default=3, ge=1, le=1000)
    # Stored per repetition (seed + index) as an SQLite integer, and fed to random.Random.
    seed: Count = Field(default=1, ge=0, le=2**32 - 1)
    warmup: Instant = 1000.0
    settle: Instant = 1000.0
    duration: Span = 10_000.0
    workloads: list[Workload] = Field(default_factory=list)
    faults: list[FaultOrSweep] = Field(default_factory=list)

    @field_validator("mechanisms")
    @classmethod
    def _each_once(cls, choices: list[MechanismChoice]) -> list[MechanismChoice]:
        # The runner keeps each repetition's files under LABEL-N: two alike would share them.
        counts = Counter(c.label for c in choices)
        twice = sorted(label for label, n in counts.items() if n > 1)
        if twice:
            raise ValueError(f"{', '.join(twice)} is listed more than once; each mechanism "
                             "runs once per repetition (use `repetitions` for more runs)")
        return choices

    def cluster_path(self, experiment_file: Path) -> Path | None:
        if isinstance(self.topology, str):
            path = experiment_file.parent / self.topology
            try:
                return path.resolve()
            except (RuntimeError, OSError, ValueError):  # a symlink loop: reading it says so
                return path.absolute()
        return None
