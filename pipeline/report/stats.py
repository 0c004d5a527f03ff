"""The statistics every comparison of two accuracies uses: Wilson's interval for one
accuracy, McNemar's exact test for two classifiers scored on the same test images.

McNemar looks only at the images where the two disagree: ``b`` = right by the second model
only (fixed by it), ``c`` = right by the first only (broken by it). Under "neither is better"
each of those n = b + c images is a fair coin, so the exact two-sided p-value is the binomial
test of b successes in n at 1/2; the one-sided p-value asks whether the second is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import binomtest, norm


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [round(self.low, 6), round(self.high, 6)]


def wilson(correct: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of the proportion ``correct / n``."""
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"wilson: need 0 <= correct <= n and n > 0, got {correct}/{n}")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class McNemar:
    fixed: int  # right by the second model only
    broken: int  # right by the first model only
    p_two_sided: float
    p_better: float  # one-sided: the second model is better

    @property
    def discordant(self) -> int:
        return self.fixed + self.broken


def mcnemar(fixed: int, broken: int) -> McNemar:
    """McNemar's exact test from the two discordant counts (1.0 when there are none)."""
    if fixed < 0 or broken < 0:
        raise ValueError(f"mcnemar: counts must be >= 0, got fixed={fixed} broken={broken}")
    n = fixed + broken
    if n == 0:
        return McNemar(0, 0, 1.0, 1.0)
    two = binomtest(fixed, n, 0.5, alternative="two-sided").pvalue
    better = binomtest(fixed, n, 0.5, alternative="greater").pvalue
    return McNemar(fixed, broken, float(two), float(better))
