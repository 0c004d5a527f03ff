"""How well a model reads digits from ordinary pictures (README, "Predicting your own images").

Renders N MNIST test digits as ordinary picture files (enlarged, aspect jittered,
off-centre on a larger canvas, dark-on-light or light-on-dark in random colours, a little
noise; RGB, grey or RGBA; PNG, JPEG, BMP or WebP) into a temporary folder, reads them back
through ``pipeline.predict.cli`` (load_image -> to_mnist -> model) and prints the share read
right, beside the model's accuracy on the same digits as MNIST arrays.

    python -m pipeline.predict.foreign --model keras_cnn --n 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("png", "jpg", "bmp", "webp")


def render_picture(
    digit: np.ndarray,
    rng: np.random.Generator,
    *,
    invert: bool | None = None,
    mode: str | None = None,
    scale: float | None = None,
    aspect_jitter: float = 0.1,
) -> Image.Image:
    """One MNIST digit (28, 28[, 1]) float in [0, 1] as an ordinary picture.

    ``invert``: dark ink on light paper (None: random); ``mode``: "RGB", "L" or "RGBA"
    (transparent paper; None: random); ``scale``: enlargement of the 28x28 field (None:
    random 3..12), each side further stretched by up to ``aspect_jitter``.
    """
    v = np.asarray(digit, dtype=np.float32).reshape(28, 28)
    invert = bool(rng.random() < 0.5) if invert is None else invert
    mode = str(rng.choice(["RGB", "RGB", "L", "RGBA"])) if mode is None else mode
    f = float(rng.uniform(3.0, 12.0)) if scale is None else scale
    ay, ax = rng.uniform(1.0 - aspect_jitter, 1.0 + aspect_jitter, 2) * f
    h, w = max(28, round(28 * ay)), max(28, round(28 * ax))
    big = Image.fromarray(v, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    big = np.clip(np.asarray(big, dtype=np.float32), 0.0, 1.0)
    # Off-centre on a larger canvas: independent margins on each side.
    top, bottom = (rng.uniform(0.0, 1.5, 2) * h).astype(int)
    left, right = (rng.uniform(0.0, 1.5, 2) * w).astype(int)
    ink_level = np.zeros((h + top + bottom, w + left + right), dtype=np.float32)
    ink_level[top : top + h, left : left + w] = big
    if invert:
        paper, ink = rng.uniform(190, 255, 3), rng.uniform(0, 70, 3)
    else:
        paper, ink = rng.uniform(0, 50, 3), rng.uniform(190, 255, 3)
    if mode == "RGBA":
        rgb = np.broadcast_to(ink, (*ink_level.shape, 3))
        alpha = ink_level[:, :, None] * 255.0
        arr = np.concatenate([rgb, alpha], axis=2)
    else:
        arr = paper + (ink - paper) * ink_level[:, :, None]  # (H, W, 3)
        arr = arr + rng.normal(0.0, rng.uniform(0.0, 4.0), arr.shape)
    img = Image.fromarray(
        np.clip(arr, 0, 255).round().astype(np.uint8), mode="RGBA"[: arr.shape[2]]
    )
    return img.convert("L") if mode == "L" else img


def save_picture(img: Image.Image, path_stem: Path, rng: np.random.Generator) -> Path:
    """Save in a random format that can hold the image's mode; the path written."""
    formats = ["png", "webp"] if img.mode == "RGBA" else list(FORMATS)
    fmt = str(rng.choice(formats))
    path = path_stem.with_suffix(f".{fmt}")
    if fmt == "jpg":
        img.save(path, quality=int(rng.integers(75, 96)))
    elif fmt == "webp":
        img.save(path, quality=90, method=0)  # lossy, as cameras and browsers save it
    elif fmt == "png":
        img.save(path, compress_level=1)  # fast; the pixels are the same
    else:
        img.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    from pipeline.core import config
    from pipeline.data.prepared import load_split
    from pipeline.predict import cli as predict

    ap = argparse.ArgumentParser(prog="python -m pipeline.predict.foreign", description=__doc__)
    ap.add_argument("--model", required=True, help="preset, runs:/<id>/<preset> or models:/...")
    ap.add_argument("--n", type=int, default=1000, help="test digits to render")
    ap.add_argument("--data", type=Path, help="test split (.npz with x, y); default: the "
                    "model's prepared dataset")  # fmt: skip
    ap.add_argument("--model-dir", type=Path, help="load the preset's model from this folder "
                    "instead of models/<preset>/")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="write the pictures here instead of a temp dir")
    args = ap.parse_args(argv)

    try:
        if args.model_dir is not None:
            loaded = predict.load_preset(args.model, args.model_dir)
        else:
            loaded = predict.load_model(args.model)
    except predict.ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.data is not None:
        with np.load(args.data) as f:
            x, y = f["x"], f["y"]
    else:
        if loaded.dataset is None:
            ap.error("the model's dataset is unknown: pass --data")
        test = load_split(config.prepared_dir(loaded.dataset), "test")
        x, y = test.x, test.y
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(y), size=min(args.n, len(y)), replace=False)
    digits = np.asarray(loaded.classes)[y[idx]] if args.data is None else y[idx]

    with tempfile.TemporaryDirectory(prefix="predict_eval.") as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = [
            save_picture(render_picture(x[i], rng), out / f"{k:05d}_{d}", rng)
            for k, (i, d) in enumerate(zip(idx, digits, strict=True))
        ]
        t1 = time.perf_counter()
        results, errors = predict.predict_files(loaded, paths)
        t2 = time.perf_counter()
    for path, msg in errors:
        print(f"error: {path}: {msg}", file=sys.stderr)
    truth = {p: int(d) for p, d in zip(paths, digits, strict=True)}
    right = sum(r.digit == truth[r.path] for r in results)
    base = predict.predict_arrays(loaded, x[idx])
    base_right = int((np.asarray(loaded.classes)[base.argmax(1)] == digits).sum())
    n = len(paths)
    print(f"model {args.model}: {n} MNIST test digits rendered as pictures "
          f"({t1 - t0:.1f} s), read back ({t2 - t1:.1f} s)")  # fmt: skip
    print(f"accuracy on pictures: {right / n:.4f} ({right}/{n}, {len(errors)} unreadable)")
    print(f"accuracy on the same digits as MNIST arrays: {base_right / n:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
