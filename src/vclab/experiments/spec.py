"""An experiment as the user writes it: a cluster, the mechanisms to compare, the workloads, a
fault schedule and repetitions. Validated whole and against its cluster before anything runs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, create_model, field_validator, model_validator

from vclab.topology.spec import Mechanism, Name, TeamMode
from vclab.workloads.registry import WORKLOAD_KINDS
from vclab.workloads.spec import Count, Instant, Span, Strict, WorkloadSpec


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

class _Entry(Strict):
    """One workload: one key, its kind, holds the kind's entry (workloads/<kind>/spec.py)."""

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
    def spec(self) -> WorkloadSpec:
        return getattr(self, self.kind)


# A field per kind the registry knows, each optional: `_exactly_one` wants one of them.
Workload = create_model("Workload", __base__=_Entry, __module__=__name__,
                        **{k: (Optional[s], None) for k, s in WORKLOAD_KINDS.items()})


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
