"""The scratch family: train, save, load and inspect a NumPy network built from the spec.

The train stage calls ``train``; evaluate and plot call ``load``, ``predict_proba``,
``first_layer_kernels`` and ``feature_maps``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.core.params import ModelParams, TrainParams
from pipeline.data.augment import augment
from pipeline.data.prepared import Split
from pipeline.models.numpy_cnn.fused import ConvReLUPool
from pipeline.models.numpy_cnn.layers import Conv2D
from pipeline.models.numpy_cnn.network import Network
from pipeline.models.numpy_cnn.optim import make_optimizer
from pipeline.models.schedule import learning_rate as scheduled_rate

MODEL_FILE = "model.npz"
CHECKPOINT_FILE = "checkpoint.npz"  # the best model by validation loss (train.checkpoint)
AUGMENT_CHUNK = 4096  # images augmented at once (bounded memory, vectorized)
MIN_SPLIT_BATCH = 16  # smaller batches run on one thread


def blas_single_thread():
    """Limit BLAS to one thread while training: our own two threads each take half of a
    batch, and the small matrix products of one step lose more to BLAS's thread hand-offs
    than they gain (measured 2-4x slower on a busy 2-core machine). A no-op context
    without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - it comes with scikit-learn
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class Trainer:
    """Runs training steps of ``net``, splitting each batch across two threads when the
    network has no batch norm (batch statistics must see the whole batch)."""

    def __init__(self, net: Network, tp: TrainParams, seed: int, threads: int = 2) -> None:
        self.net = net
        self.opt = make_optimizer(tp.optimizer, tp.learning_rate, tp.momentum, tp.weight_decay)
        self.split = threads > 1 and not net.has_batch_norm
        self.twin = net.replica(seed + 1) if self.split else None
        self.pool = ThreadPoolExecutor(1) if self.split else None
        self.norm_sums = dict.fromkeys(net.slices, 0.0)  # gradient norms summed over steps

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One optimizer step on a batch; returns (mean loss, correct predictions). Adds
        each layer's gradient norm to ``norm_sums``."""
        n, net = len(y), self.net
        if self.split and n >= MIN_SPLIT_BATCH:
            h = n // 2
            job = self.pool.submit(self.twin.loss_and_grads, x[h:], y[h:], (n - h) / n)
            loss1, correct1 = net.loss_and_grads(x[:h], y[:h], h / n)
            loss2, correct2 = job.result()
            net.flat_grads += self.twin.flat_grads
            loss, correct = (h * loss1 + (n - h) * loss2) / n, correct1 + correct2
        else:
            loss, correct = net.loss_and_grads(x, y)
        g = net.flat_grads
        for name, sl in net.slices.items():
            self.norm_sums[name] += float(np.sqrt(np.dot(g[sl], g[sl])))
        self.opt.step(net.flat_params, g, net.decay_mask, self.pool)
        return loss, correct

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown()


