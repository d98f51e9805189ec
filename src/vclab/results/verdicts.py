"""Verdicts from paired rounds. Pure: numbers in, words out.

The runner interleaves the mechanisms (round 1: sdn, rstp, stp, ...; round 2: ...), so the
repetitions with the same index ran side by side under the same load on the machine: we compare
mechanisms by their paired differences per round, which cancels what the round shared.

The estimate is Hodges–Lehmann (the median of the Walsh averages). From 6 rounds on its interval
is the exact distribution-free one (from the Wilcoxon signed-rank distribution: it assumes only
that a difference is as likely above its centre as below). No interval of that kind reaches 95 %
with fewer than 6 rounds (the widest covers 1 - 2/2^n: 94 % at n = 5), and at about 3 minutes
a round the main job affords 3 or 4. From 3 to 5 rounds the interval is therefore Student's t
interval of the mean difference (df = n - 1: t = 4.30 at n = 3), which assumes roughly normal
differences; each pair says which method gave its interval (`method`). Never below 3 rounds (a
t interval at n = 2 spans thousands of ms), and no bootstrap: with 3 to 5 values a percentile
bootstrap calls a win whenever every round agrees in sign, which chance does 1 time in 4 at n = 3.

A row's verdict, the best mechanism (by median) against each other one:
- "tie": the others whose interval lies within the equivalence margin (max(2 ms, 10 % of the
  smaller median) by default; the margin is printed) are level with X, any other is beaten. A
  difference inside the margin is level even when its interval excludes zero: 0.5 ms is no win.
- "X wins by N": every interval of (other - X) lies above zero and outside the margin; N is the
  estimate against the runner-up.
- "unclear, about N more repetitions needed": otherwise. N assumes the interval narrows as
  1/sqrt(n), and is never fewer than the rounds an interval needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np

from vclab.results.stats import mean_ci

CONFIDENCE = 0.95
# The smallest equivalence margin per unit: below it, differences are not worth a verdict
# (2 ms is about the probe's resolution on the emulator; one lost probe, one false failure).
MARGIN_FLOOR = {"ms": 2.0, "": 1.0, "bit/s": 1e6, "B": 1.0}
MARGIN_SHARE = 0.10  # of the smaller median
MORE_CAP = 999  # "about N more" beyond this says only "many"
LEAST_ROUNDS = 3  # below this no interval at all (see above)

Direction = Literal["lower", "higher"]
VerdictKind = Literal["win", "tie", "unclear", "none"]


@lru_cache(maxsize=64)
def _signed_rank_counts(n: int) -> tuple[int, ...]:
    """How many of the 2^n sign patterns give each signed-rank sum T+ = 0 .. n(n+1)/2."""
    counts = [1]
    for k in range(1, n + 1):
        nxt = counts + [0] * k
        for t, c in enumerate(counts):
            nxt[t + k] += c
        counts = nxt
    return tuple(counts)


def signed_rank_order(n: int, confidence: float = CONFIDENCE) -> tuple[int, float] | None:
    """(k, exact coverage): the interval from the k-th smallest to the k-th largest Walsh average
    covers at least `confidence`; None when even the widest one cannot (n < 6 at 95 %)."""
    if n < 1:
        return None
    counts = _signed_rank_counts(n)
    total = 2 ** n
    alpha_half = (1 - confidence) / 2
    cum, k = 0, 0
    for t, c in enumerate(counts):
        if (cum + c) / total > alpha_half:
            break
        cum += c
        k = t + 1
    if k == 0:
        return None
    return k, 1 - 2 * cum / total


@dataclass(frozen=True)
class Paired:
    """The paired difference (other - best, signed so that positive means best is better)."""

    n: int
    estimate: float | None  # Hodges–Lehmann: the median of the Walsh averages
    low: float | None = None  # None: too few rounds for the interval
    high: float | None = None
    coverage: float | None = None  # signed-rank: its exact coverage (>= 95 %); t: nominal 95 %
    spread: float = 0.0  # standard deviation of the differences, to project the rounds needed
    method: str = ""  # "signed-rank" (n >= 6), "t" (3 <= n < 6), "" (no interval)


def hodges_lehmann(differences: Sequence[float], confidence: float = CONFIDENCE) -> Paired:
    d = np.asarray([float(x) for x in differences], dtype=float)
    n = d.size
    if n == 0:
        return Paired(0, None)
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2)
    estimate = float(np.median(walsh))
    spread = float(d.std(ddof=1)) if n > 1 else 0.0
    order = signed_rank_order(n, confidence)
    if order is not None:
        k, coverage = order
        return Paired(n, estimate, float(walsh[k - 1]), float(walsh[-k]), coverage, spread,
                      "signed-rank")
    if n >= LEAST_ROUNDS:
        low, high = mean_ci(d.tolist(), confidence)
        return Paired(n, estimate, low, high, confidence, spread, "t")
    return Paired(n, estimate, spread=spread)


def equivalence_margin(medians: Sequence[float], unit: str) -> float:
    """max(floor for the unit, 10 % of the smaller median)."""
    floor = MARGIN_FLOOR.get(unit, 0.0)
    smaller = min((abs(m) for m in medians), default=0.0)
    return max(floor, MARGIN_SHARE * smaller)


def rounds_needed(p: Paired, margin: float, confidence: float = CONFIDENCE) -> int:
    """About how many rounds in all would settle this pair (win or tie), the interval's
    half-width shrinking as 1/sqrt(n)."""
    least = LEAST_ROUNDS
    if p.estimate is None or p.n == 0:
        return least
    est = abs(p.estimate)
    if p.low is not None and p.high is not None:
        half = (p.high - p.low) / 2
    else:  # no interval yet: what a normal-theory one would be
        half = 1.96 * p.spread / math.sqrt(max(p.n, 1))
    if half <= 0:
        return max(least, p.n)
    targets = []
    if est > 0:  # to separate from zero
        targets.append(p.n * (half / est) ** 2)
    if est < margin:  # to fit inside the margin
        targets.append(p.n * (half / (margin - est)) ** 2)
    return max(least, math.ceil(min(targets))) if targets else MORE_CAP


@dataclass
class Verdict:
    kind: VerdictKind
    best: str | None = None  # the best median (a win's winner)
    tied: list[str] = field(default_factory=list)  # a tie: the mechanisms it is between
    by: float | None = None  # a win: the estimate against the runner-up
    runner_up: str | None = None
    margin: float | None = None  # the equivalence margin used
    more: int | None = None  # unclear: about this many more repetitions of each mechanism
    pairs: dict[str, Paired] = field(default_factory=dict)  # other mechanism -> difference

    @property
    def clear(self) -> bool:
        return self.kind in ("win", "tie")

    @property
    def ahead(self) -> str | None:
        """Who leads so far; None when every paired estimate is level (nobody does)."""
        if self.best is None or all(p.estimate in (None, 0.0) for p in self.pairs.values()):
            return None
        return self.best


def decide(values: Mapping[str, Mapping[int, float]], direction: Direction | None, unit: str,
           margin: float | None = None, confidence: float = CONFIDENCE) -> Verdict:
    """values: mechanism -> round index -> value. Pairs are the rounds both mechanisms have."""
    scored = {m: v for m, v in values.items() if v}
    if direction is None or len(scored) < 2:
        return Verdict("none")
    sign = 1.0 if direction == "lower" else -1.0
    medians = {m: float(np.median(list(v.values()))) for m, v in scored.items()}
    best = min(scored, key=lambda m: (sign * medians[m], list(scored).index(m)))
    if margin is None:
        margin = equivalence_margin(list(medians.values()), unit)
    pairs: dict[str, Paired] = {}
    for m, v in scored.items():
        if m == best:
            continue
        rounds = sorted(set(v) & set(scored[best]))
        pairs[m] = hodges_lehmann([sign * (v[i] - scored[best][i]) for i in rounds], confidence)
    level = [m for m, p in pairs.items() if p.low is not None and -margin <= p.low
             and p.high <= margin]
    beaten = [m for m, p in pairs.items() if p.low is not None and p.low > 0 and m not in level]
    undecided = [m for m in pairs if m not in beaten and m not in level]
    if not undecided and not level:
        runner = min(beaten, key=lambda m: pairs[m].estimate)
        return Verdict("win", best, by=pairs[runner].estimate, runner_up=runner, margin=margin,
                       pairs=pairs)
    if not undecided:
        return Verdict("tie", best, tied=[best] + level, margin=margin, pairs=pairs)
    have = min(p.n for p in pairs.values())
    need = max(rounds_needed(pairs[m], margin, confidence) for m in undecided)
    return Verdict("unclear", best, margin=margin, more=min(MORE_CAP, max(1, need - have)),
                   pairs=pairs)
