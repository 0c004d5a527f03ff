"""The prepared datasets that every training family reads (data/prepared/<dataset>/).

Each split is an ``.npz`` with ``x`` (N, 28, 28, 1) float32 in [0, 1] and ``y`` (N,) int64
labels already mapped to 0..k-1; ``meta.json`` holds the class map and the counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import config
from pipeline.core.io import atomic_save


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (N, 28, 28, 1) float32 in [0, 1]
    y: np.ndarray  # (N,) int64 in 0..k-1

    def __len__(self) -> int:
        return len(self.y)


def load_split(dataset_dir: Path, split: str) -> Split:
    path = config.split_file(Path(dataset_dir), split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared split missing; run `dvc repro prepare`")
    with np.load(path, allow_pickle=False) as f:
        return Split(x=f["x"], y=f["y"])


def load_meta(dataset_dir: Path) -> dict:
    return json.loads((Path(dataset_dir) / config.META_JSON).read_text())


def save_split(path: Path, split: Split) -> None:
    """Write one split atomically (temporary file, then rename)."""
    atomic_save(path, lambda tmp: np.savez(tmp, x=split.x, y=split.y))
