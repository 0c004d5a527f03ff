"""Shared fixtures: small synthetic IDX data built through the real writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core import config
from pipeline.data.idx import encode_idx

REPO = Path(__file__).resolve().parent.parent


def make_digits(n_per_class: int, seed: int, classes=range(10)) -> tuple[np.ndarray, np.ndarray]:
    """Digit-like uint8 images: a class-specific stroke pattern plus noise, labels shuffled."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in classes:
        base = np.zeros((28, 28), dtype=np.float32)
        base[4 + c : 24 - c // 2, 6 + (c % 5) * 3 : 10 + (c % 5) * 3] = 200
        base[10 + c % 4, 4:24] = 255
        noise = rng.integers(0, 40, size=(n_per_class, 28, 28))
        images.append(np.clip(base[None] + noise, 0, 255).astype(np.uint8))
        labels.append(np.full(n_per_class, c, dtype=np.uint8))
    x, y = np.concatenate(images), np.concatenate(labels)
    order = rng.permutation(len(y))
    return x[order], y[order]


def write_raw(folder: Path, train, test) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (train[0], train[1], test[0], test[1])
    for name, arr in zip(config.RAW_FILES, arrays, strict=True):
        (folder / name).write_bytes(encode_idx(arr))
    return folder


@pytest.fixture
def synthetic_raw(tmp_path) -> Path:
    """data/raw-like folder: 60 train and 12 test images per digit."""
    return write_raw(tmp_path / "raw", make_digits(60, seed=1), make_digits(12, seed=2))
