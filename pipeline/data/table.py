"""Per-image tables for the validate stage, built vectorized from the raw uint8 arrays.

One row an image: split, index, label, pixel min/max/mean, non-zero pixel count, a blake2b
hash of the image bytes, its dtype and shape (so that Great Expectations reports them too),
and ``shared``: whether the same bytes appear in the other split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import config
from pipeline.data.idx import IdxError, read_idx

Splits = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images (N, H, W), labels (N,))


def load_splits(raw_dir: Path) -> Splits:
    """{"train": (images, labels), "test": (images, labels)} from the four IDX files."""
    names = dict(zip(("train_x", "train_y", "test_x", "test_y"), config.RAW_FILES, strict=True))
    arrays = {key: read_idx(raw_dir / name) for key, name in names.items()}
    return {s: (arrays[f"{s}_x"], arrays[f"{s}_y"]) for s in ("train", "test")}


def _digests(flat: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(flat)  # (N, H*W)
    return np.array([hashlib.blake2b(row, digest_size=16).digest() for row in flat], dtype="S16")


def split_table(split: str, x: np.ndarray, y: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of one split (``shared`` is set by :func:`image_table`) and the image digests."""
    if x.ndim < 1 or y.ndim != 1 or len(x) != len(y):
        raise IdxError(f"{split}: images {x.shape} do not match labels {y.shape}")
    n = len(x)
    flat = x.reshape(n, -1)  # (N, H*W)
    stats = flat if flat.shape[1] else np.zeros((n, 1), x.dtype)  # (N, H*W), never empty
    digests = _digests(flat)  # (N,) S16
    table = pd.DataFrame(
        {
            "split": split,
            "index": np.arange(n, dtype=np.int64),
            "label": y.astype(np.int64),
            "pixel_min": stats.min(axis=1).astype(np.int64),
            "pixel_max": stats.max(axis=1).astype(np.int64),
            "pixel_mean": stats.mean(axis=1, dtype=np.float64),
            "nonzero": np.count_nonzero(flat, axis=1).astype(np.int64),
            "hash": [d.hex() for d in digests],
            "dtype": str(x.dtype),  # constant per split, checked like any other column
            "shape": "x".join(str(d) for d in x.shape[1:]),
        }
    )
    return table, digests


def image_table(splits: Splits) -> pd.DataFrame:
    """All splits in one table, with ``shared`` set where an image is also in another split."""
    parts = {s: split_table(s, x, y) for s, (x, y) in splits.items()}
    for s, (part, digests) in parts.items():
        others = [d for o, (_, d) in parts.items() if o != s]
        part["shared"] = np.isin(digests, np.concatenate(others)) if others else False
    table = pd.concat([part for part, _ in parts.values()], ignore_index=True)
    table["split"] = pd.Categorical(table["split"], categories=list(parts))
    table[["dtype", "shape"]] = table[["dtype", "shape"]].astype("category")  # fast isin
    return table


def class_shares(table: pd.DataFrame, labels: tuple[int, ...]) -> pd.DataFrame:
    """One row per split and declared label: count and share of the split (0 when absent)."""
    rows = []
    for split in table["split"].cat.categories:
        part = table["label"][table["split"] == split]
        counts = part.value_counts().reindex(list(labels), fill_value=0)
        rows += [(split, int(c), int(n), n / max(len(part), 1)) for c, n in counts.items()]
    return pd.DataFrame(rows, columns=["split", "label", "count", "share"])


def split_figures(table: pd.DataFrame, shares: pd.DataFrame) -> dict[str, dict]:
    """Figures per split for summary.json: rows, class counts and shares, pixel statistics."""
    out: dict[str, dict] = {}
    for split in table["split"].cat.categories:
        t, sh = table[table["split"] == split], shares[shares["split"] == split]
        out[split] = {"rows": len(t)}
        if len(t):
            counts = t["label"].value_counts().sort_index()
            out[split] |= {
                "class_counts": {str(k): int(v) for k, v in counts.items()},
                "class_shares": {
                    str(c): round(float(x), 6)
                    for c, x in zip(sh["label"], sh["share"], strict=True)
                },
                "pixel_min": int(t["pixel_min"].min()),
                "pixel_max": int(t["pixel_max"].max()),
                "pixel_mean": round(float(t["pixel_mean"].mean()), 4),
                "nonzero_min": int(t["nonzero"].min()),
                "nonzero_mean": round(float(t["nonzero"].mean()), 2),
                "shared_with_other_split": int(t["shared"].sum()),
                "dtypes": sorted(t["dtype"].unique().tolist()),
                "shapes": sorted(t["shape"].unique().tolist()),
            }
    return out
