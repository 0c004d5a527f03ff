"""The per-run predictions grid (plots/<model>/images/predictions_grid.png) shows the test
images the model got wrong, with their true and predicted labels."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.report import figures


def _digits(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((n, 28, 28, 1)).astype(np.float32)


def test_the_grid_shows_only_mistakes_with_true_and_predicted_labels(tmp_path):
    y_true = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    y_pred = np.array([0, 1, 2, 1, 1, 0, 0, 1, 2, 0])  # wrong: #3 (0 as 2), #5 (5 as 0)
    names = ["0", "2", "5"]
    fig = figures.mistakes_grid(_digits(10), y_true, y_pred, names, "m: test mistakes")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["#3: true 0, pred 2", "#5: true 5, pred 0"]
    assert fig._suptitle.get_text() == "m: test mistakes\n2 of 10 test images wrong"
    png = figures.save(fig, tmp_path / "g.png")
    with Image.open(png) as img:
        assert min(img.size) > 300


def test_many_mistakes_show_the_first_sixteen_and_none_is_said(tmp_path):
    y_true = np.zeros(40, dtype=int)
    y_pred = np.ones(40, dtype=int)
    fig = figures.mistakes_grid(_digits(40), y_true, y_pred, ["a", "b"], "t")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 16 and titles[0] == "#0: true a, pred b" and titles[-1].startswith("#15:")
    assert fig._suptitle.get_text() == "t\n40 of 40 test images wrong, first 16 shown"
    figures.save(fig, tmp_path / "many.png")
    none = figures.mistakes_grid(_digits(5), y_true[:5], y_true[:5], ["a", "b"], "t")
    assert "no mistakes on the 5 test images" in [t.get_text() for t in none.texts]
    figures.save(none, tmp_path / "none.png")
