"""The scratch family: train, save, load and inspect a NumPy network built from the spec.

The train stage calls ``train``; evaluate and plot call ``load``, ``predict_proba``,
``first_layer_kernels`` and ``feature_maps`` (the contract of pipeline/models/family.py).
``train`` is a loop over epochs: ``run_epoch`` (one ``Trainer`` step a batch, at the rate of
``step_rate`` under a schedule), validation, then the callbacks of ``callbacks.py`` (history,
early stopping, checkpoint, reduce-on-plateau).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.core.params import ModelParams, TrainParams
from pipeline.data.augment import augment
from pipeline.data.prepared import Split
from pipeline.models.numpy_cnn import callbacks
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


@dataclass
class EpochStats:
    """What one pass over the training batches measured."""

    loss: float  # mean over the images
    accuracy: float
    learning_rate: float | None  # the rate of the epoch's first step
    images: int
    seconds: float
    grad_norms: dict[str, float]  # mean gradient norm of each layer over the steps


def step_rate(tp: TrainParams, n_batches: int) -> Callable[[int], float] | None:
    """The learning rate of optimizer step ``step`` (0 is the first of training) under
    ``tp.lr_schedule``; None without a schedule."""
    if tp.lr_schedule is None:
        return None
    sched, peak, epochs = tp.lr_schedule, tp.learning_rate, tp.epochs
    return lambda step: float(scheduled_rate(sched, peak, step, n_batches, epochs))


def run_epoch(
    trainer: Trainer,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    n_batches: int,
    rate: Callable[[int], float] | None = None,
    first_step: int = 0,
    bar: tqdm | None = None,
) -> EpochStats:
    """One optimizer step a batch; with ``rate``, step ``first_step + i`` runs at
    ``rate(first_step + i)``. ``bar`` shows the running loss and accuracy (closed at the end)."""
    t0 = time.perf_counter()
    loss_sum, correct, seen, epoch_lr = 0.0, 0, 0, None
    trainer.norm_sums = norm_sums = dict.fromkeys(trainer.net.slices, 0.0)
    for i, (xb, yb) in enumerate(batches):
        if rate is not None:
            trainer.opt.learning_rate = rate(first_step + i)
        if epoch_lr is None:
            epoch_lr = trainer.opt.learning_rate
        loss, ok = trainer.step(xb, yb)
        loss_sum += loss * len(yb)
        correct += ok
        seen += len(yb)
        if bar is not None and i % 50 == 49:
            bar.update(50)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    norms = {k: v / n_batches for k, v in norm_sums.items()}
    return EpochStats(loss_sum / seen, correct / seen, epoch_lr, seen, seconds, norms)


def progress_bar(epoch: int, epochs: int, n_batches: int, show: bool = True) -> tqdm:
    """The batches of one epoch, on the terminal while they run (gone after it)."""
    return tqdm(
        total=n_batches, desc=f"epoch {epoch}/{epochs}", unit="batch",
        disable=not show, leave=False, mininterval=0.5,
    )  # fmt: skip


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
    ``out_dir/model.npz`` and return the per-epoch history (each row also to ``on_epoch``)."""
    tp, out_dir = mp.train, Path(out_dir)
    net = Network(mp.arch, train.x.shape[1:], seed=seed)
    net.label_smoothing = tp.label_smoothing
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    trainer = Trainer(net, tp, seed)
    n_batches = math.ceil(len(train) / tp.batch_size)
    rate = step_rate(tp, n_batches)
    history = callbacks.History(on_epoch)
    after_epoch = [history, *callbacks.from_params(tp, out_dir / CHECKPOINT_FILE)]
    try:
        with blas_single_thread():
            for epoch in range(1, tp.epochs + 1):
                batches = _batches(train.x, train.y, tp.batch_size, rng, tp)
                bar = progress_bar(epoch, tp.epochs, n_batches, progress)
                stats = run_epoch(trainer, batches, n_batches, rate, (epoch - 1) * n_batches, bar)
                row = epoch_row(epoch, stats, net.evaluate(val.x, val.y))
                for callback in after_epoch:
                    callback.epoch_end(row, net, trainer.opt)
                if any(callback.stop for callback in after_epoch):
                    break
    finally:
        trainer.close()
    for callback in after_epoch:
        callback.train_end(net)
    out_dir.mkdir(parents=True, exist_ok=True)
    net.save(out_dir / MODEL_FILE)
    return history.rows


def epoch_row(epoch: int, stats: EpochStats, val: tuple[float, float]) -> dict:
    """The history row of an epoch (keys in the order of history.csv's columns)."""
    val_loss, val_accuracy = val
    return {
        "epoch": epoch,
        "loss": stats.loss,
        "accuracy": stats.accuracy,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "learning_rate": stats.learning_rate,
        "epoch_seconds": stats.seconds,
        "images_per_second": stats.images / stats.seconds,
        **{f"grad_norm/{k}": v for k, v in stats.grad_norms.items()},
    }


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
