"""Iterative pre-copy live migration (vMotion), as a pure model.

Round 0 copies all memory while the VM runs; every later round copies the pages the guest dirtied
during the previous one; once the rest is small enough (or the round budget is spent) the VM is
paused and the rest goes in the stop-and-copy round, which is the downtime. With dirty rate D below
link rate R, round i carries M*(D/R)^i (Clark et al., NSDI 2005; Akoush et al., MASCOTS 2010).

One loop, `precopy()`, decides every round. `simulate()` drives it with modelled round durations;
the replay sender (vmotion.py) drives the same loop with the durations it measured on the real
fabric, so a stall mid-migration lengthens a round, lets more pages be dirtied and shows up in the
measured totals the way it would in a real migration.

Rates are in bits per second (like link rates everywhere in vclab), sizes in bytes, times in s.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

# QEMU's default downtime limit (migration/options.c DEFAULT_MIGRATE_SET_DOWNTIME, 300 ms): pre-copy
# ends once the rest can be sent within it. vMotion's own goal is not published as a number.
DEFAULT_DOWNTIME_TARGET_S = 0.3
# Xen's xc_domain_save: DEF_MAX_ITERS 29, "limit us to 30 times round loop".
DEFAULT_MAX_ROUNDS = 30
PAGE_BYTES = 4096

DISK, MEMORY, STOP_AND_COPY = "disk", "memory", "stop-and-copy"


class VmotionSpec(BaseModel):
    """One VM migration: what is copied, how fast the guest dirties it, and when to stop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_bytes: int = Field(gt=0)
    page_bytes: int = Field(PAGE_BYTES, gt=0)
    # Pages dirtied per second times the page size, in bits/s (Akoush's D).
    dirty_rate_bps: float = Field(0.0, ge=0)
    # Writable working set: the guest keeps re-dirtying these pages, so no round can carry more.
    working_set_bytes: int | None = Field(None, gt=0)
    link_rate_bps: float = Field(gt=0)
    # Stop-and-copy once the dirty rest is at most this many bytes ...
    stop_copy_bytes: int | None = Field(None, ge=0)
    # ... or could be sent within this downtime at the link rate (whichever is larger).
    downtime_target_s: float | None = Field(DEFAULT_DOWNTIME_TARGET_S, ge=0)
    max_rounds: int = Field(DEFAULT_MAX_ROUNDS, ge=0)  # pre-copy rounds, round 0 included
    # Device state and resume on the destination: added to the downtime, sends no bulk data.
    resume_s: float = Field(0.0, ge=0)
    # Shared-nothing migration: the disk goes first, in one pass; the guest's writes meanwhile are
    # mirrored to the destination (vSphere's storage vMotion mirror mode) and keep taking that
    # share of the link until the VM is paused, so the disk never needs a second pass.
    disk_bytes: int = Field(0, ge=0)
    disk_write_rate_bps: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _mirror_fits(self) -> VmotionSpec:
        if self.disk_bytes and self.disk_write_rate_bps >= self.link_rate_bps:
            raise ValueError(
                f"disk_write_rate_bps ({self.disk_write_rate_bps:g}) must be below link_rate_bps "
                f"({self.link_rate_bps:g}): mirrored writes would fill the link and the disk copy "
                "would never finish")
        return self

    def at_rate(self, link_rate_bps: float) -> VmotionSpec:
        """The same migration over a link of another rate (e.g. the rate measured on the fabric)."""
        return self.model_copy(update={"link_rate_bps": float(link_rate_bps)})

    @property
    def mirror_bps(self) -> float:
        """Link share the mirrored disk writes take while the VM runs (0 without a disk copy)."""
        return self.disk_write_rate_bps if self.disk_bytes else 0.0

    @property
    def stop_threshold_bytes(self) -> float:
        """Largest dirty rest that is sent in the stop-and-copy round."""
        by_downtime = (self.downtime_target_s or 0.0) * self.link_rate_bps / 8
        return max(float(self.stop_copy_bytes or 0), by_downtime)


