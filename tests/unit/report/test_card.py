"""The model card's text (pipeline/report/card.py) from hand-made data: every section, the
numbers as people read them, the gate's decision; and the confusion thumbnails."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.report import card

SECTIONS = [
    "# Model card: keras_cnn version 7",
    "## Data",
    "## Model",
    "## Training",
    "## Test metrics",
    "## Per class",
    "## Most common confusions",
    "## Off-distribution pictures",
    "## Promotion gate",
    "## Intended use and limits",
]


def data(**changes) -> card.CardData:
    base = card.CardData(
        preset="keras_cnn",
        version="7",
        run_id="abc123",
        dataset="digits10",
        source="mnist",
        dataset_md5="0123abcd.dir",
        sizes={"train": 54000, "val": 6000, "test": 10000},
        classes=[str(c) for c in range(10)],
        family="keras",
        arch="conv(64, 3x3) | pool(2) | flatten | dense(10, activation=softmax)",
        train={"epochs": "15", "learning_rate": "0.001", "optimizer": "adam"},
        seed="42",
        epochs=15,
        training_seconds=312.44,
        started="2026-12-03 19:22:55",
        machine={"cpu_model": "AMD EPYC", "cpus": "2", "fingerprint": "6ecb510187bb"},
        code={"git_commit": "95b54fa", "git_dirty": "false"},
        metrics={
            "accuracy": 0.9948,
            "accuracy_ci95_low": 0.993352,
            "accuracy_ci95_high": 0.996037,
            "loss": 0.016789,
            "macro_f1": 0.99478,
            "errors": 52,
            "n_test": 10000,
        },
        per_class={
            "3": {"precision": 0.99407, "recall": 0.996, "f1": 0.995, "support": 1010},
            "9": {"precision": 0.99, "recall": 0.9871, "f1": 0.9885, "support": 1009},
        },
        confusions=[
            card.Confusion("9", "4", 6, "confusion_9_as_4.png"),
            card.Confusion("7", "2", 4, None),
        ],
        gate={
            "decision": "challenger",
            "line": "keras_cnn: champion stays v6 (test_accuracy 0.9945); v7 (0.9948) stays "
            "challenger: not significant (p=0.3437 >= alpha 0.05)",
            "champion": "6",
            "fixed": "9",
            "broken": "6",
            "p_value": "0.303619",
            "alpha": "0.05",
            "worst_class": "9",
            "worst_class_drop": "0.3964",
            "max_class_drop": "0.5",
        },
    )
    return card.CardData(**(base.__dict__ | changes))


def test_every_section_with_its_numbers():
    text = card.render(data())
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "| source | `mnist` |" in text and "`0123abcd.dir`" in text
    assert "| train / val / test images | 54,000 / 6,000 / 10,000 |" in text
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in text
    assert "`conv(64, 3x3) | pool(2) | flatten | dense(10, activation=softmax)`" in text
    assert "| `learning_rate` | `0.001` |" in text and "Family `keras`, seed 42." in text
    assert "| training time (sum of the epochs) | 312.4 s (5 min 12 s) |" in text
    assert "AMD EPYC, 2 CPUs" in text and "fingerprint `6ecb510187bb`" in text
    assert "| accuracy | 99.48% | 99.34% – 99.60% |" in text
    assert "| errors | 52 of 10,000 |  |" in text and "| log loss | 0.0168 |  |" in text
    assert "| `9` | 0.9900 | 0.9871 | 0.9885 | 1,009 |" in text
    assert "| `9` | `4` | 6 | ![9 read as 4](confusion_9_as_4.png) |" in text
    assert "| `7` | `2` | 4 |  |" in text  # no thumbnail logged: no broken image link
    assert "Not measured for this run" in text and "--model keras_cnn" in text


def test_the_gate_decision_and_its_numbers():
    text = card.render(data())
    gate = text[text.index("## Promotion gate") : text.index("## Intended use")]
    assert "Decision: **challenger**." in gate
    assert "> keras_cnn: champion stays v6" in gate and "not significant" in gate
    assert "| McNemar's exact one-sided p | `0.303619` |" in gate
    assert "| compared with version | `6` |" in gate
    assert "| its drop (points) | `0.3964` |" in gate
    by_hand = {"decision": "champion", "line": "k: champion v6 -> v7 (promoted by hand); ..."}
    assert "Decision: **champion** (promoted by hand)." in card.render(data(gate=by_hand))
    assert "Not decided: the gate of the plot stage" in card.render(data(gate={}))


def test_missing_figures_are_said_not_guessed():
    text = card.render(
        data(
            metrics={"accuracy": 0.99, "n_test": 1000},  # an older run: no interval recorded
            per_class={},
            confusions=[],
            training_seconds=None,
            source=None,
            pictures=(0.9712, 1000),
        )
    )
    assert "| accuracy | 99.00% | 98.17% – 99.46% |" in text  # Wilson from 990/1000
    assert "| source | not recorded |" in text and "not recorded" in text
    assert "None: every test image was read right" in text
    assert "Accuracy 97.12% on MNIST test digits rendered as ordinary pictures" in text
    assert "1,000 pictures; 95% Wilson interval 95.87% – 97.97%" in text


@pytest.mark.parametrize(
    ("source", "words"),
    [("mnist", "handwritten digit"), ("fashion_mnist", "clothing"), ("idx_dir", "IDX files")],
)
def test_intended_use_follows_the_data_source(source, words):
    text = card.intended_use(source, ["0", "2", "5"])
    assert words in text and "Limits:" in text and "0, 2, 5" in text


def test_top_confusions_and_their_thumbnails(tmp_path):
    actual = np.array(["0", "0", "2", "2", "2", "5", "5", "5", "5"])
    predicted = np.array(["0", "5", "0", "0", "5", "0", "0", "0", "5"])
    top = card.top_confusions(actual, predicted, k=2)
    assert [(c.actual, c.predicted, c.count) for c in top] == [("5", "0", 3), ("2", "0", 2)]
    x = np.random.default_rng(0).random((9, 28, 28, 1)).astype(np.float32)
    written = card.write_material(tmp_path, x, actual, predicted, {"source": "mnist"})
    names = [p.name for p in written]
    assert names[:2] == ["confusion_5_as_0.png", "confusion_2_as_0.png"]
    assert json.loads((tmp_path / card.DATA_FILE).read_text()) == {"source": "mnist"}
    with Image.open(tmp_path / "confusion_5_as_0.png") as img:  # 3 images of 56 px, 2 gaps
        assert img.size == (3 * 56 + 2 * 2, 56) and img.mode == "L"
        strip = np.asarray(img)
    first = np.round(x[5, :, :, 0] * 255)  # the first 5-read-as-0 image, enlarged twice
    assert np.array_equal(strip[::2, 0:56:2], first.astype(np.uint8))
