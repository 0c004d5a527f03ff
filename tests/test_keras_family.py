"""Training, saving, loading and inspecting keras / custom family models on tiny data."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.core import params as params_mod
from pipeline.core.params import (
    AugmentParams,
    ConvSpec,
    CubicSpec,
    DenseSpec,
    DropoutSpec,
    EarlyStoppingParams,
    FlattenSpec,
    ModelParams,
    PoolSpec,
    ReduceLRParams,
    TrainParams,
)
from pipeline.data.prepared import Split
from pipeline.models.keras import family as keras_family
from pipeline.tools import bench_keras

CNN = (
    ConvSpec(filters=4, batch_norm=True),
    PoolSpec(size=2),
    FlattenSpec(),
    DenseSpec(units=8),
    DropoutSpec(rate=0.2),
    DenseSpec(units=3, activation="softmax"),
)
MLP = (
    FlattenSpec(),
    DenseSpec(units=8),
    CubicSpec(units=4),
    DenseSpec(units=3, activation="softmax"),
)


def split(n: int, seed: int) -> Split:
    """Three classes told apart by where the ink is, so a tiny model learns something."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 12, 12, 1), dtype=np.float32) * 0.3
    for k in range(3):
        x[y == k, :, 4 * k : 4 * k + 4] += 0.7
    return Split(x=x, y=y.astype(np.int64))


TRAIN, VAL = split(96, 1), split(32, 2)


def model_params(arch=CNN, family="keras", **train) -> ModelParams:
    tp = TrainParams(**{"epochs": 2, "batch_size": 32, **train})
    return ModelParams(family=family, dataset="tiny", arch=arch, train=tp)


def test_batches_depend_only_on_seed_epoch_and_index():
    data = split(10, 3)
    aug = AugmentParams(rotation=15, shift=0.1)
    a = keras_family.AugmentedBatches(data, 4, seed=7, augment_params=aug)
    b = keras_family.AugmentedBatches(data, 4, seed=7, augment_params=aug)
    assert len(a) == 3
    xa, ya = a[1]
    _ = b[2], b[0]  # other batches asked for first
    xb, yb = b[1]
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert sorted(np.concatenate([a[i][1] for i in range(3)])) == sorted(data.y)
    first = [a[i][1] for i in range(3)]
    a.on_epoch_end()
    assert a.epoch == 1
    assert any(not np.array_equal(f, a[i][1]) for i, f in enumerate(first))  # reshuffled
    plain = keras_family.AugmentedBatches(data, 4, seed=7, shuffle=False)
    np.testing.assert_array_equal(plain[0][0], data.x[:4])  # no augmentation, no shuffle


@pytest.mark.parametrize(
    ("name", "kind"), [("sgd", keras.optimizers.SGD), ("adam", keras.optimizers.Adam)]
)
def test_optimizers(name, kind):
    opt = keras_family.make_optimizer(model_params(optimizer=name, learning_rate=0.05).train)
    assert isinstance(opt, kind)
    assert float(opt.learning_rate.numpy()) == pytest.approx(0.05)


def test_momentum_and_weight_decay():
    tp = model_params(optimizer="momentum", momentum=0.8, weight_decay=1e-4).train
    opt = keras_family.make_optimizer(tp)
    assert isinstance(opt, keras.optimizers.SGD)
    assert opt.momentum == pytest.approx(0.8)
    assert opt.weight_decay == pytest.approx(1e-4)