def _batches(x, y, batch_size, rng, tp: TrainParams):
    """Yield (x, y) batches of one epoch: shuffled and augmented as the params say. Chunks
    of images are augmented on a helper thread one chunk ahead of training (in order, so
    the generator's draws, and the result, do not depend on timing)."""
    order = rng.permutation(len(y)) if tp.shuffle else np.arange(len(y))
    chunk = max(1, AUGMENT_CHUNK // batch_size) * batch_size  # whole batches per chunk
    starts = range(0, len(y), chunk)
    if not starts:
        return

    def prepare(start: int) -> tuple[np.ndarray, np.ndarray]:
        idx = order[start : start + chunk]
        return augment(x[idx], rng, tp.augment), y[idx]  # (chunk, H, W, C), (chunk,)

    with ThreadPoolExecutor(1) as ahead:
        job = ahead.submit(prepare, starts[0])
        for k in range(len(starts)):
            xc, yc = job.result()
            if k + 1 < len(starts):
                job = ahead.submit(prepare, starts[k + 1])
            for i in range(0, len(yc), batch_size):
                yield xc[i : i + batch_size], yc[i : i + batch_size]


def train(
    mp: ModelParams,
    train: Split,
    val: Split,
    *,
    seed: int,
    out_dir: Path,
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train a network built from ``mp.arch`` with ``mp.train``; save it to
    ``out_dir/model.npz`` and return the per-epoch history."""
    tp = mp.train
    net = Network(mp.arch, train.x.shape[1:], seed=seed)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    trainer = Trainer(net, tp, seed)
    history: list[dict] = []
    best_loss, best_weights, bad_epochs = math.inf, None, 0
    plateau_best, plateau_bad = math.inf, 0
    n_batches = math.ceil(len(train) / tp.batch_size)
    try:
        with blas_single_thread():
            for epoch in range(1, tp.epochs + 1):
                t0 = time.perf_counter()
                loss_sum, correct, seen = 0.0, 0, 0
                trainer.norm_sums = norm_sums = dict.fromkeys(net.slices, 0.0)
                bar = tqdm(
                    total=n_batches, desc=f"epoch {epoch}/{tp.epochs}", unit="batch",
                    disable=not progress, leave=False, mininterval=0.5,
                )  # fmt: skip
                epoch_lr = None
                for i, (xb, yb) in enumerate(_batches(train.x, train.y, tp.batch_size, rng, tp)):
                    if tp.lr_schedule is not None:  # the rate of this step, from the step alone
                        step = (epoch - 1) * n_batches + i
                        trainer.opt.learning_rate = float(
                            scheduled_rate(
                                tp.lr_schedule, tp.learning_rate, step, n_batches, tp.epochs
                            )
                        )
                    if epoch_lr is None:
                        epoch_lr = trainer.opt.learning_rate  # the rate the epoch starts with
                    loss, ok = trainer.step(xb, yb)
                    loss_sum += loss * len(yb)
                    correct += ok
                    seen += len(yb)
                    if i % 50 == 49:
                        bar.update(50)
                        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
                bar.close()
                seconds = time.perf_counter() - t0
                val_loss, val_acc = net.evaluate(val.x, val.y)
                row = {
                    "epoch": epoch,
                    "loss": loss_sum / seen,
                    "accuracy": correct / seen,
                    "val_loss": val_loss,
                    "val_accuracy": val_acc,
                    "learning_rate": epoch_lr,
                    "epoch_seconds": seconds,
                    "images_per_second": seen / seconds,
                    **{f"grad_norm/{k}": v / n_batches for k, v in norm_sums.items()},
                }
                history.append(row)
                if on_epoch:
                    on_epoch(row)
                es = tp.early_stopping
                if val_loss < best_loss - (es.min_delta if es else 0.0):
                    best_loss, bad_epochs = val_loss, 0
                    if es:
                        best_weights = net.get_weights()
                    if tp.checkpoint:
                        Path(out_dir).mkdir(parents=True, exist_ok=True)
                        net.save(Path(out_dir) / CHECKPOINT_FILE)
                else:
                    bad_epochs += 1
                if es and bad_epochs >= es.patience:
                    break
                rl = tp.reduce_lr
                if rl:
                    if val_loss < plateau_best:
                        plateau_best, plateau_bad = val_loss, 0
                    else:
                        plateau_bad += 1
                        if plateau_bad >= rl.patience:
                            lr = max(trainer.opt.learning_rate * rl.factor, rl.min_lr)
                            trainer.opt.learning_rate = lr
                            plateau_bad = 0
    finally:
        trainer.close()
    if best_weights is not None:
        net.set_weights(best_weights)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net.save(out_dir / MODEL_FILE)
    return history


def load_file(path: Path) -> Network:
    """A ``model.npz`` (arrays only, read with ``allow_pickle=False``)."""
    return Network.load(Path(path))


def load(out_dir: Path) -> Network:
    return load_file(Path(out_dir) / MODEL_FILE)


def predict_proba(model: Network, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, k) float32."""
    return model.predict_proba(x, batch_size)


def log_model(model: Network, out_dir: Path, example: np.ndarray) -> None:
    """Log the saved ``model.npz`` to the active MLflow run, with an input example."""
    from pipeline import tracking

    tracking.log_pyfunc_model(
        Path(__file__).with_name("flavor.py"),
        {"model": Path(out_dir) / MODEL_FILE},
        example,
        predict_proba(model, example),
    )


def first_layer_kernels(model: Network) -> np.ndarray | None:
    """Kernels (kh, kw, cin, cout) of the first conv layer, or None without one."""
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            return layer.params["W"].copy()
    return None


def feature_maps(model: Network, x: np.ndarray) -> np.ndarray | None:
    """Output (N, H, W, C) of the first conv layer after its batch norm and activation,
    before any pooling, at inference; None without a conv layer."""
    h = x.astype(model.dtype, copy=False)
    conv = None
    for layer in model.layers:
        if conv is None:
            if isinstance(layer, ConvReLUPool):  # unfuse: conv, bias, ReLU, no pool
                z = layer._conv(h, training=False) + layer.params["b"]  # (N, Ho, Wo, F)
                return np.maximum(z, 0)
            h = layer.forward(h, training=False)
            if isinstance(layer, Conv2D):
                conv = layer.name
        elif layer.name.startswith(f"{conv}_"):  # its batch norm and activation
            h = layer.forward(h, training=False)
        else:
            break
    return h if conv is not None else None
