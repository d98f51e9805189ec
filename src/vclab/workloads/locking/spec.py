"""The `locking` entry of an experiment: VM file locks on a shared datastore LUN."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from vclab.topology.spec import Name
from vclab.workloads.spec import Instant, Problems, WorkloadSpec


class LockingSpec(WorkloadSpec):
    """Lock managers on the hypervisors that share one datastore LUN (VMFS-style: each host
    heartbeats its slot; a VM's files are locked by the host running it). Each VM's lock is
    taken at start by the host the cluster runs it on. When that host crashes or loses its
    storage path, HA restarts the VM on its failover host, which breaks the stale lock once the
    owner's heartbeat stood still for `break_after`; a vMotion of a locked VM hands its lock
    over inside the switch-over.

    The timers must keep two writers apart without a shared clock (locking/model.py):
    break_after > lease * (1 + clock_drift) / (1 - clock_drift), and lease > heartbeat +
    (io_timeout + 50 ms) * (1 + clock_drift)."""

    kind = "locking"

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

    def problems(self, experiment, cluster, index):
        """On its cluster: hosts that mount the datastore, the LUN (big enough for the VMs' lock
        records and disks), who runs each VM and where HA restarts it, and the other workloads
        that would clash with it."""
        from vclab.workloads.locking.layout import EXTENT_BLOCKS, lun_bytes_needed

        s, e, c, i = self, experiment, cluster, index
        out: Problems = []
        storage_nets = set(c.networks_of_kind("storage"))
        covered_ms = EXTENT_BLOCKS * s.write_every
        if covered_ms < e.warmup + e.duration:
            out.append((("write_every",), f"each owner's disk log holds {EXTENT_BLOCKS} writes: "
                        f"at one per {s.write_every:g} ms it wraps after {covered_ms / 1e3:g} s, "
                        f"before the run ends ({(e.warmup + e.duration) / 1e3:g} s with the warm-up) "
                        "and the dual-writer check would lose evidence; write less often"))
        for j, h in enumerate(s.hosts):
            if h not in c.hypervisors:
                out.append((("hosts", j), f"unknown hypervisor {h!r}; hypervisors are: "
                            f"{', '.join(sorted(c.hypervisors)) or '(none)'}"))
        array = s.array or (sorted(c.storage)[0] if c.storage else None)
        if array is None:
            return out + [((), "the cluster has no storage array")]
        if array not in c.storage:
            return out + [(("array",), f"unknown storage array {array!r}; storage arrays are: "
                           f"{', '.join(sorted(c.storage)) or '(none)'}")]
        luns = c.storage[array].luns
        if s.lun not in luns:
            out.append((("lun",), f"unknown LUN {s.lun!r}; LUNs of {array} are: "
                        f"{', '.join(sorted(luns)) or '(none)'}"))
        elif luns[s.lun] < lun_bytes_needed(len(s.vms)):
            out.append((("lun",), f"LUN {s.lun} ({luns[s.lun]} bytes) is too small for "
                        f"{len(s.vms)} VMs' lock records and disk logs: it needs "
                        f"{lun_bytes_needed(len(s.vms))} bytes"))
        portals = set(c.storage[array].portals)
        for j, h in enumerate(s.hosts):
            if h in c.hypervisors and not set(c.hypervisors[h].networks) & portals & storage_nets:
                out.append((("hosts", j), f"{h} is on none of {array}'s storage networks "
                            f"({', '.join(sorted(portals))}): it cannot reach the datastore"))
        if s.failover_host is not None and s.failover_host not in s.hosts:
            out.append((("failover_host",), f"{s.failover_host!r} is not among hosts "
                        f"({', '.join(s.hosts)}): only they mount the datastore"))
        for j, vm in enumerate(s.vms):
            if vm not in c.vms:
                out.append((("vms", j), f"unknown VM {vm!r}; VMs are: "
                            f"{', '.join(sorted(c.vms)) or '(none)'}"))
                continue
            runs_on = c.vms[vm].host
            if runs_on not in s.hosts:
                out.append((("vms", j), f"{vm} runs on {runs_on}, which is not among hosts "
                            f"({', '.join(s.hosts)}): nobody would hold its lock"))
            elif s.failover_host == runs_on:
                out.append((("failover_host",), f"{vm} already runs on {runs_on}: HA restarts "
                            "it on another host"))
        for k, other in enumerate(e.workloads):
            if other.kind == "iscsi" and (other.spec.array or sorted(c.storage)[0]) == array:
                out.append((("array",), f"workloads.{k} (iscsi) also serves {array}: each "
                            "starts its own iSCSI target on the array's portals; use one"))
            elif other.kind == "locking" and k < i and \
                    (other.spec.array or sorted(c.storage)[0]) == array:
                out.append((("array",), f"workloads.{k} is already a locking workload on "
                            f"{array}: give it all the hosts and VMs"))
            elif other.kind == "vmotion" and other.spec.vm in s.vms and \
                    other.spec.to not in s.hosts:
                out.append((("hosts",), f"workloads.{k} migrates {other.spec.vm} to "
                            f"{other.spec.to}, which does not mount the datastore: add it to hosts"))
        return out