@pytest.mark.slow
def test_train_history_files_and_callbacks(tmp_path: Path):
    rows = []
    mp = model_params(
        epochs=3,
        augment=AugmentParams(rotation=5, shift=0.05),
        reduce_lr=ReduceLRParams(factor=0.5, patience=1, min_lr=1e-4),
        early_stopping=EarlyStoppingParams(patience=5),
        checkpoint=True,
    )
    history = keras_family.train(mp, TRAIN, VAL, seed=3, out_dir=tmp_path, on_epoch=rows.append)
    assert rows == history
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert all(tuple(r) == keras_family.HISTORY_KEYS for r in history)
    assert all(r["epoch_seconds"] > 0 and r["images_per_second"] > 0 for r in history)
    assert history[0]["learning_rate"] == pytest.approx(0.001)
    assert (tmp_path / "model.keras").is_file() and (tmp_path / "best.keras").is_file()

    model = keras_family.load(tmp_path)
    proba = keras_family.predict_proba(model, VAL.x, batch_size=8)
    assert proba.shape == (32, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert keras_family.first_layer_kernels(model).shape == (3, 3, 1, 4)
    maps = keras_family.feature_maps(model, VAL.x[:5])
    assert maps.shape == (5, 10, 10, 4)
    assert maps.min() >= 0  # after batch norm and ReLU


@pytest.mark.slow
def test_plateau_reduces_the_rate_and_early_stopping_stops(tmp_path: Path):
    mp = model_params(
        arch=(FlattenSpec(), DenseSpec(units=3, activation="softmax")),
        epochs=6,
        learning_rate=1e-8,  # too small to move val_loss by ReduceLROnPlateau's min_delta
        reduce_lr=ReduceLRParams(factor=0.5, patience=1, min_lr=1e-10),
        early_stopping=EarlyStoppingParams(patience=2, min_delta=1e-3),
    )
    history = keras_family.train(mp, TRAIN, VAL, seed=0, out_dir=tmp_path, verbose=0)
    assert [r["learning_rate"] for r in history] == pytest.approx([1e-8, 1e-8, 5e-9], rel=1e-6)


@pytest.mark.slow
def test_same_params_twice_give_identical_weights_and_metrics(tmp_path: Path):
    mp = model_params(arch=CNN, family="custom", augment=AugmentParams())
    runs = [keras_family.train(mp, TRAIN, VAL, seed=5, out_dir=tmp_path / s) for s in "ab"]
    drop = ("epoch_seconds", "images_per_second")
    strip = [[{k: v for k, v in r.items() if k not in drop} for r in run] for run in runs]
    assert strip[0] == strip[1]
    a, b = (keras_family.load(tmp_path / s) for s in "ab")
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    other = keras_family.train(mp, TRAIN, VAL, seed=6, out_dir=tmp_path / "c")
    assert other[-1]["loss"] != runs[0][-1]["loss"]


@pytest.mark.slow
def test_custom_family_learns_and_round_trips(tmp_path: Path):
    mp = model_params(arch=MLP, family="custom", epochs=8, optimizer="adam", learning_rate=0.01)
    history = keras_family.train(mp, TRAIN, VAL, seed=0, out_dir=tmp_path, verbose=0)
    assert history[-1]["val_accuracy"] > 0.9
    model = keras_family.load(tmp_path)
    assert any(type(layer).__name__ == "CubicDense" for layer in model.layers)
    assert keras_family.first_layer_kernels(model) is None
    assert keras_family.feature_maps(model, VAL.x) is None
    np.testing.assert_allclose(history[-1]["val_accuracy"], _accuracy(model, VAL), atol=1e-6)


def _accuracy(model, data: Split) -> float:
    return float((keras_family.predict_proba(model, data.x).argmax(1) == data.y).mean())


def test_family_scratch_is_not_built_here():
    with pytest.raises(ValueError, match="scratch"):
        keras_family.build(model_params(family="scratch"), (12, 12, 1), seed=0)


@pytest.mark.slow
def test_bench_reports_every_keras_preset(capsys):
    p = params_mod.load()
    mlp = p.models["dense_mlp"].model_copy()
    assert bench_keras.bench(mlp, 64) > 0
    assert bench_keras.train_size(p, "dense_mlp") > 0
    bench_keras.main(["dense_mlp", "--images", "64"])
    out = capsys.readouterr().out
    assert "dense_mlp" in out and "s/epoch" in out
    with pytest.raises(SystemExit):
        bench_keras.main(["scratch_cnn"])
