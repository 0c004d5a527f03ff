"""The compare report's uncertainty (#26 item 4): each accuracy's 95% Wilson interval and
McNemar's exact test on the images where A and B disagree, in the headline, the page, its
JSON block and the CLI's summary, checked against hand computations for small counts."""

from __future__ import annotations

import json
import math
import re

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline import tracking
from pipeline.compare import analysis, cli, report
from pipeline.compare.analysis import RunData
from pipeline.core import config
from tests.helpers import empty_store

CLASSES = ["0", "2", "5"]
Z = 1.959963984540054  # the 97.5% point of the standard normal


def hand_wilson(correct: int, n: int) -> tuple[float, float]:
    p, z2 = correct / n, Z * Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half


def runs(fixed: int, broken: int, both_wrong: int, both_right: int) -> tuple[RunData, RunData]:
    """A and B on the same test images, laid out in that order: ``fixed`` images A gets wrong
    and B right, then ``broken``, ``both_wrong``, ``both_right``; image i is of class i % 3
    and a wrong prediction is the next class."""
    n = fixed + broken + both_wrong + both_right
    actual = np.arange(n) % 3
    wrong = (actual + 1) % 3
    a_right = np.r_[np.zeros(fixed), np.ones(broken), np.zeros(both_wrong), np.ones(both_right)]
    b_right = np.r_[np.ones(fixed), np.zeros(broken), np.zeros(both_wrong), np.ones(both_right)]

    def run(label: str, right: np.ndarray) -> RunData:
        predicted = np.where(right.astype(bool), actual, wrong)
        return RunData(
            label=label,
            run_id=label.lower() * 32,
            params={f"dataset.classes.{i}": c for i, c in enumerate(CLASSES)},
            tags={"preset": "dense_mlp", "dataset": "digits025", "dataset_dvc_md5": "abc.dir"},
            metrics={"test_accuracy": float(right.mean())},
            history={},
            actual=actual,
            predicted=predicted,
        )

    return run("A", a_right), run("B", b_right)


def compare_data(page: str) -> dict:
    found = re.search(r"<script type='application/json' id='compare-data'>(.*?)</script>", page)
    assert found, "no compare-data block in the page"
    return json.loads(found.group(1).replace("<\\/", "</"))


def test_small_counts_within_noise():
    # 20 images: 7 fixed, 3 broken, 2 wrong in both, 8 right in both -> A 11/20, B 15/20
    c = analysis.analyse(*runs(7, 3, 2, 8), CLASSES)
    for run, correct in ((c.a, 11), (c.b, 15)):
        low, high = hand_wilson(correct, 20)
        assert c.correct(run) == correct
        assert (c.interval(run).low, c.interval(run).high) == pytest.approx((low, high), abs=1e-12)
    # by hand: A 11/20 -> [0.3421, 0.7418]; B 15/20 -> [0.5313, 0.8881]
    assert c.interval(c.a).low == pytest.approx(0.34208, abs=1e-5)
    assert c.interval(c.b).high == pytest.approx(0.88814, abs=1e-5)
    # P(X >= 7), X ~ Bin(10, 1/2) = (120 + 45 + 10 + 1) / 1024; two-sided: twice that
    test = c.mcnemar_test
    assert (test.fixed, test.broken) == (7, 3)
    assert test.p_better == pytest.approx(176 / 1024)
    assert test.p_two_sided == pytest.approx(352 / 1024)
    assert not c.significant
    assert c.verdict() == (
        "B is better by 20.00 percentage points (7 images fixed, 3 broken): "
        "McNemar p = 0.34, within noise"
    )
    data = c.data()
    assert data["accuracy_a_interval"] == pytest.approx(list(hand_wilson(11, 20)), abs=1e-6)
    assert data["accuracy_b_interval"] == pytest.approx(list(hand_wilson(15, 20)), abs=1e-6)
    assert data["mcnemar"] == {
        "fixed": 7,
        "broken": 3,
        "p_two_sided": pytest.approx(352 / 1024),
        "p_b_better": pytest.approx(176 / 1024),
        "alpha": 0.05,
        "significant": False,
    }


def test_per_class_recall_gets_its_own_mcnemar():
    c = analysis.analyse(*runs(7, 3, 2, 8), CLASSES)
    rows = {r["class"]: r for r in c.per_class}
    # fixed images 0..6 are of classes 0,1,2,0,1,2,0 and broken 7,8,9 of classes 1,2,0
    assert {k: (r["fixed"], r["broken"]) for k, r in rows.items()} == {
        "0": (3, 1),
        "2": (2, 1),
        "5": (2, 1),
    }
    # class "0": 3 of 4 discordant, two-sided 2 * (4 + 1) / 16; 2 of 3: 2 * (3 + 1) / 8 = 1
    assert rows["0"]["recall_p"] == pytest.approx(10 / 16)
    assert rows["2"]["recall_p"] == pytest.approx(1.0)
    for r in rows.values():  # the recall delta is (fixed - broken) / support
        assert r["recall_delta"] == pytest.approx((r["fixed"] - r["broken"]) / r["support"])


