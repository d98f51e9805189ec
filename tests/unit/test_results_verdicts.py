"""Paired verdicts on known data: the Hodges–Lehmann interval, the rules for win, tie and
unclear, and how many more repetitions an unclear row needs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from vclab.results.verdicts import (
    MORE_CAP,
    decide,
    equivalence_margin,
    hodges_lehmann,
    rounds_needed,
    signed_rank_order,
)


def rounds(*values: float) -> dict[int, float]:
    return {i: v for i, v in enumerate(values, 1)}


@pytest.mark.parametrize("n", range(6, 16))
def test_signed_rank_interval_matches_scipy_exact_test(n):
    """The interval's ends are where scipy's exact Wilcoxon test stops rejecting at 5 %."""
    k, coverage = signed_rank_order(n)
    assert 0.95 <= coverage < 1
    # k-1 is the largest T+ whose two-sided exact p-value is still <= 5 %
    d = np.arange(1, n + 1, dtype=float)  # all ranks positive: T+ = n(n+1)/2
    signs = np.ones(n)
    # flip the smallest ranks until T- reaches k-1 exactly (ranks are 1..n)
    minus = k - 1
    for r in range(n, 0, -1):
        if r <= minus:
            signs[r - 1], minus = -1, minus - r
    assert minus == 0
    p = stats.wilcoxon(signs * d, method="exact").pvalue
    assert p <= 0.05 + 1e-12


def test_no_distribution_free_95_percent_interval_below_six_rounds():
    assert [signed_rank_order(n) for n in range(0, 6)] == [None] * 6
    assert signed_rank_order(6) == (1, pytest.approx(1 - 2 / 64))
    assert hodges_lehmann([1, 2, 3, 4, 5, 6]).method == "signed-rank"


def test_three_to_five_rounds_take_the_t_interval_and_two_none():
    p = hodges_lehmann([300.0, 310.0, 305.0])
    assert p.estimate == pytest.approx(305.0) and p.method == "t"
    ci = stats.t.interval(0.95, 2, loc=305.0, scale=stats.sem([300.0, 310.0, 305.0]))
    assert (p.low, p.high) == pytest.approx(ci, rel=1e-3)  # scipy's t, to the table's 3 decimals
    two = hodges_lehmann([300.0, 310.0])
    assert two.low is None and two.high is None and two.method == ""


def test_hodges_lehmann_on_known_data():
    # Walsh averages of 1..7: their median is 4, and the 95 % interval drops the 2 most
    # extreme on each side (k = 3 at n = 7: P(T+ <= 2) = 3/128)
    p = hodges_lehmann([1, 2, 3, 4, 5, 6, 7])
    assert p.estimate == 4.0
    assert (p.low, p.high) == (2.0, 6.0) and p.coverage == pytest.approx(1 - 2 * 3 / 128)
    assert hodges_lehmann([5.0] * 8).low == 5.0 == hodges_lehmann([5.0] * 8).high


def test_margin_default():
    assert equivalence_margin([8.0, 300.0], "ms") == 2.0
    assert equivalence_margin([80.0, 300.0], "ms") == pytest.approx(8.0)
    assert equivalence_margin([0.0, 1.0], "") == 1.0


def test_a_win_names_the_runner_up_and_the_paired_margin():
    v = decide({"sdn": rounds(8, 9, 8, 10, 9, 8), "rstp": rounds(15, 30, 14, 16, 18, 15),
                "stp": rounds(10500, 10600, 10400, 10700, 10500, 10600)}, "lower", "ms")
    assert v.kind == "win" and v.clear and v.best == "sdn" and v.runner_up == "rstp"
    assert v.by == pytest.approx(7.0, abs=1.0)
    assert v.pairs["stp"].low > 10000


def test_pairing_cancels_what_a_round_shared():
    """Each round is slower or faster as a whole (the machine's load); rstp is always 5 ms
    behind. Unpaired, the spreads overlap; paired, the lead is exact."""
    load = [0, 40, 5, 80, 20, 60, 10]
    v = decide({"sdn": rounds(*[10 + x for x in load]), "rstp": rounds(*[15 + x for x in load])},
               "lower", "ms")
    assert v.kind == "win" and v.by == 5.0 and (v.pairs["rstp"].low, v.pairs["rstp"].high) == (5.0, 5.0)


def test_higher_is_better():
    v = decide({"a": rounds(*[9e9] * 6), "b": rounds(*[5e9] * 6)}, "higher", "bit/s")
    assert v.kind == "win" and v.best == "a" and v.by == 4e9


def test_a_tie_inside_the_margin_and_one_behind():
    v = decide({"sdn": rounds(0, 0, 0, 0, 0, 0), "rstp": rounds(0, 1, 0, 0, 0.5, 0),
                "stp": rounds(900, 950, 900, 1000, 980, 910)}, "lower", "ms")
    assert v.kind == "tie" and v.tied == ["sdn", "rstp"] and v.margin == 2.0 and v.clear


def test_unclear_says_how_many_more():
    v = decide({"sdn": rounds(10, 20, 12), "rstp": rounds(14, 18, 30)}, "lower", "ms")
    assert v.kind == "unclear" and not v.clear and v.more >= 1
    # a wide spread around a small lead needs many more
    wide = decide({"a": rounds(*[10, 50, 10, 60, 10, 40]), "b": rounds(*[20, 20, 40, 30, 30, 30])},
                  "lower", "ms")
    assert wide.kind == "unclear" and wide.more > 6
    # failed rounds are simply not paired
    v = decide({"a": rounds(1, 1, 1, 1, 1, 1), "b": {1: 50.0, 3: 52.0}}, "lower", "ms")
    assert v.kind == "unclear" and v.pairs["b"].n == 2 and v.more == 1  # to the 3 rounds an interval needs


def test_rounds_needed_scales_as_one_over_root_n():
    p = hodges_lehmann([4, 6, 2, 8, 5, 7, 3, 9])  # estimate 5.5, interval about 3.5..7.5
    assert p.low > 0  # already clear
    from vclab.results.verdicts import Paired

    q = Paired(8, 2.0, -2.0, 6.0, 0.95)  # half-width 4 around 2: needs 8 * (4/2)^2 = 32
    assert rounds_needed(q, margin=0.5) == 32
    assert rounds_needed(Paired(8, 0.0, -2.0, 2.0, 0.95), margin=1.0) == 32  # to fit in +-1
    assert rounds_needed(Paired(2, 3.0, spread=0.0), margin=1.0) == 3
    assert MORE_CAP >= 999


def test_no_contest():
    assert decide({"a": rounds(1, 2)}, "lower", "ms").kind == "none"
    assert decide({"a": rounds(1), "b": rounds(2)}, None, "ms").kind == "none"


def test_three_clear_rounds_decide_a_big_lead_and_a_tie():
    """At 3 rounds (what the main job affords) a lead far beyond the rounds' spread is a win,
    and rounds that never differ are a tie; a noisy small lead stays unclear."""
    v = decide({"sdn": rounds(5, 6, 5), "stp": rounds(6100, 6180, 5900)}, "lower", "ms")
    assert v.kind == "win" and v.pairs["stp"].method == "t"
    assert decide({"a": rounds(0, 0, 0), "b": rounds(0, 0.5, 0)}, "lower", "ms").kind == "tie"
    assert decide({"a": rounds(5, 9, 4), "b": rounds(9, 6, 12)}, "lower", "ms").kind == "unclear"


def test_a_lead_inside_the_margin_is_a_tie_not_a_win():
    v = decide({"a": rounds(5, 5, 5, 5, 5, 5), "b": rounds(6, 6, 6, 6, 6, 6)}, "lower", "ms")
    assert v.kind == "tie" and v.tied == ["a", "b"]


def test_nobody_is_ahead_when_every_round_is_level():
    v = decide({"a": rounds(0, 0), "b": rounds(0, 0)}, "lower", "ms")
    assert v.kind == "unclear" and v.ahead is None and v.more == 1
    assert decide({"a": rounds(1, 1), "b": rounds(5, 5)}, "lower", "ms").ahead == "a"
