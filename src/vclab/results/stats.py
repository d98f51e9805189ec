"""Summaries over repetitions: median, p95, max, mean and a confidence interval. Pure.

The interval is Student's t interval of the mean. With the 3 to 10 repetitions an emulation run
affords, a bootstrap percentile interval is too narrow (it cannot reach beyond the observed
values), while the t interval widens honestly as n shrinks. With fewer than 2 values there is
no interval at all, and we say so rather than print a zero-width one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Two-sided Student t quantiles t_{1-(1-c)/2, df} for c = 0.90, 0.95, 0.99 (any statistics
# table; scipy.stats.t.ppf gives the same to 3 decimals). Between rows we interpolate in 1/df.
_T_TABLE: dict[float, dict[float, float]] = {
    0.90: {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860,
           9: 1.833, 10: 1.812, 11: 1.796, 12: 1.782, 13: 1.771, 14: 1.761, 15: 1.753,
           16: 1.746, 17: 1.740, 18: 1.734, 19: 1.729, 20: 1.725, 21: 1.721, 22: 1.717,
           23: 1.714, 24: 1.711, 25: 1.708, 26: 1.706, 27: 1.703, 28: 1.701, 29: 1.699,
           30: 1.697, 40: 1.684, 60: 1.671, 120: 1.658, math.inf: 1.645},
    0.95: {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
           9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
           16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
           23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
           30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980, math.inf: 1.960},
    0.99: {1: 63.657, 2: 9.925, 3: 5.841, 4: 4.604, 5: 4.032, 6: 3.707, 7: 3.499, 8: 3.355,
           9: 3.250, 10: 3.169, 11: 3.106, 12: 3.055, 13: 3.012, 14: 2.977, 15: 2.947,
           16: 2.921, 17: 2.898, 18: 2.878, 19: 2.861, 20: 2.845, 21: 2.831, 22: 2.819,
           23: 2.807, 24: 2.797, 25: 2.787, 26: 2.779, 27: 2.771, 28: 2.763, 29: 2.756,
           30: 2.750, 40: 2.704, 60: 2.660, 120: 2.617, math.inf: 2.576},
}


def t_quantile(df: float, confidence: float = 0.95) -> float:
    """The two-sided Student t critical value for `df` degrees of freedom."""
    if confidence not in _T_TABLE:
        raise ValueError(f"confidence {confidence} is not one of {', '.join(map(str, _T_TABLE))}")
    if df < 1:
        raise ValueError("a t interval needs at least 1 degree of freedom (2 values)")
    table = _T_TABLE[confidence]
    if df in table:
        return table[df]
    rows = sorted(table)
    hi = next(r for r in rows if r > df)
    lo = max(r for r in rows if r < df)
    # t is close to linear in 1/df, which also handles the last step to infinity (1/inf = 0).
    x, x0, x1 = 1 / df, 1 / lo, 1 / hi
    return table[lo] + (table[hi] - table[lo]) * (x - x0) / (x1 - x0)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always a value that was actually measured."""
    return float(np.percentile(np.asarray(values, dtype=float), q, method="inverted_cdf"))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student t interval of the mean; None with fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    a = np.asarray(values, dtype=float)
    half = t_quantile(n - 1, confidence) * float(a.std(ddof=1)) / math.sqrt(n)
    m = float(a.mean())
    return m - half, m + half


def bootstrap_ci(values: Sequence[float], statistic: Callable = np.median, confidence: float = 0.95,
                 resamples: int = 5000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval with a fixed seed (same data, same interval); None for n < 2.
    Use it for many repetitions (n >= ~20) or statistics other than the mean."""
    if len(values) < 2:
        return None
    a = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    stats = statistic(rng.choice(a, size=(resamples, a.size), replace=True), axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail))


@dataclass(frozen=True)
class Summary:
    n: int
    median: float | None = None
    p95: float | None = None
    max: float | None = None
    min: float | None = None
    mean: float | None = None
    ci_low: float | None = None  # None: fewer than 2 values, no interval
    ci_high: float | None = None
    confidence: float = 0.95

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """n, median, p95, max, min, mean and the t interval of the mean (None where undefined)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return Summary(0, confidence=confidence)
    ci = mean_ci(vals, confidence)
    return Summary(len(vals), float(np.median(vals)), percentile(vals, 95), max(vals), min(vals),
                   float(np.mean(vals)), ci[0] if ci else None, ci[1] if ci else None, confidence)