def test_a_clear_difference_is_significant_either_way():
    # 10 fixed, 0 broken: two-sided p = 2 / 2**10
    c = analysis.analyse(*runs(10, 0, 0, 10), CLASSES)
    assert c.mcnemar_test.p_two_sided == pytest.approx(2 / 1024)
    assert c.significant
    assert c.verdict() == (
        "B is better by 50.00 percentage points (10 images fixed, 0 broken): "
        "McNemar p = 0.002, significant at 0.05"
    )
    # B gets all 20 right: the interval's low end is then n / (n + z^2), its high end 1
    assert c.interval(c.b).low == pytest.approx(20 / (20 + Z * Z))
    assert c.interval(c.b).high == pytest.approx(1.0)
    a, b = runs(10, 0, 0, 10)
    a.label, b.label = "B", "A"
    worse = analysis.analyse(b, a, CLASSES)
    assert worse.verdict().startswith("B is worse by 50.00 percentage points (0 images fixed")
    assert worse.significant and worse.mcnemar_test.p_better == pytest.approx(1.0)


def test_no_disagreement_and_ties():
    same = analysis.analyse(*runs(0, 0, 4, 16), CLASSES)
    assert same.mcnemar_test.p_two_sided == 1.0 and not same.significant
    assert "no difference" in same.verdict()
    tie = analysis.analyse(*runs(1, 1, 0, 18), CLASSES)
    assert tie.verdict() == (
        "A and B are equally accurate (1 image fixed, 1 broken): McNemar p = 1, within noise"
    )


def test_p_value_text_never_rounds_across_alpha():
    assert analysis.format_p(0.0496) == "0.0496"  # "0.05" would read as not below 0.05
    assert analysis.format_p(0.034) == "0.034"
    assert analysis.format_p(0.4512) == "0.45"
    assert analysis.format_p(1.0) == "1"


def test_empty_predictions_are_refused():
    a, b = runs(0, 0, 0, 3)
    a.actual, a.predicted = a.actual[:0], a.predicted[:0]
    with pytest.raises(analysis.CompareError, match="run A has no per-image test predictions"):
        analysis.analyse(a, b, CLASSES)


def test_page_headline_intervals_and_significance_section():
    c = analysis.analyse(*runs(7, 3, 2, 8), CLASSES)
    page = report.render(c)
    headline = re.search(r"<p class='summary' id='verdict'><b>(.*?)</b></p>", page)
    assert headline and headline.group(1) == c.verdict() + "."
    assert page.index("id='verdict'") < page.index("id='runs'")
    lo_a, hi_a = hand_wilson(11, 20)
    lo_b, hi_b = hand_wilson(15, 20)
    assert f"A 0.5500 [{lo_a:.4f}, {hi_a:.4f}] → B 0.7500 [{lo_b:.4f}, {hi_b:.4f}]" in page
    section = page[page.index("id='significance'") : page.index("id='metrics'")]
    assert "<td class='num'>11 / 20</td>" in section and "<td class='num'>15 / 20</td>" in section
    assert "on the 10 test images where A and B disagree" in section
    cells = re.findall(r"<td class='num'>([^<]*)</td>", section)
    assert cells[-4:] == ["7", "3", "0.34", "0.17"]  # fixed, broken, two-sided, one-sided
    # the logged test_accuracy carries the same interval in the metrics table
    metrics = page[page.index("id='metrics'") : page.index("id='curves'")]
    assert f"95% CI [{lo_a:.4f}, {hi_a:.4f}]" in metrics
    assert f"95% CI [{lo_b:.4f}, {hi_b:.4f}]" in metrics
    assert compare_data(page)["verdict"] == c.verdict()
    assert not re.search(r"(src|href)=['\"](https?:|//|file:)", page)  # nothing to fetch
    significant = report.render(analysis.analyse(*runs(10, 0, 0, 10), CLASSES))
    assert "<p class='summary' id='verdict'><b class='better'>B is better" in significant


def test_cli_prints_intervals_and_verdict(tmp_path, monkeypatch, capsys):
    """Two real runs in a scratch sqlite store, each with the predictions.csv evaluate@ logs
    (digits, not class indices)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setattr(config, "ROOT", tmp_path)
    empty_store(tmp_path)
    tracking.setup("significance", root=tmp_path)
    digits = np.array([int(c) for c in CLASSES])
    ids = []
    for run in runs(7, 3, 2, 8):
        csv = tmp_path / run.label / config.PREDICTIONS_CSV
        csv.parent.mkdir()
        pd.DataFrame(
            {
                "index": np.arange(len(run.actual)),
                "actual": digits[run.actual],
                "predicted": digits[run.predicted],
            }
        ).to_csv(csv, index=False)
        with mlflow.start_run(tags={"preset": f"run_{run.label}"}) as logged:
            mlflow.log_params(run.params)
            mlflow.log_artifact(str(csv), config.EVALUATION_ARTIFACTS)
        ids.append(logged.info.run_id)
    out = tmp_path / "r.html"
    assert cli.main([*ids, "-o", str(out), "--no-log"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("compare:")]
    lo_a, hi_a = hand_wilson(11, 20)
    lo_b, hi_b = hand_wilson(15, 20)
    assert f"accuracy 0.5500 (95% CI {lo_a:.4f}-{hi_a:.4f})" in lines[0]
    assert f"0.7500 (95% CI {lo_b:.4f}-{hi_b:.4f}) on 20 test images: B fixes 7" in lines[0]
    assert lines[1] == (
        "compare: B is better by 20.00 percentage points (7 images fixed, 3 broken): "
        "McNemar p = 0.34, within noise"
    )
    assert compare_data(out.read_text())["mcnemar"]["p_two_sided"] == pytest.approx(352 / 1024)