def whole_pages(spec: VmotionSpec, nbytes: float) -> int:
    """Bytes rounded up to whole pages: a page written once is sent whole."""
    pages = math.ceil(nbytes / spec.page_bytes - 1e-9)  # float noise must not add a page
    return max(0, pages) * spec.page_bytes


def dirtied_during(spec: VmotionSpec, seconds: float) -> int:
    """Memory the guest dirties in `seconds` of running, capped by working set and memory."""
    cap = whole_pages(spec, min(spec.working_set_bytes or spec.memory_bytes, spec.memory_bytes))
    return min(whole_pages(spec, spec.dirty_rate_bps / 8 * seconds), cap)


def wire_bytes(spec: VmotionSpec, payload_bytes: int) -> int:
    """Bytes on the link while copying `payload_bytes` with the VM running: the mirrored disk
    writes ride along (R/(R-Dd) times the payload)."""
    if not spec.mirror_bps:
        return payload_bytes
    return math.ceil(payload_bytes * spec.link_rate_bps / (spec.link_rate_bps - spec.mirror_bps))


@dataclass(frozen=True)
class PlannedRound:
    """What to send next: `payload_bytes` of disk or memory, `bytes` on the wire."""

    index: int
    phase: str
    payload_bytes: int
    bytes: int


def precopy(spec: VmotionSpec) -> Generator[PlannedRound, float, None]:
    """Yield each round to send; the driver sends back (`.send`) the seconds that round took.

    Stops when the dirty rest is at most `spec.stop_threshold_bytes` or after `max_rounds`
    memory pre-copy rounds, then yields the stop-and-copy round (the VM is paused: nothing is
    dirtied and nothing mirrored any more)."""
    index = 0
    if spec.disk_bytes:
        yield PlannedRound(index, DISK, spec.disk_bytes, wire_bytes(spec, spec.disk_bytes))
        index += 1
    rest = whole_pages(spec, spec.memory_bytes)
    done = 0
    while rest > spec.stop_threshold_bytes and done < spec.max_rounds:
        seconds = yield PlannedRound(index, MEMORY, rest, wire_bytes(spec, rest))
        rest = dirtied_during(spec, seconds)
        index += 1
        done += 1
    yield PlannedRound(index, STOP_AND_COPY, rest, rest)


@dataclass(frozen=True)
class Round:
    index: int
    phase: str
    bytes: int  # on the wire
    start_s: float  # since the migration started
    duration_s: float


@dataclass(frozen=True)
class Migration:
    rounds: list[Round] = field(default_factory=list)
    converged: bool = True  # False: the round budget ran out before the rest was small enough
    downtime_s: float = 0.0  # stop-and-copy plus resume
    total_s: float = 0.0  # first byte to VM running on the destination

    @property
    def precopy_rounds(self) -> int:
        return sum(1 for r in self.rounds if r.phase == MEMORY)

    @property
    def bytes_sent(self) -> int:
        return sum(r.bytes for r in self.rounds)


def simulate(spec: VmotionSpec) -> Migration:
    """The migration as the model predicts it at `spec.link_rate_bps`."""
    paused_rate = spec.link_rate_bps / 8
    running_rate = (spec.link_rate_bps - spec.mirror_bps) / 8  # what the mirror leaves over
    rounds: list[Round] = []
    clock = 0.0
    plan = precopy(spec)
    step = next(plan)
    while True:
        if step.phase == STOP_AND_COPY:
            seconds = step.bytes / paused_rate
        else:  # from the payload, not the rounded wire bytes, so no page appears from rounding
            seconds = step.payload_bytes / running_rate
        rounds.append(Round(step.index, step.phase, step.bytes, clock, seconds))
        clock += seconds
        if step.phase == STOP_AND_COPY:
            break
        step = plan.send(seconds)
    last = rounds[-1]
    return Migration(
        rounds=rounds,
        converged=last.bytes <= spec.stop_threshold_bytes,
        downtime_s=last.duration_s + spec.resume_s,
        total_s=clock + spec.resume_s,
    )
