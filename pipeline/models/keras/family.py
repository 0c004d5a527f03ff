"""Train, save, load and inspect models of the ``keras`` and ``custom`` families.

``train`` is what the train stage calls: seeded and deterministic on CPU, the shared
rotation/shift augmentation applied a whole epoch at a time (``EpochArrays`` of feed.py),
the compiled model of build.py with its optional per-step learning-rate schedule
(``train.lr_schedule``), optional ReduceLROnPlateau / EarlyStopping(restore_best_weights) /
best-model checkpoint from params, one line an epoch, and a history row an epoch for MLflow.
"""

from __future__ import annotations

import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.core.io import BadModelFile
from pipeline.core.params import ModelParams, TrainParams
from pipeline.data.prepared import Split
from pipeline.models.keras import layers as custom_layers
from pipeline.models.keras.build import build
from pipeline.models.keras.feed import EpochArrays

MODEL_FILE = "model.keras"
BEST_FILE = "best.keras"
HISTORY_KEYS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "epoch_seconds",
    "images_per_second",
)


class EpochRecorder(keras.callbacks.Callback):
    """Collects one history row an epoch and hands it to ``on_epoch``."""

    def __init__(self, n_images: int, on_epoch: Callable[[dict], None] | None = None):
        super().__init__()
        self.n_images = n_images
        self.on_epoch = on_epoch
        self.rows: list[dict] = []
        self._start = 0.0
        self._learning_rate = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._learning_rate = current_learning_rate(self.model)  # the rate this epoch used
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start  # training and validation of the epoch
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            **{k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
            "learning_rate": self._learning_rate,
            "epoch_seconds": seconds,
            "images_per_second": self.n_images / seconds,
        }
        self.rows.append(row)
        if self.on_epoch is not None:
            self.on_epoch(row)


CALIBRATION_IMAGES = 1024  # training images whose statistics batch norm uses at inference


def recalibrate_batch_norm(model: keras.Model, x: np.ndarray) -> None:
    """Set every batch norm's moving statistics to the mean and variance of its input over
    the images ``x``, as the model runs at inference (dropout off, the batch norms upstream
    already recalibrated): afterwards inference normalizes exactly as it should.

    Why: Keras' moving averages start at mean 0 / variance 1 and forget that start by
    ``momentum ** steps`` (0.99 ** 422 = 1.4% after an epoch of 54,000 images at batch 128).
    The first layers' inputs have variances near 0.01, so at inference the first batch norm
    still divides by a variance several times too large; the error compounds through the
    following batch norms (means off by tens of standard deviations at the dense layers) and
    the model predicts one class: 11% at inference against 94% in training mode, measured on
    seed 004's network after 100 steps. Dropout shifts the variances again at inference.
    The model is a chain of layers (all our builds are); ``x`` is one calibration batch.
    """
    h = keras.ops.convert_to_tensor(x)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, variance = keras.ops.moments(h, axes=list(range(len(h.shape) - 1)))
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        elif isinstance(layer, custom_layers.CustomConv2D) and layer.batch_norm:
            layer.set_moving_statistics(h)
        h = layer(h, training=False)


class BatchNormCalibration(keras.callbacks.Callback):
    """Recalibrates batch norm (``recalibrate_batch_norm``) before every validation pass of
    ``fit``, so each epoch's val_loss and val_accuracy, the callbacks that pick epochs by
    them, the checkpoint and the saved model all use statistics of the current weights."""

    def __init__(self, x: np.ndarray):
        super().__init__()
        self.x = x

    def on_test_begin(self, logs=None):
        recalibrate_batch_norm(self.model, self.x)


class EMAWeights(keras.callbacks.Callback):
    """With ``train.ema``: from each validation pass to the start of the next epoch the
    model holds the optimizer's moving average of its weights (the raw values kept aside),
    so val_loss and val_accuracy, batch-norm calibration, early stopping, the checkpoint
    and the saved model all use the average, while training steps use the raw weights.
    Keras' SwapEMAWeights swaps the two in place and, after an early stop, would leave the
    raw weights in the final model. First in the callback list (before the calibration)."""

    def __init__(self):
        super().__init__()
        self._raw: list[np.ndarray] | None = None

    def _pairs(self) -> list[tuple]:
        opt = self.model.optimizer
        average = getattr(opt, "_model_variables_moving_average", None)
        if not getattr(opt, "use_ema", False) or not average:
            raise RuntimeError("train.ema: the optimizer keeps no moving average of weights")
        return list(zip(opt._trainable_variables, average, strict=True))

    def on_test_begin(self, logs=None):
        if self._raw is None:
            pairs = self._pairs()
            self._raw = [keras.ops.convert_to_numpy(v) for v, _ in pairs]
            for v, a in pairs:
                v.assign(a.value)

    def on_epoch_begin(self, epoch, logs=None):
        if self._raw is not None:
            for (v, _), raw in zip(self._pairs(), self._raw, strict=True):
                v.assign(raw)
            self._raw = None


def has_batch_norm(model: keras.Model) -> bool:
    return any(
        isinstance(layer, keras.layers.BatchNormalization)
        or (isinstance(layer, custom_layers.CustomConv2D) and layer.batch_norm)
        for layer in model.layers
    )


