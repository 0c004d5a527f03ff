"""Wilson's interval and McNemar's exact test against hand computations."""

from __future__ import annotations

import math

import pytest

from pipeline.report.stats import mcnemar, wilson


def test_wilson_matches_the_formula_by_hand():
    # 9,948 of 10,000 right, z = 1.959964 (95%)
    z, n, p = 1.959963984540054, 10_000, 0.9948
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    got = wilson(9948, 10_000)
    assert got.low == pytest.approx(centre - half, abs=1e-12)
    assert got.high == pytest.approx(centre + half, abs=1e-12)
    assert 0.9931 < got.low < 0.9948 < got.high < 0.9961


def test_wilson_stays_inside_zero_and_one():
    assert wilson(10, 10).high == pytest.approx(1.0)
    assert wilson(0, 10).low == 0.0
    with pytest.raises(ValueError, match="0 <= correct <= n"):
        wilson(11, 10)


def test_mcnemar_exact_by_hand():
    # 10 discordant images, all fixed by B: p(one-sided) = 0.5**10, two-sided twice that
    r = mcnemar(10, 0)
    assert r.p_better == pytest.approx(0.5**10)
    assert r.p_two_sided == pytest.approx(2 * 0.5**10)
    # 7 fixed, 3 broken: P(X >= 7), X ~ Bin(10, 1/2) = (120 + 45 + 10 + 1) / 1024
    r = mcnemar(7, 3)
    assert r.p_better == pytest.approx(176 / 1024)
    assert r.p_two_sided == pytest.approx(min(1.0, 2 * 176 / 1024))
    assert mcnemar(0, 0).p_two_sided == 1.0
    assert mcnemar(3, 7).p_better > 0.9
