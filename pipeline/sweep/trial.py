"""The trainable: one trial in a Ray worker. The same ``family.train`` as train@<model>,
with the trial's config applied to the preset; no MLflow here (the driver logs)."""

from __future__ import annotations

import inspect
import math
import os
import tempfile
import time
from typing import Any

import numpy as np

from pipeline.core.params import ModelParams
from pipeline.data.prepared import Split
from pipeline.sweep.spec import TRIAL_INDEX

# Ray hands these to the driver in every result (progress lines, MLflow tags, tests).
NODE_ID, TRIAL_SEED, TRIAL_ERROR, PID = "node_id", "trial_seed", "trial_error", "pid"
# Seconds since the trial's training began, as the worker measures them (in each result):
# the driver's wall of a trial minus this is what Ray itself cost (pipeline/sweep/bench.py).
TRAIN_S = "train_s"


def trial_seed(sweep_seed: int, index: int) -> int:
    """The training seed of trial ``index``: fixed by the sweep's seed and the index."""
    return int(np.random.SeedSequence([sweep_seed, index]).generate_state(1)[0] % 2**31)


def set_threads(n: int) -> None:
    """TensorFlow's thread pools to ``n`` (Ray's OMP_NUM_THREADS does not reach them); only
    possible before TensorFlow's first op, so a reused worker keeps its first setting
    (every trial of a sweep asks for the same ``n``). BLAS is limited by the caller."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


def run_trial(
    config: dict[str, Any],
    mp: ModelParams,
    train: Split,
    val: Split,
    *,
    seed: int,
    cpus: int,
    report,
) -> None:
    """Train ``mp`` and ``report`` each epoch's row; the core shared with the in-process
    benchmark (pipeline/sweep/bench.py)."""
    from threadpoolctl import threadpool_limits

    from pipeline.models import family as families

    set_threads(cpus)
    family = families.get(mp.family)
    if mp.family != "scratch":
        import keras

        keras.backend.clear_session()  # a reused worker keeps Keras' global state
    extra = {"verbose": 0} if "verbose" in inspect.signature(family.train).parameters else {}
    with threadpool_limits(cpus), tempfile.TemporaryDirectory(prefix="trial-") as out:
        family.train(mp, train, val, seed=seed, out_dir=out, on_epoch=report, **extra)


def train_trial(
    config: dict[str, Any],
    preset: dict | None = None,
    train: Split | None = None,
    val: Split | None = None,
    sweep_seed: int = 0,
    metric: str = "val_accuracy",
    n_classes: int = 10,
    image_shape: tuple[int, int] = (28, 28),
) -> None:
    """Ray Tune function trainable (``tune.with_parameters`` puts the splits in the object
    store once). An exception ends the trial with one result holding ``trial_error`` (the
    driver marks its run FAILED and the sweep goes on); only a dead worker is retried."""
    import ray
    from ray import tune

    from pipeline.core.params import with_overrides

    ctx = tune.get_context()
    cpus = int(ctx.get_trial_resources().required_resources.get("CPU", 1))
    node = ray.get_runtime_context().get_node_id()
    index = int(config.get(TRIAL_INDEX, 0))
    seed = trial_seed(sweep_seed, index)
    info = {NODE_ID: node, TRIAL_SEED: seed, PID: os.getpid()}
    values = {k: v for k, v in config.items() if k != TRIAL_INDEX}
    t0 = time.perf_counter()
    try:
        mp = with_overrides(ModelParams.model_validate(preset), values, n_classes, image_shape)
        run_trial(
            config, mp, train, val, seed=seed, cpus=cpus,
            report=lambda row: tune.report({**row, **info, TRAIN_S: time.perf_counter() - t0}),
        )  # fmt: skip
    except Exception as exc:
        line = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        bad = math.nan
        tune.report({metric: bad, TRIAL_ERROR: line, **info})
