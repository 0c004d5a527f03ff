"""Train, save, load and run models of the ``ensemble`` family (``models.<name>.family``).

``train`` reads the members' trained models from the sibling folders ``models/<member>/``
(through each member's own family), fits the weights on the validation split (``weights:
val``; never the test split) and saves ``models/<ensemble>/model/``: ``ensemble.json``
(members, weights, tta, the sha256 of each member file) and ``members/<member>/`` with a hard
link (or copy) of each member's pickle-free model file, so the folder is self-contained and
is logged to MLflow as it is (a pyfunc of flavor.py; loaders read it without running it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.io import BadModelFile

MODEL_FILE = "model/ensemble.json"  # under models/<ensemble>/
MEMBER_FILES = {"model.keras": "keras", "model.npz": "scratch"}  # file name -> family
MODEL_FILE_DIR = "model"
FIT_STEPS = 500  # converged by 300 on the default run's members (val log-loss to 1e-5)
FIT_RATE = 5.0
TRAIN_ROWS = 2000  # history's loss/accuracy: the first training images (the members saw them)


@dataclass(frozen=True)
class Ensemble:
    members: tuple[str, ...]
    weights: np.ndarray  # (M,), summing to 1
    shifts: int  # TTA: 0 = the image only
    models: tuple[tuple[Any, Any], ...]  # (family module, model) a member


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def member_file(folder: Path) -> tuple[Path, str]:
    """The pickle-free model file of a member folder and its family name."""
    for name, fam in MEMBER_FILES.items():
        if (folder / name).is_file():
            return folder / name, fam
    raise BadModelFile(f"{folder}: no trained model ({' or '.join(MEMBER_FILES)})")


def _load_member(folder: Path) -> tuple[Any, Any]:
    from pipeline.models import family as families

    path, fam = member_file(folder)
    module = families.get(fam)
    return module, module.load_file(path)


def shifted_views(x: np.ndarray, shifts: int) -> list[np.ndarray]:
    """``x`` (N, H, W, C) and its copies moved by 1..``shifts`` pixels down, up, right and
    left, zero-filled: 1 + 4 * shifts views."""
    views = [x]
    for s in range(1, shifts + 1):
        for axis, step in ((1, s), (1, -s), (2, s), (2, -s)):
            v = np.zeros_like(x)
            src = [slice(None)] * x.ndim
            dst = [slice(None)] * x.ndim
            src[axis] = slice(0, -step) if step > 0 else slice(-step, None)
            dst[axis] = slice(step, None) if step > 0 else slice(0, step)
            v[tuple(dst)] = x[tuple(src)]
            views.append(v)
    return views


@contextlib.contextmanager
def _no_retracing_warning() -> Iterator[None]:
    """Without TensorFlow's "N out of the last N calls to ... triggered tf.function
    retracing" warning: several Keras members each trace their own predict step once per
    input shape (val, the history's training rows, the input example), which TensorFlow
    counts as frequent retracing and reports on its ``tensorflow`` logger at WARNING, in the
    middle of a stage's lines. Only that logger, only while the members predict."""
    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        tf_log.setLevel(level)


def member_probas(ens: Ensemble, x: np.ndarray) -> np.ndarray:
    """(M, N, k): each member's probabilities, averaged over the TTA views."""
    views = shifted_views(x, ens.shifts)
    out = []
    with _no_retracing_warning():
        for module, model in ens.models:
            p = sum(module.predict_proba(model, v).astype(np.float64) for v in views)
            out.append(p / len(views))
    return np.stack(out)


def combine(probas: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean (N, k) float32 of member probabilities (M, N, k)."""
    return np.tensordot(weights, probas, axes=1).astype(np.float32)


def fit_weights(probas: np.ndarray, y: np.ndarray, steps: int = FIT_STEPS) -> np.ndarray:
    """Softmax weights minimising the log-loss of ``combine(probas, w)`` on labels ``y``:
    exponentiated gradient (the softmax logits move against the gradient in the weights)
    from equal weights; deterministic, nothing random to seed."""
    m = probas.shape[0]
    picked = probas[:, np.arange(len(y)), y]  # (M, N): each member's probability of the label
    z = np.zeros(m)
    for _ in range(steps):
        w = np.exp(z - z.max())
        w /= w.sum()
        mix = np.maximum(w @ picked, 1e-12)
        grad_w = -(picked / mix).mean(axis=1)  # d loss / d w
        z -= FIT_RATE * grad_w
    w = np.exp(z - z.max())
    return w / w.sum()


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.maximum(proba[np.arange(len(y)), y], 1e-12)).mean())


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def train(
    mp, train, val, *, seed: int, out_dir: Path, on_epoch: Callable[[dict], None] | None = None
) -> list[dict]:
    """Load the members from the sibling folders of ``out_dir`` (models/<member>/), fit the
    weights on ``val``, save the ensemble in ``out_dir``; one history row: validation loss and
    accuracy, and ``loss``/``accuracy`` on the first TRAIN_ROWS training images."""
    out_dir = Path(out_dir)
    models_root = out_dir.parent  # models/: atomic_dir's temporary folder is beside its own
    files, loaded = {}, []
    for member in mp.members:
        path, _ = member_file(models_root / member)
        files[member] = path
        loaded.append(_load_member(models_root / member))
    shifts = mp.tta.shifts if mp.tta else 0
    ens = Ensemble(tuple(mp.members), np.full(len(loaded), 1 / len(loaded)), shifts, tuple(loaded))
    probas = member_probas(ens, val.x)
    if mp.weights == "val":
        ens = Ensemble(ens.members, fit_weights(probas, val.y), shifts, ens.models)
    proba = combine(probas, ens.weights)
    seen = predict_proba(ens, train.x[:TRAIN_ROWS])
    row = {
        "epoch": 1,
        "loss": log_loss(seen, train.y[:TRAIN_ROWS]),
        "accuracy": float((seen.argmax(1) == train.y[:TRAIN_ROWS]).mean()),
        "val_loss": log_loss(proba, val.y),
        "val_accuracy": float((proba.argmax(1) == val.y).mean()),
    }
    for member, path in files.items():
        _link(path, out_dir / MODEL_FILE_DIR / "members" / member / path.name)
    spec = {
        "members": list(ens.members),
        "weights": [float(w) for w in ens.weights],
        "tta": {"shifts": shifts},
        "files": {m: f"members/{m}/{p.name}" for m, p in files.items()},
        "sha256": {m: _sha256(p) for m, p in files.items()},
        "member_val_accuracy": {
            m: float((probas[i].argmax(1) == val.y).mean()) for i, m in enumerate(ens.members)
        },
    }
    (out_dir / MODEL_FILE).write_text(json.dumps(spec, indent=1) + "\n")
    if on_epoch:
        on_epoch(row)
    return [row]


def load_file(path: Path) -> Ensemble:
    """An ``ensemble.json`` and the member files beside it, each checked against its sha256."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadModelFile(f"{path}: not an ensemble file ({exc})") from None
    models = []
    for member in spec["members"]:
        file = path.parent / spec["files"][member]
        if not file.is_file() or _sha256(file) != spec["sha256"][member]:
            raise BadModelFile(f"{file}: missing or not the member file the ensemble recorded")
        module, model = _load_member(file.parent)
        models.append((module, model))
    return Ensemble(
        tuple(spec["members"]),
        np.asarray(spec["weights"], dtype=np.float64),
        int(spec["tta"]["shifts"]),
        tuple(models),
    )


def load(out_dir: Path) -> Ensemble:
    return load_file(Path(out_dir) / MODEL_FILE)


def predict_proba(model: Ensemble, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, k) float32: the weighted mean of the members' (with TTA)."""
    return combine(member_probas(model, x), model.weights)


def first_layer_kernels(model: Ensemble) -> np.ndarray | None:
    return None


def feature_maps(model: Ensemble, x: np.ndarray) -> np.ndarray | None:
    return None


def log_model(model: Ensemble, out_dir: Path, example: np.ndarray) -> None:
    """Log the saved ``model/`` folder (ensemble.json and the member files) to the active
    MLflow run as the pyfunc of flavor.py, with an input example."""
    from pipeline import tracking

    tracking.log_pyfunc_model(
        Path(__file__).with_name("flavor.py"),
        {"model": Path(out_dir) / MODEL_FILE_DIR},
        example,
        predict_proba(model, example),
        fmt="ensemble",
        pins=("tensorflow-cpu", "keras", "numpy"),
    )
