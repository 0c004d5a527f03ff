"""The arithmetic and the refusals of ``make seeds`` (pipeline/devtools/seeds.py); the real
runs are in tests/integration/test_seeds.py."""

from __future__ import annotations

import pytest

from pipeline.devtools import seeds


def test_default_seeds_follow_the_committed_one():
    assert seeds.parse_seeds(None, 3, 42) == [43, 44, 45]
    assert seeds.parse_seeds("7, 1", 3, 42) == [7, 1]


@pytest.mark.parametrize(
    ("text", "n", "says"),
    [
        (None, 1, "--n 1: a spread needs at least 2 seeds"),
        ("1,x", 3, "expected integers separated by commas"),
        ("5,5", 3, "need at least 2 distinct seeds"),
    ],
)
def test_bad_seeds_are_one_line(text, n, says):
    with pytest.raises(seeds.SeedsError, match=says):
        seeds.parse_seeds(text, n, 42)


def test_table_and_spread_by_hand():
    results = [
        seeds.SeedResult(1, "s-1", 0.99, (0.985, 0.993), 29, 2904, 41.2, "r1"),
        seeds.SeedResult(2, "s-2", 0.992, None, None, None, 39.6, None),
        seeds.SeedResult(3, "s-3", 0.994, (0.99, 0.996), 17, 2904, 40.0, "r3"),
    ]
    mean, std = seeds.spread([r.accuracy for r in results])
    assert mean == pytest.approx(0.992) and std == pytest.approx(0.002)  # sqrt(8e-6 / 2)
    text = seeds.table("dense_mlp", results)
    assert "| 1 | 0.9900 | 0.9850 – 0.9930 | 29 of 2904 | 41 s | `s-1` |" in text
    assert "| 2 | 0.9920 | n/a | n/a | 40 s | `s-2` |" in text
    assert "test accuracy **0.9920 ± 0.0020** (mean ± standard deviation over 3 seeds" in text
