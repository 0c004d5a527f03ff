"""Training speed of the keras and custom presets: the pipeline's feed against a plain fit.

    python -m pipeline.devtools.bench_keras [PRESET ...] [--images 4096] [--repeats 2]

For each preset one model is built (its params' network, batch size and optimizer) and
trained on ``--images`` random images (speed does not depend on content) two ways, in turn,
``--repeats`` times after a warm-up that traces the graph:

- pipeline: what ``train`` does, ``EpochArrays`` (shuffle and augmentation of the whole epoch,
  as the preset's params say) fed through tf.data;
- plain fit: ``model.fit(x, y, batch_size=B)`` on the in-memory arrays, no augmentation.

The best epoch of each is kept (the machine is shared: the best is the least disturbed), and
``ratio`` is pipeline / plain fit. Seconds an epoch are extrapolated to the preset's training
split: its prepared ``train.npz`` when present, else the size its dataset params give on MNIST.
The last line printed is JSON: ``{preset: {pipeline_images_per_s, plain_fit_images_per_s,
ratio, seconds_per_epoch, batch_size, train_images}}``.
"""

from __future__ import annotations

import argparse
import json
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


def bench(mp: ModelParams, n_images: int, seed: int = 0, repeats: int = 2) -> dict[str, float]:
    """Images a second of one epoch over ``n_images``, through the pipeline's feed and
    through a plain fit on arrays, on the same model and batch size."""
    from pipeline.models.keras import family as keras_family

    n_classes = mp.arch[-1].units
    rng = np.random.default_rng(seed)
    x = rng.random((n_images, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, n_classes, n_images)
    tp = mp.train.model_copy(
        update={"reduce_lr": None, "early_stopping": None, "checkpoint": False}
    )
    bs = tp.batch_size
    feed = keras_family.EpochArrays(Split(x, y), bs, seed, tp.shuffle, tp.augment)
    keras_family.seed_everything(seed)
    model = keras_family.build(mp.model_copy(update={"train": tp}), (28, 28, 1), seed, len(feed))
    warm = keras_family.EpochArrays(Split(x[: bs * 4], y[: bs * 4]), bs, seed)
    model.fit(warm.dataset(), steps_per_epoch=len(warm), shuffle=False, epochs=1, verbose=0)
    model.fit(x[: bs * 4], y[: bs * 4], batch_size=bs, epochs=1, verbose=0)
    best = {"pipeline": 0.0, "plain_fit": 0.0}
    for r in range(repeats):
        start = time.perf_counter()
        model.fit(feed.dataset(r), steps_per_epoch=len(feed), shuffle=False, epochs=1, verbose=0)
        best["pipeline"] = max(best["pipeline"], n_images / (time.perf_counter() - start))
        start = time.perf_counter()
        model.fit(x, y, batch_size=bs, epochs=1, verbose=0)
        best["plain_fit"] = max(best["plain_fit"], n_images / (time.perf_counter() - start))
    return {
        "pipeline_images_per_s": round(best["pipeline"], 1),
        "plain_fit_images_per_s": round(best["plain_fit"], 1),
        "ratio": round(best["pipeline"] / best["plain_fit"], 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", help="presets to time (default: keras and custom)")
    parser.add_argument("--images", type=int, default=4096, help="images timed per preset")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs of each kind")
    parser.add_argument("--params", type=Path, default=None, help="params.yaml to read")
    args = parser.parse_args(argv)
    p = params_mod.load(args.params)
    names = args.presets or [n for n, m in p.models.items() if m.family in ("keras", "custom")]
    for name in names:
        if name not in p.models:
            parser.error(f"{name}: no such model in params (known: {', '.join(p.models)})")
        if p.models[name].family not in ("keras", "custom"):
            parser.error(f"{name}: family {p.models[name].family} is not a keras family")
    print(
        f"{'preset':<16} {'batch':>5} {'pipeline/s':>10} {'plain/s':>8} {'ratio':>6}"
        f" {'train':>6} {'s/epoch':>8} {'epochs':>6}"
    )
    results = {}
    for name in names:
        mp = p.models[name]
        r = bench(mp, args.images, seed=p.seed, repeats=args.repeats)
        n = train_size(p, name)
        r |= {
            "seconds_per_epoch": round(n / r["pipeline_images_per_s"], 1),
            "batch_size": mp.train.batch_size,
            "train_images": n,
        }
        results[name] = r
        print(
            f"{name:<16} {mp.train.batch_size:>5} {r['pipeline_images_per_s']:>10.0f}"
            f" {r['plain_fit_images_per_s']:>8.0f} {r['ratio']:>6.2f} {n:>6}"
            f" {r['seconds_per_epoch']:>8.1f} {mp.train.epochs:>6}",
            flush=True,
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
