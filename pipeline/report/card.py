"""The model card of a registered version: markdown built from plain data.

:func:`render` turns a :class:`CardData` into the card's text; pipeline/tracking/cards.py
fills the data from the version, its run and evaluate@'s artifacts and logs the card (when
evaluate@ tags the version, and at each gate decision), so the text is tested without
MLflow. evaluate@<model> calls :func:`write_material` to log, beside the card
(``model_card/`` of the run), the thumbnails of the most common confusions and where the
data came from.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.report.stats import wilson

CARD_DIR = "model_card"  # the run's artifact folder of the card, its thumbnails, data.json
CARD_FILE = "model_card.md"
DATA_FILE = "data.json"
TOP_CONFUSIONS = 5  # confusions listed (and drawn by evaluate@)
EXAMPLES = 4  # test images a thumbnail strip shows
PICTURES_METRIC = "pictures_accuracy"  # a run metric: accuracy on rendered pictures
PICTURES_N_METRIC = "pictures_n"  # how many pictures it was measured on
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Confusion:
    """Test images of class ``actual`` read as ``predicted``."""

    actual: str
    predicted: str
    count: int
    thumbnail: str | None = None  # a PNG beside the card (relative path), if logged


@dataclass(frozen=True)
class CardData:
    """What a card says; every field is plain data (None or empty: not recorded)."""

    preset: str
    version: str
    run_id: str
    dataset: str
    source: str | None  # data.source of params.yaml (mnist, fashion_mnist, idx_dir)
    dataset_md5: str  # DVC hash of the prepared dataset folder
    sizes: dict[str, int | None]  # train, val, test
    classes: list[str]
    family: str
    arch: str  # the readable model.arch param
    train: dict[str, str]  # model.train.* params without the prefix
    seed: str | None
    epochs: int | None
    training_seconds: float | None  # the sum of the epochs' times
    started: str | None  # the run's start, UTC
    machine: dict[str, str]  # env.* tags without the prefix (pipeline/core/numenv.py)
    code: dict[str, str]  # git_commit, git_dirty, dvc_exp_name where recorded
    metrics: dict[str, float]  # accuracy, accuracy_ci95_low/high, loss, macro_*, errors, n_test
    per_class: dict[str, dict[str, float]]  # class -> precision, recall, f1[, support]
    confusions: list[Confusion] = field(default_factory=list)
    pictures: tuple[float, int | None] | None = None  # accuracy on pictures and their count
    gate: dict[str, str] = field(default_factory=dict)  # gate.* tags without the prefix


# ----------------------------------------------------------------- confusions and thumbnails


def thumbnail_name(actual: str, predicted: str) -> str:
    return f"confusion_{actual}_as_{predicted}.png"


def top_confusions(
    actual: Sequence[str], predicted: Sequence[str], k: int = TOP_CONFUSIONS
) -> list[Confusion]:
    """The ``k`` most frequent (actual, predicted) pairs among the wrong images, most first
    (ties in label order)."""
    counts = Counter((str(a), str(p)) for a, p in zip(actual, predicted, strict=True) if a != p)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [Confusion(a, p, n) for (a, p), n in ranked]


def thumbnail_strip(images: np.ndarray, scale: int = 2, gap: int = 2):
    """Images (n, H, W[, 1]) in [0, 1] side by side, enlarged ``scale`` times, as a PIL
    greyscale image (light ink on dark, as the model saw them)."""
    from PIL import Image

    arr = np.asarray(images, dtype=np.float32)
    arr = arr.reshape(arr.shape[0], arr.shape[1], arr.shape[2])
    n, h, w = arr.shape
    big = np.kron(arr, np.ones((scale, scale), dtype=np.float32))
    strip = np.full((h * scale, n * w * scale + (n - 1) * gap), 0.5, dtype=np.float32)
    for i in range(n):
        x0 = i * (w * scale + gap)
        strip[:, x0 : x0 + w * scale] = big[i]
    return Image.fromarray((np.clip(strip, 0, 1) * 255).round().astype(np.uint8), mode="L")


def write_material(
    out: Path, x: np.ndarray, actual: np.ndarray, predicted: np.ndarray, data: dict
) -> list[Path]:
    """Into ``out``: a thumbnail strip of the first :data:`EXAMPLES` test images of each of
    the :data:`TOP_CONFUSIONS` most common confusions, and ``data.json`` (``data``: where the
    data came from); the files written."""
    out.mkdir(parents=True, exist_ok=True)
    actual, predicted = np.asarray(actual).astype(str), np.asarray(predicted).astype(str)
    written = []
    for c in top_confusions(actual, predicted):
        idx = np.flatnonzero((actual == c.actual) & (predicted == c.predicted))[:EXAMPLES]
        path = out / thumbnail_name(c.actual, c.predicted)
        thumbnail_strip(x[idx]).save(path, optimize=True)
        written.append(path)
    path = out / DATA_FILE
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return [*written, path]


# ----------------------------------------------------------------------------- the text


def intended_use(source: str | None, classes: Sequence[str]) -> str:
    """A fixed text per data source: what the model is for and what it is not for."""
    labels = ", ".join(classes) or "?"
    if source == "fashion_mnist":
        return (
            f"Classifies one clothing article (Fashion-MNIST classes {labels}) in a 28x28 "
            "greyscale image, light on a dark background, centred as in Fashion-MNIST "
            "(Zalando's product photos). Made to compare model families and training settings "
            "in this project.\n\n"
            "Limits:\n\n"
            f"- Only the classes {labels}: any other image is still read as one of them (no "
            "reject option).\n"
            "- Not for photographs of people wearing clothes, several articles in one picture, "
            "or other resolutions without the same preprocessing.\n"
            "- Not for decisions about people."
        )
    if source == "idx_dir":
        return (
            f"Classifies a 28x28 greyscale image into one of the classes {labels} of the IDX "
            "files in `data.idx_dir`: its intended use is that of those files, which this "
            "card cannot know; state it with the data.\n\n"
            "Limits:\n\n"
            f"- Only the classes {labels}: any other image is still read as one of them (no "
            "reject option).\n"
            "- Only images prepared as the training images were (size, centring, polarity)."
        )
    return (
        f"Reads one handwritten digit ({labels}) in a 28x28 greyscale image, light ink on a "
        "dark background, size-normalised and centred as in MNIST (the digit in a 20x20 box, "
        "its centre of mass at the centre). Made to compare model families and training "
        "settings in this project, and to read single digits that a person can check.\n\n"
        "Limits:\n\n"
        f"- Only the digits {labels}: any other image, a digit or not, is still read as one of "
        "them (no reject option; look at the probability).\n"
        "- Not for other scripts (letters, Eastern Arabic, Devanagari or Chinese numerals), "
        "printed or multi-digit text, or photographs as they are: `python -m pipeline.predict` "
        "centres and scales a picture first, and accuracy on such pictures is lower than on "
        "MNIST (section above).\n"
        "- MNIST's writers were American Census Bureau employees and high-school students; "
        "other hands may be read less well.\n"
        "- Not for decisions about people (forms, cheques) without a person checking."
    )


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _count(x: int | float | None) -> str:
    return "n/a" if x is None else f"{int(x):,}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    minutes, secs = divmod(seconds, 60)
    return (
        f"{seconds:.1f} s" if minutes < 1 else f"{seconds:.1f} s ({int(minutes)} min {secs:.0f} s)"
    )


def accuracy_interval(metrics: dict[str, float]) -> tuple[float, float] | None:
    """The 95% Wilson interval of the test accuracy: the recorded one, else from the
    accuracy and ``n_test`` (None: neither)."""
    low, high = metrics.get("accuracy_ci95_low"), metrics.get("accuracy_ci95_high")
    if low is not None and high is not None:
        return float(low), float(high)
    acc, n = metrics.get("accuracy"), metrics.get("n_test")
    if acc is None or not n:
        return None
    ci = wilson(round(acc * n), int(n))
    return ci.low, ci.high


def _data(d: CardData) -> list[str]:
    sizes = d.sizes
    rows = [
        ["source", f"`{d.source}`" if d.source else "not recorded"],
        ["dataset", f"`{d.dataset}`"],
        ["classes", ", ".join(d.classes) or "not recorded"],
        ["dataset_dvc_md5", f"`{d.dataset_md5}`"],
        ["train / val / test images", " / ".join(_count(sizes.get(s)) for s in SPLITS)],
    ]
    return ["## Data", "", *_table(["data", "value"], rows)]


def _model(d: CardData) -> list[str]:
    lines = ["## Model", "", f"Family `{d.family}`, seed {d.seed or 'not recorded'}.", ""]
    lines += [f"Architecture: `{d.arch}`" if d.arch else "Architecture: not recorded", ""]
    rows = [[f"`{k}`", f"`{v}`"] for k, v in sorted(d.train.items())]
    return lines + (_table(["train param", "value"], rows) if rows else ["No train params."])


def _training(d: CardData) -> list[str]:
    m = d.machine
    epochs = "not recorded" if d.epochs is None else str(d.epochs)
    cpu = m.get("cpu_model", "not recorded")
    if m.get("cpus"):
        cpu += f", {m['cpus']} CPUs"
    if m.get("cpu_isa"):
        cpu += f" ({m['cpu_isa']})"
    libs = ", ".join(f"{k} {m[k]}" for k in ("python", "numpy", "tensorflow", "keras") if k in m)
    commit = d.code.get("git_commit", "not recorded")
    rows = [
        ["epochs", epochs],
        ["training time (sum of the epochs)", _duration(d.training_seconds)],
        ["started (UTC)", d.started or "not recorded"],
        ["machine", cpu],
        ["numeric environment", f"fingerprint `{m.get('fingerprint', 'n/a')}`; {libs or 'n/a'}"],
        ["code", f"`{commit}`, git_dirty {d.code.get('git_dirty', 'not recorded')}"],
    ]
    if d.code.get("dvc_exp_name"):
        rows.append(["DVC experiment", f"`{d.code['dvc_exp_name']}`"])
    return ["## Training", "", *_table(["training", "value"], rows)]


def _metrics(d: CardData) -> list[str]:
    m = d.metrics
    ci = accuracy_interval(m)
    interval = "n/a" if ci is None else f"{_pct(ci[0])} – {_pct(ci[1])}"
    rows = [
        ["accuracy", _pct(m.get("accuracy")), interval],
        ["errors", f"{_count(m.get('errors'))} of {_count(m.get('n_test'))}", ""],
        ["log loss", _num(m.get("loss")), ""],
        ["macro F1", _num(m.get("macro_f1")), ""],
        ["macro precision", _num(m.get("macro_precision")), ""],
        ["macro recall", _num(m.get("macro_recall")), ""],
    ]
    return ["## Test metrics", "", *_table(["metric", "value", "95% Wilson interval"], rows)]


def _per_class(d: CardData) -> list[str]:
    if not d.per_class:
        return ["## Per class", "", "Not recorded."]
    rows = [
        [
            f"`{c}`",
            _num(f.get("precision")),
            _num(f.get("recall")),
            _num(f.get("f1")),
            _count(f.get("support")),
        ]
        for c, f in d.per_class.items()
    ]
    return ["## Per class", "", *_table(["class", "precision", "recall", "F1", "images"], rows)]


def _confusions(d: CardData) -> list[str]:
    lines = ["## Most common confusions", ""]
    if not d.confusions:
        return [*lines, "None: every test image was read right, or no predictions were logged."]
    rows = []
    for c in d.confusions:
        pic = f"![{c.actual} read as {c.predicted}]({c.thumbnail})" if c.thumbnail else ""
        rows.append([f"`{c.actual}`", f"`{c.predicted}`", _count(c.count), pic])
    note = f"The first {EXAMPLES} test images of each pair, as the model saw them."
    return [*lines, *_table(["actual", "read as", "images", "examples"], rows), "", note]


def _pictures(d: CardData) -> list[str]:
    lines = ["## Off-distribution pictures", ""]
    if d.pictures is None:
        return [
            *lines,
            "Not measured for this run (`python -m pipeline.predict.foreign --model "
            f"{d.preset}` renders MNIST test digits as ordinary pictures and reads them back).",
        ]
    acc, n = d.pictures
    text = f"Accuracy {_pct(acc)} on MNIST test digits rendered as ordinary pictures"
    if n:
        ci = wilson(round(acc * n), n)
        text += f" ({_count(n)} pictures; 95% Wilson interval {_pct(ci.low)} – {_pct(ci.high)})"
    return [*lines, text + "."]


GATE_ROWS = (
    ("champion", "compared with version"),
    ("fixed", "test images fixed (right here, wrong by the champion)"),
    ("broken", "test images broken (wrong here, right by the champion)"),
    ("p_value", "McNemar's exact one-sided p"),
    ("alpha", "significance level alpha"),
    ("worst_class", "class with the largest recall drop"),
    ("worst_class_drop", "its drop (points)"),
    ("max_class_drop", "largest drop allowed (points)"),
)


def _gate(d: CardData) -> list[str]:
    g = d.gate
    lines = ["## Promotion gate", ""]
    if "decision" not in g:
        return [
            *lines,
            "Not decided: the gate of the plot stage has not seen this version yet (a DVC "
            "experiment of some stages only, such as a `make seeds` study, never reaches it).",
        ]
    by_hand = "promoted by hand" in g.get("line", "")
    decision = f"**{g['decision']}**" + (" (promoted by hand)" if by_hand else "")
    lines += [f"Decision: {decision}.", "", f"> {g.get('line', '')}", ""]
    rows = [[label, f"`{g[key]}`"] for key, label in GATE_ROWS if key in g]
    lines += _table(["gate", "value"], rows) if rows else []
    lines += [
        "",
        "The decision when it was made (pipeline/tracking/gate.py); the registry's aliases "
        "show where `champion` is now.",
    ]
    return lines


def render(d: CardData) -> str:
    """The card's markdown."""
    head = [
        f"# Model card: {d.preset} version {d.version}",
        "",
        f"Registered model `{d.preset}`, version {d.version}, run `{d.run_id}`. Written by "
        "pipeline/tracking/cards.py when evaluate@ scored the version, and again at each "
        "decision of the promotion gate.",
    ]
    sections = [
        head,
        _data(d),
        _model(d),
        _training(d),
        _metrics(d),
        _per_class(d),
        _confusions(d),
        _pictures(d),
        _gate(d),
        ["## Intended use and limits", "", intended_use(d.source, d.classes)],
    ]
    return "\n\n".join("\n".join(s) for s in sections) + "\n"
