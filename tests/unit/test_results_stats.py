"""Summaries over repetitions: percentiles, the t interval (checked by simulated coverage), and
honest handling of 0 and 1 values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vclab.results.stats import bootstrap_ci, mean_ci, percentile, summarize, t_quantile


def test_t_quantiles_match_the_tables():
    assert t_quantile(1) == 12.706
    assert t_quantile(2) == 4.303
    assert t_quantile(9, 0.99) == 3.250
    assert t_quantile(30, 0.90) == 1.697
    assert t_quantile(10**9) == pytest.approx(1.960, abs=1e-3)
    # between rows: interpolated in 1/df, and monotone
    assert 2.021 < t_quantile(35) < 2.042
    qs = [t_quantile(df) for df in range(1, 200)]
    assert all(a > b for a, b in zip(qs, qs[1:]))
    with pytest.raises(ValueError):
        t_quantile(0)
    with pytest.raises(ValueError):
        t_quantile(5, 0.8)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_t_interval_covers_the_true_mean_95_percent_of_the_time(n):
    rng = np.random.default_rng(42)
    trials = 4000
    hits = 0
    for _ in range(trials):
        low, high = mean_ci(rng.normal(15.0, 2.0, n).tolist())
        hits += low <= 15.0 <= high
    # binomial sd at p=0.95, 4000 trials: 0.0034; allow ~4 sd
    assert abs(hits / trials - 0.95) < 0.015


def test_nearest_rank_percentile_is_a_measured_value():
    assert percentile(list(range(1, 11)), 95) == 10
    assert percentile([1, 2, 3], 50) == 2
    assert percentile([3.5], 95) == 3.5
    assert percentile([8.0, 16.0, 10600.0], 95) == 10600.0


def test_too_few_values_say_so():
    empty = summarize([])
    assert empty.n == 0 and empty.median is None and empty.ci_low is None
    one = summarize([12.5])
    assert (one.n, one.median, one.p95, one.max, one.mean) == (1, 12.5, 12.5, 12.5, 12.5)
    assert one.ci_low is None and one.ci_high is None  # no zero-width interval pretending
    assert mean_ci([1.0]) is None and bootstrap_ci([1.0]) is None
    two = summarize([10.0, 20.0])
    assert two.median == 15.0 and two.max == 20.0
    # mean 15, sd 7.07, t(1)=12.706: half width 63.5
    assert two.ci_low == pytest.approx(15 - 12.706 * 7.0711 / math.sqrt(2), rel=1e-4)
    assert summarize([1.0, float("nan"), 3.0]).n == 2


def test_bootstrap_is_reproducible():
    data = [8.0, 8.5, 7.9, 8.3, 9.1, 8.8, 7.7, 8.1]
    assert bootstrap_ci(data) == bootstrap_ci(data)
    low, high = bootstrap_ci(data)
    assert min(data) <= low <= np.median(data) <= high <= max(data)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=2, max_size=40))
def test_summary_invariants(values):
    s = summarize(values)
    assert s.n == len(values)
    assert s.min <= s.median <= s.p95 <= s.max
    tol = 1e-9 * max(1.0, s.max)
    assert s.ci_low - tol <= s.mean <= s.ci_high + tol
