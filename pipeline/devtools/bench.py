"""Training-speed benchmark: the scratch NumPy network against its Keras twin.

``python -m pipeline.bench scratch [--json]`` trains ``scratch_dropout_cnn`` and
``keras_small_cnn`` (the same network in params.yaml) on the same MNIST training images with the
presets' batch size and optimizer, one epoch each per round, rounds interleaved in one
process, and reports the median images/second of each. Augmentation is off on both sides
(it is shared code, not what is compared). It also prints the scratch network's forward and
backward time per layer. With ``--json`` the last line is a JSON object with
``scratch_images_per_s``, ``keras_images_per_s`` and ``ratio`` (scratch / Keras).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.core import config, params
from pipeline.data.prepared import Split
from pipeline.models.numpy_cnn.family import Trainer, blas_single_thread
from pipeline.models.numpy_cnn.layers import softmax_cross_entropy
from pipeline.models.numpy_cnn.network import Network

SCRATCH, KERAS = "scratch_dropout_cnn", "keras_small_cnn"


def default_data() -> Path:
    return config.prepared_dir("digits10") / "train.npz"


def load_images(path: Path, n: int) -> Split:
    if not path.is_file():
        sys.exit(
            f"error: {path} not found. Run `dvc repro prepare` first, or pass --data with an "
            "npz holding x (N, 28, 28, 1) float32 and y (N,) int labels."
        )
    with np.load(path, allow_pickle=False) as f:
        x, y = f["x"][:n], f["y"][:n]
    return Split(np.ascontiguousarray(x, np.float32), y.astype(np.int64))


def scratch_epoch(trainer: Trainer, data: Split, batch_size: int, rng) -> float:
    """One shuffled epoch; returns images/second."""
    order = rng.permutation(len(data))
    x, y = data.x[order], data.y[order]
    t = time.perf_counter()
    with blas_single_thread():
        for i in range(0, len(y), batch_size):
            trainer.step(x[i : i + batch_size], y[i : i + batch_size])
    return len(y) / (time.perf_counter() - t)


def keras_epoch(model, data: Split, batch_size: int) -> float:
    t = time.perf_counter()
    model.fit(data.x, data.y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
    return len(data) / (time.perf_counter() - t)


def layer_times(net: Network, data: Split, batch_size: int, steps: int) -> list[tuple]:
    """Mean forward and backward milliseconds per layer over ``steps`` batches (one thread)."""
    fwd = dict.fromkeys((layer.name for layer in net.layers), 0.0)
    bwd = dict(fwd)
    with blas_single_thread():
        for s in range(steps):
            i = (s * batch_size) % (len(data) - batch_size)
            h, y = data.x[i : i + batch_size], data.y[i : i + batch_size]
            net.flat_grads.fill(0)
            for layer in net.layers:
                t = time.perf_counter()
                h = layer.forward(h, True)
                fwd[layer.name] += time.perf_counter() - t
            _, d = softmax_cross_entropy(h, y)
            for layer in reversed(net.layers):
                t = time.perf_counter()
                d = layer.backward(d)
                bwd[layer.name] += time.perf_counter() - t
    return [(name, 1e3 * fwd[name] / steps, 1e3 * bwd[name] / steps) for name in fwd]


def bench_scratch(data: Split, rounds: int, seed: int = 0) -> dict:
    p = params.load()
    mp_s, mp_k = p.models[SCRATCH], p.models[KERAS]
    batch = mp_s.train.batch_size
    tp = mp_s.train.model_copy(update={"augment": None})
    net = Network(mp_s.arch, data.x.shape[1:], seed=seed)
    trainer = Trainer(net, tp, seed)
    rng = np.random.default_rng(seed)

    import keras

    from pipeline.models.keras import family as keras_family  # TensorFlow only when benchmarking

    keras.utils.set_random_seed(seed)  # not op determinism: Keras at its default speed
    model = keras_family.build(mp_k, data.x.shape[1:], seed)
    warm = Split(data.x[:1024], data.y[:1024])
    keras_epoch(model, warm, mp_k.train.batch_size)  # tracing and compilation
    scratch_epoch(trainer, warm, batch, rng)  # buffers

    scratch, keras = [], []
    for r in range(rounds):
        scratch.append(scratch_epoch(trainer, data, batch, rng))
        keras.append(keras_epoch(model, data, mp_k.train.batch_size))
        print(f"round {r + 1}/{rounds}: scratch {scratch[-1]:,.0f} img/s, "
              f"keras {keras[-1]:,.0f} img/s", flush=True)  # fmt: skip
    trainer.close()

    print(f"\nscratch per-layer time, batch {batch}, one thread (ms per batch):")
    rows = layer_times(Network(mp_s.arch, data.x.shape[1:], seed=seed), data, batch, 200)
    total_f, total_b = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"  {'layer':<12} {'forward':>8} {'backward':>9}")
    for name, f, b in rows:
        print(f"  {name:<12} {f:8.3f} {b:9.3f}")
    print(f"  {'total':<12} {total_f:8.3f} {total_b:9.3f}")

    s, k = statistics.median(scratch), statistics.median(keras)
    return {
        "images": len(data),
        "rounds": rounds,
        "batch_size": batch,
        "scratch_images_per_s": round(s, 1),
        "keras_images_per_s": round(k, 1),
        "ratio": round(s / k, 3),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.bench", description=__doc__.split("\n")[0]
    )
    ap.add_argument("what", choices=["scratch"], help="what to benchmark")
    ap.add_argument("--data", type=Path, default=None, help="training npz (default: digits10)")
    ap.add_argument("--images", type=int, default=12000, help="training images per epoch")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    ap.add_argument("--json", action="store_true", help="end with a JSON line of the figures")
    args = ap.parse_args(argv)
    data = load_images(args.data or default_data(), args.images)
    result = bench_scratch(data, args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        s, k = result["scratch_images_per_s"], result["keras_images_per_s"]
        print(f"\nscratch {s:,.0f} img/s, keras {k:,.0f} img/s, ratio {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
