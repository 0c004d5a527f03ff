"""prepare@<dataset>: data/raw/<source>/ -> data/prepared/<dataset>/.

Keeps the dataset's classes (mapped to 0..k-1), takes a stratified ``train_size`` subset
of the training split when set, splits off a seeded stratified validation set, and
normalizes to float32 in [0, 1] with shape N×28×28×1. The test split is always every test
image of the dataset's classes, so models are compared on the same images.

Writes into a temporary folder beside the output and renames it into place at the end:
a failure leaves the previous output (or nothing), never half of one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline.core import config, runner
from pipeline.core import params as params_mod
from pipeline.core.io import atomic_dir
from pipeline.core.params import DatasetParams, Params
from pipeline.data import gate
from pipeline.data.idx import IdxError, read_idx
from pipeline.data.prepared import Split, save_split

SCALE = 255.0


def load_raw(raw_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images uint8 (N, H, W), labels (N,)), "test": ...} from the four IDX files."""
    names = dict(zip(("train_x", "train_y", "test_x", "test_y"), config.RAW_FILES, strict=True))
    arrays = {key: read_idx(raw_dir / name) for key, name in names.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise IdxError(f"{raw_dir}: {split} images {x.shape} do not match labels {y.shape}")
    return {s: (arrays[f"{s}_x"], arrays[f"{s}_y"]) for s in ("train", "test")}


def _select(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Keep ``classes`` and map them to 0..k-1 in the order listed."""
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    mapped = lookup[y]  # (N,)
    keep = mapped >= 0
    return x[keep], mapped[keep]


def _normalize(x: np.ndarray) -> np.ndarray:
    out = x.astype(np.float32)[..., None]  # (N, H, W, 1)
    out /= SCALE
    return out


def split_dataset(
    raw: dict[str, tuple[np.ndarray, np.ndarray]], ds: DatasetParams, seed: int
) -> dict[str, Split]:
    x_tr, y_tr = _select(*raw["train"], ds.classes)
    x_te, y_te = _select(*raw["test"], ds.classes)
    idx = np.arange(len(y_tr))
    if ds.train_size is not None:
        if ds.train_size > len(idx):
            raise ValueError(
                f"train_size {ds.train_size} exceeds the {len(idx)} training images of "
                f"classes {list(ds.classes)}"
            )
        if ds.train_size < len(idx):
            idx, _ = train_test_split(
                idx, train_size=ds.train_size, stratify=y_tr, random_state=seed
            )
    idx_fit, idx_val = train_test_split(
        idx, test_size=ds.val_fraction, stratify=y_tr[idx], random_state=seed
    )
    idx_fit, idx_val = np.sort(idx_fit), np.sort(idx_val)
    return {
        "train": Split(_normalize(x_tr[idx_fit]), y_tr[idx_fit]),
        "val": Split(_normalize(x_tr[idx_val]), y_tr[idx_val]),
        "test": Split(_normalize(x_te), y_te),
    }


def run(
    params: Params, name: str, raw_dir: Path, out_dir: Path, summary: Path | None = None
) -> dict:
    """Prepare dataset ``name``; return its meta.json content. Refuses unless validation's
    ``summary`` (reports/validation/summary.json) says these raw files passed."""
    ds = params.datasets[name]
    hashes = gate.require_passed(raw_dir, summary or config.validation_dir() / config.SUMMARY_JSON)
    splits = split_dataset(load_raw(raw_dir), ds, params.seed)
    k = len(ds.classes)
    meta = {
        "dataset": name,
        "source": params.data.source,
        "classes": list(ds.classes),
        "class_map": {str(c): i for i, c in enumerate(ds.classes)},
        "num_classes": k,
        "image_shape": list(splits["test"].x.shape[1:]),
        "normalization": {"dtype": "float32", "scale": f"x / {SCALE:g}", "range": [0.0, 1.0]},
        "counts": {
            s: {
                str(c): int(n)
                for c, n in zip(ds.classes, np.bincount(sp.y, minlength=k), strict=True)
            }
            for s, sp in splits.items()
        },
        "sizes": {s: len(sp) for s, sp in splits.items()},
        "seed": params.seed,
        "params": params_mod.to_dict(ds),
        "source_sha256": hashes,
    }
    with atomic_dir(out_dir) as tmp:
        for s, sp in splits.items():
            save_split(config.split_file(tmp, s), sp)
        (tmp / config.META_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    def body(params: Params, name: str) -> str:
        meta = run(params, name, config.raw_dir(params.data.source), config.prepared_dir(name))
        return f"{meta['sizes']} ({meta['num_classes']} classes)"

    return runner.run_stage("prepare", body, argv, section="datasets")


if __name__ == "__main__":
    sys.exit(main())
