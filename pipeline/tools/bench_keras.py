"""Training speed of the keras and custom presets: seconds an epoch and images a second.

    python -m pipeline.tools.bench_keras [PRESET ...] [--images 4096]

Each preset trains on ``--images`` random images (speed does not depend on content) with its
params' batch size, optimizer and augmentation, after a short warm-up that traces the graph.
Seconds an epoch are extrapolated to the preset's training split: its prepared ``train.npz``
when present, else the size its dataset params give on MNIST (60000 images, ~6000 a class).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.core.params import ModelParams, Params
from pipeline.data.prepared import Split

MNIST_TRAIN = 60000


def train_size(p: Params, preset: str) -> int:
    """Images in the preset's training split (prepared file, else estimated from params)."""
    mp = p.models[preset]
    path = config.prepared_dir(mp.dataset) / "train.npz"
    if path.is_file():
        with np.load(path) as f:
            return len(f["y"])
    ds = p.datasets[mp.dataset]
    full = MNIST_TRAIN * len(ds.classes) // 10
    return round(min(full, ds.train_size or full) * (1 - ds.val_fraction))


def bench(mp: ModelParams, n_images: int, seed: int = 0) -> float:
    """Images a second of one training epoch over ``n_images`` (after a warm-up)."""
    from pipeline.models.keras import family as keras_family

    n_classes = mp.arch[-1].units
    rng = np.random.default_rng(seed)
    x = rng.random((n_images, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, n_classes, n_images)
    tp = mp.train.model_copy(
        update={"reduce_lr": None, "early_stopping": None, "checkpoint": False}
    )
    keras_family.seed_everything(seed)
    model = keras_family.build(mp.model_copy(update={"train": tp}), (28, 28, 1), seed)
    warm = keras_family.AugmentedBatches(
        Split(x[: tp.batch_size * 4], y[: tp.batch_size * 4]), tp.batch_size, seed
    )
    model.fit(warm, epochs=1, verbose=0)
    batches = keras_family.AugmentedBatches(
        Split(x, y), tp.batch_size, seed, tp.shuffle, tp.augment
    )
    start = time.perf_counter()
    model.fit(batches, epochs=1, verbose=0)
    return n_images / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", help="presets to time (default: keras and custom)")
    parser.add_argument("--images", type=int, default=4096, help="images timed per preset")
    parser.add_argument("--params", type=Path, default=None, help="params.yaml to read")
    args = parser.parse_args(argv)
    p = params_mod.load(args.params)
    names = args.presets or [n for n, m in p.models.items() if m.family in ("keras", "custom")]
    for name in names:
        if p.models[name].family not in ("keras", "custom"):
            parser.error(f"{name}: family {p.models[name].family} is not a keras family")
    print(f"{'preset':<18} {'batch':>5} {'images/s':>9} {'train':>6} {'s/epoch':>8} {'epochs':>6}")
    for name in names:
        mp = p.models[name]
        ips = bench(mp, args.images, seed=p.seed)
        n = train_size(p, name)
        print(
            f"{name:<18} {mp.train.batch_size:>5} {ips:>9.0f} {n:>6} {n / ips:>8.1f}"
            f" {mp.train.epochs:>6}",
            flush=True,
        )


if __name__ == "__main__":
    main()