def current_learning_rate(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def seed_everything(seed: int) -> None:
    """Python, NumPy and TF seeds, and deterministic TF kernels (identical reruns on CPU)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _callbacks(tp: TrainParams, out_dir: Path) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = []
    if tp.reduce_lr is not None:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=tp.reduce_lr.factor,
                patience=tp.reduce_lr.patience,
                min_lr=tp.reduce_lr.min_lr,
                verbose=1,
            )
        )
    if tp.early_stopping is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=tp.early_stopping.patience,
                min_delta=tp.early_stopping.min_delta,
                restore_best_weights=True,
                verbose=1,
            )
        )
    if tp.checkpoint:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                out_dir / BEST_FILE, monitor="val_loss", save_best_only=True
            )
        )
    return callbacks


def train(
    mp: ModelParams,
    train: Split,
    val: Split,
    *,
    seed: int,
    out_dir: Path,
    on_epoch: Callable[[dict], None] | None = None,
    verbose: int | None = None,
) -> list[dict]:
    """Train ``mp`` on ``train`` (validated on ``val``), save ``out_dir/model.keras``, and
    return one history row an epoch (keys ``HISTORY_KEYS``). ``verbose`` is Keras' own:
    by default a progress bar on a terminal, one line an epoch in a log."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    tp = mp.train
    epochs = EpochArrays(train, tp.batch_size, seed, tp.shuffle, tp.augment)
    model = build(mp, train.x.shape[1:], seed, steps_per_epoch=len(epochs))
    recorder = EpochRecorder(len(train), on_epoch)
    ema = [EMAWeights()] if tp.ema is not None else []
    calibration = []
    if has_batch_norm(model):  # before the other callbacks see the validation metrics
        pick = np.random.default_rng([seed, CALIBRATION_IMAGES]).permutation(len(train))
        calibration = [BatchNormCalibration(train.x[np.sort(pick[:CALIBRATION_IMAGES])])]
    model.fit(
        epochs.dataset(),
        steps_per_epoch=len(epochs),
        shuffle=False,  # EpochArrays shuffles, from (seed, epoch)
        epochs=tp.epochs,
        validation_data=(val.x, val.y),
        validation_batch_size=max(tp.batch_size, 256),
        callbacks=[*ema, *calibration, *_callbacks(tp, out_dir), recorder],
        verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose,
    )
    model.save(out_dir / MODEL_FILE)
    return recorder.rows


def load_file(path: Path) -> keras.Model:
    """A ``.keras`` file under Keras' safe mode: no Lambda layer or other deserialized code
    runs. The project's custom layers resolve by their import path (this module imports
    ``pipeline.models.keras.layers``, which registers them), never from a pickle. A
    missing, truncated or refused file raises ``BadModelFile`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise BadModelFile(f"{path}: model file not found")
    if not zipfile.is_zipfile(path):  # Keras calls a truncated archive "File not found"
        raise BadModelFile(f"{path}: corrupt or truncated .keras file (not a zip archive)")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError, zip errors...
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadModelFile(f"{path}: cannot load the Keras model: {what[:300]}") from None


def load(out_dir: Path) -> keras.Model:
    """The final model saved by ``train``."""
    return load_file(Path(out_dir) / MODEL_FILE)


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities, (N, k) float32."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


# The module MLflow's loaders import to load a logged model: it gives Keras the custom layers
MLFLOW_KERAS_MODULE = "pipeline.models.mlflow_keras"


def log_model(model: keras.Model, out_dir: Path, example: np.ndarray) -> None:
    """Log ``model`` to the active MLflow run in the tensorflow flavor, with an input example;
    MLflow loads it through ``MLFLOW_KERAS_MODULE``."""
    from pipeline import tracking

    tracking.log_keras_model(model, example, MLFLOW_KERAS_MODULE)


_CONV_TYPES = (keras.layers.Conv2D, custom_layers.CustomConv2D)


def _first_conv_index(model: keras.Model) -> int | None:
    for i, layer in enumerate(model.layers):
        if isinstance(layer, _CONV_TYPES):
            return i
    return None


def first_layer_kernels(model: keras.Model) -> np.ndarray | None:
    """Kernel of the first conv layer, (kh, kw, cin, cout); None when there is no conv."""
    i = _first_conv_index(model)
    if i is None:
        return None
    return keras.ops.convert_to_numpy(model.layers[i].kernel)


def feature_maps(model: keras.Model, x: np.ndarray) -> np.ndarray | None:
    """Output of the first conv block for images ``x``, (N, H, W, C): after its batch norm
    and activation (stock conv blocks are conv -> BN -> activation layers; CustomConv2D
    does all three). None when the model has no conv layer."""
    i = _first_conv_index(model)
    if i is None:
        return None
    layers = model.layers
    while i + 1 < len(layers) and isinstance(
        layers[i + 1], keras.layers.BatchNormalization | keras.layers.Activation
    ):
        i += 1
    probe = keras.Model(model.input, layers[i].output)
    return np.asarray(probe.predict(x, verbose=0), dtype=np.float32)
