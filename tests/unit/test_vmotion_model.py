"""The pre-copy model against the closed forms of the live-migration literature.

Akoush et al. (MASCOTS 2010), after Clark et al. (NSDI 2005), no writable working set, λ = D/R < 1:
    V_i  = M λ^i                     bytes in pre-copy round i (round 0 = all memory)
    n    = ceil(log_λ(V_thd / M))    rounds until the rest is below the stop threshold
    T_mig  = M/R · (1 - λ^(n+1)) / (1 - λ)     (rounds 0..n, n = stop-and-copy)
    T_down = M/R · λ^n
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from vclab.workloads.vmotion.model import (
    DISK,
    MEMORY,
    STOP_AND_COPY,
    VmotionSpec,
    dirtied_during,
    precopy,
    simulate,
    whole_pages,
)

GiB, MiB = 2**30, 2**20
R = 8e9  # 1 GB/s of link, in bits/s
M = GiB


def closed_form(memory: float, lam: float, byte_rate: float, n: int) -> tuple[float, float]:
    total = memory / byte_rate * (1 - lam ** (n + 1)) / (1 - lam)
    downtime = memory / byte_rate * lam**n
    return total, downtime


def spec(**kw) -> VmotionSpec:
    base = dict(memory_bytes=M, link_rate_bps=R, dirty_rate_bps=R / 2, downtime_target_s=None)
    return VmotionSpec(**(base | kw))


def test_rounds_shrink_geometrically_and_match_closed_forms() -> None:
    s = spec(stop_copy_bytes=MiB)
    mig = simulate(s)
    lam = 0.5
    n = math.ceil(math.log(MiB / M, lam))  # = 10
    assert n == 10
    memory_rounds = [r for r in mig.rounds if r.phase == MEMORY]
    assert len(memory_rounds) == n
    for i, r in enumerate(memory_rounds):
        assert r.bytes == M * lam**i  # exact: every round is whole pages here
    assert mig.rounds[-1].phase == STOP_AND_COPY
    assert mig.rounds[-1].bytes == M * lam**n
    total, downtime = closed_form(M, lam, R / 8, n)
    assert mig.total_s == pytest.approx(total, rel=1e-9)
    assert mig.downtime_s == pytest.approx(downtime, rel=1e-9)
    assert mig.converged


def test_round_durations_add_up_to_total() -> None:
    mig = simulate(spec(stop_copy_bytes=MiB))
    for before, after in zip(mig.rounds, mig.rounds[1:]):
        assert after.start_s == pytest.approx(before.start_s + before.duration_s)
    assert mig.total_s == pytest.approx(mig.rounds[-1].start_s + mig.rounds[-1].duration_s)


def test_downtime_target_sets_the_threshold() -> None:
    # 1 ms at 1 GB/s = 1e6 bytes: n = ceil(log2(2^30 / 1e6)) = 11.
    s = spec(downtime_target_s=0.001)
    mig = simulate(s)
    n = math.ceil(math.log(1e6 / M, 0.5))
    assert n == 11 and mig.precopy_rounds == n
    total, downtime = closed_form(M, 0.5, R / 8, n)
    assert mig.total_s == pytest.approx(total, rel=1e-6)
    assert mig.downtime_s == pytest.approx(downtime, rel=1e-6)
    assert mig.downtime_s <= 0.001


@pytest.mark.parametrize("lam", [0.1, 0.3, 0.7, 0.9])
def test_closed_forms_over_dirty_ratios(lam: float) -> None:
    # Not powers of two: each round rounds up to a page, and the extra carries into the later
    # rounds shrunk by λ, so every round is off by less than page/(1-λ).
    s = spec(dirty_rate_bps=lam * R, stop_copy_bytes=4 * MiB, max_rounds=100)
    mig = simulate(s)
    n = math.ceil(math.log(4 * MiB / M, lam))
    assert mig.precopy_rounds == n
    total, downtime = closed_form(M, lam, R / 8, n)
    slack = (n + 1) * s.page_bytes / (1 - lam) / (R / 8)
    assert abs(mig.total_s - total) <= slack
    assert abs(mig.downtime_s - downtime) <= slack


@pytest.mark.parametrize("ratio", [1.0, 1.5, 4.0])
def test_dirty_rate_at_or_above_link_rate_never_converges(ratio: float) -> None:
    s = spec(dirty_rate_bps=ratio * R, max_rounds=7, stop_copy_bytes=MiB)
    mig = simulate(s)
    assert not mig.converged
    assert mig.precopy_rounds == 7
    # Every round re-sends all memory (dirtying is capped by its size), then all of it again
    # with the VM paused.
    assert all(r.bytes == M for r in mig.rounds)
    assert mig.downtime_s == pytest.approx(M / (R / 8))
    assert mig.total_s == pytest.approx(8 * M / (R / 8))


def test_writable_working_set_caps_each_round() -> None:
    # D = 2R, so without a cap every round would carry all memory; the working set (64 MiB) is
    # all the guest can dirty, so rounds 1.. carry it and the downtime is W/R, not M/R (Clark's
    # observation for workloads with a hot writable working set).
    w = 64 * MiB
    s = spec(dirty_rate_bps=2 * R, working_set_bytes=w, max_rounds=5, stop_copy_bytes=MiB)
    mig = simulate(s)
    assert [r.bytes for r in mig.rounds] == [M] + [w] * 5
    assert not mig.converged
    assert mig.downtime_s == pytest.approx(w / (R / 8))
    assert mig.total_s == pytest.approx((M + 5 * w) / (R / 8))


def test_working_set_larger_than_rounds_changes_nothing() -> None:
    plain = simulate(spec(stop_copy_bytes=MiB))
    capped = simulate(spec(stop_copy_bytes=MiB, working_set_bytes=M))
    assert plain == capped


def test_memory_within_threshold_is_stop_and_copy_only() -> None:
    mig = simulate(spec(memory_bytes=MiB, stop_copy_bytes=2 * MiB))
    assert [r.phase for r in mig.rounds] == [STOP_AND_COPY]
    assert mig.downtime_s == mig.total_s == pytest.approx(MiB / (R / 8))


def test_no_dirtying_needs_one_precopy_round_and_empty_stop_and_copy() -> None:
    mig = simulate(spec(dirty_rate_bps=0, stop_copy_bytes=0))
    assert [r.bytes for r in mig.rounds] == [M, 0]
    assert mig.downtime_s == 0 and mig.total_s == pytest.approx(M / (R / 8))


def test_resume_time_adds_to_downtime_and_total() -> None:
    a = simulate(spec(stop_copy_bytes=MiB))
    b = simulate(spec(stop_copy_bytes=MiB, resume_s=0.25))
    assert b.downtime_s == pytest.approx(a.downtime_s + 0.25)
    assert b.total_s == pytest.approx(a.total_s + 0.25)


def test_shared_nothing_copies_disk_first() -> None:
    disk = 4 * GiB
    mig = simulate(spec(stop_copy_bytes=MiB, disk_bytes=disk))
    assert mig.rounds[0].phase == DISK and mig.rounds[0].bytes == disk
    memory_only = simulate(spec(stop_copy_bytes=MiB))
    assert mig.total_s == pytest.approx(disk / (R / 8) + memory_only.total_s)
    assert mig.downtime_s == pytest.approx(memory_only.downtime_s)


def test_mirrored_disk_writes_slow_every_running_round() -> None:
    # Disk writes Dd = R/4 are mirrored while the VM runs: the copies get R' = R - Dd, so the
    # memory pre-copy follows the closed form at R' with λ = D/R'; stop-and-copy runs at R
    # because the paused guest writes nothing.
    disk, dd, d = 2 * GiB, R / 4, 3 * R / 8
    s = spec(dirty_rate_bps=d, disk_bytes=disk, disk_write_rate_bps=dd, stop_copy_bytes=MiB)
    mig = simulate(s)
    eff = (R - dd) / 8
    lam = d / (R - dd)  # = 0.5
    assert mig.rounds[0].duration_s == pytest.approx(disk / eff)
    n = math.ceil(math.log(MiB / M, lam))
    assert mig.precopy_rounds == n
    running = sum(M * lam**i for i in range(n)) / eff
    downtime = M * lam**n / (R / 8)
    assert mig.downtime_s == pytest.approx(downtime)
    assert mig.total_s == pytest.approx(disk / eff + running + downtime)
    # On the wire each running round carries the mirrored writes as well.
    assert mig.rounds[1].bytes == pytest.approx(M * R / (R - dd), abs=1)


def test_mirror_that_fills_the_link_is_rejected() -> None:
    with pytest.raises(ValidationError, match="disk_write_rate_bps"):
        spec(disk_bytes=GiB, disk_write_rate_bps=R)


def test_round_budget_caps_n() -> None:
    # Akoush: n = min(ceil(log_λ(V_thd/M)), max rounds); λ = 0.9 needs 53 rounds for 4 MiB.
    s = spec(dirty_rate_bps=0.9 * R, stop_copy_bytes=4 * MiB, max_rounds=30)
    mig = simulate(s)
    assert mig.precopy_rounds == 30 and not mig.converged
    total, downtime = closed_form(M, 0.9, R / 8, 30)
    slack = 31 * s.page_bytes / (1 - 0.9) / (R / 8)
    assert abs(mig.total_s - total) <= slack and abs(mig.downtime_s - downtime) <= slack


def test_at_rate_rescales_durations() -> None:
    s = spec(stop_copy_bytes=MiB)
    fast, slow = simulate(s), simulate(s.at_rate(R / 2))
    assert slow.precopy_rounds > fast.precopy_rounds  # λ doubles to 1.0: no convergence
    assert not slow.converged
    assert s.at_rate(R / 2).link_rate_bps == R / 2


def test_pages_round_up() -> None:
    s = spec()
    assert whole_pages(s, 1) == 4096
    assert whole_pages(s, 4096) == 4096
    assert whole_pages(s, 4097) == 8192
    assert dirtied_during(s, 1e-12) == 4096  # one byte written dirties a whole page
    assert dirtied_during(s, 0) == 0


def test_precopy_follows_measured_durations() -> None:
    # The replay drives the loop with real durations: a round that stalled lets the guest
    # dirty more, so the next round carries more.
    s = spec(stop_copy_bytes=MiB)
    plan = precopy(s)
    first = next(plan)
    assert first.bytes == M
    steady = plan.send(M / (R / 8))
    plan2 = precopy(s)
    next(plan2)
    stalled = plan2.send(M / (R / 8) + 0.5)
    assert stalled.bytes == steady.bytes + whole_pages(s, 0.5 * R / 2 / 8)


def test_spec_rejects_unknown_and_negative_fields() -> None:
    with pytest.raises(ValidationError):
        VmotionSpec(memory_bytes=M, link_rate_bps=R, dirty_rate_bps=-1)
    with pytest.raises(ValidationError):
        VmotionSpec(memory_bytes=M, link_rate_bps=R, memroy_bytes=1)
