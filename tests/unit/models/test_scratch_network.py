"""The scratch network built from the arch spec: whole-model gradients, optimizers, training,
save/load and the family interface the train stage calls."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.core.params import (
    ConvSpec,
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
from pipeline.models.numpy_cnn import family
from pipeline.models.numpy_cnn.fused import ConvReLUPool
from pipeline.models.numpy_cnn.layers import Dropout
from pipeline.models.numpy_cnn.network import Network
from pipeline.models.numpy_cnn.optim import SGD, Adam, Momentum, make_optimizer
from tests.unit.models.test_scratch_layers import numeric_grad, rel_err

SMALL_BN = (
    ConvSpec(filters=3, kernel=3, batch_norm=True),
    ConvSpec(filters=4, kernel=3, stride=2, padding="same"),
    PoolSpec(size=2),
    FlattenSpec(),
    DenseSpec(units=6, batch_norm=True),
    DropoutSpec(rate=0.25),
    DenseSpec(units=3, activation="softmax"),
)
SMALL_BN_ACT_FIRST = (  # seed 004's order: ReLU, then batch norm
    ConvSpec(filters=3, kernel=3, batch_norm=True, activation_before_bn=True),
    ConvSpec(filters=4, kernel=3, stride=2, padding="same", batch_norm=True),
    FlattenSpec(),
    DenseSpec(units=6, batch_norm=True, activation_before_bn=True),
    DropoutSpec(rate=0.25),
    DenseSpec(units=3, activation="softmax"),
)
SMALL = (
    ConvSpec(filters=4, kernel=3),
    PoolSpec(size=2),
    ConvSpec(filters=6, kernel=3, padding="same"),
    PoolSpec(size=2),
    FlattenSpec(),
    DenseSpec(units=16),
    DropoutSpec(rate=0.2),
    DenseSpec(units=3, activation="softmax"),
)


def blobs(n: int, size: int = 10, classes: int = 3, seed: int = 0) -> Split:
    """Images whose class is where a bright square sits: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.random((n, size, size, 1), dtype=np.float32) * 0.2
    for c in range(classes):
        r = 1 + 3 * c
        x[y == c, r : r + 3, 2:7] += 0.8
    return Split(x.astype(np.float32), y.astype(np.int64))


@pytest.mark.parametrize(
    "arch", [SMALL_BN, SMALL_BN_ACT_FIRST, SMALL], ids=["batchnorm", "relu_then_bn", "fused"]
)
def test_whole_network_gradients(arch):
    net = Network(arch, (9, 9, 2), seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    net.flat_params += 0.05 * rng.standard_normal(net.flat_params.shape)  # nonzero biases
    x = rng.standard_normal((4, 9, 9, 2))
    y = rng.integers(0, 3, 4)

    def reset():
        for layer in net.layers:
            if isinstance(layer, Dropout):
                layer.rng = np.random.default_rng(7)
            for v in layer.state.values():
                v[...] = 0.5 if v is layer.state.get("var") else 0.0

    def loss():
        reset()
        return net.loss_and_grads(x, y)[0]

    loss()
    analytic = net.flat_grads.copy()
    # A sample keeps it fast: up to 20 entries of every layer's parameters.
    idx = np.concatenate([
        rng.choice(np.arange(sl.start, sl.stop), min(20, sl.stop - sl.start), replace=False)
        for sl in net.slices.values()
    ])  # fmt: skip
    numeric = np.array([numeric_grad(loss, net.flat_params[i : i + 1])[0] for i in idx])
    assert rel_err(analytic[idx], numeric) < 1e-6


def test_network_from_spec_layers_and_names():
    net = Network(SMALL_BN, (9, 9, 2))
    names = [layer.name for layer in net.layers]
    assert names[:4] == ["conv1", "conv1_bn", "conv1_relu", "conv2"]
    assert "dense2" in names and list(net.slices) == [
        "conv1", "conv1_bn", "conv2", "dense1", "dense1_bn", "dense2",
    ]  # fmt: skip
    assert "b" not in net.layers[0].params  # batch norm's beta replaces the bias
    fused = Network(SMALL, (9, 9, 1))
    assert isinstance(fused.layers[0], ConvReLUPool)
    assert fused.forward(np.zeros((2, 9, 9, 1), np.float32)).shape == (2, 3)


def test_activation_before_bn_layer_order_and_bias():
    net = Network(SMALL_BN_ACT_FIRST, (9, 9, 2))
    names = [layer.name for layer in net.layers]
    assert names[:6] == ["conv1", "conv1_relu", "conv1_bn", "conv2", "conv2_bn", "conv2_relu"]
    assert names[7:10] == ["dense1", "dense1_relu", "dense1_bn"]
    assert "b" in net.layers[0].params  # a bias before the ReLU is not redundant
    assert "b" not in net.layers[3].params  # conv -> BN: beta replaces it
    out = net.layers[2].forward(  # BN output after ReLU has negative values
        net.layers[1].forward(net.layers[0].forward(np.ones((4, 9, 9, 2), np.float32), True), True),
        True,
    )
    assert (out < 0).any()


def test_unknown_layer_and_bad_head_are_rejected():
    from pipeline.core.params import CubicSpec

    with pytest.raises(ValueError, match="no 'cubic' layer"):
        Network((FlattenSpec(), CubicSpec(units=4), *SMALL[-1:]), (4, 4, 1))
    with pytest.raises(ValueError, match="softmax"):
        Network((FlattenSpec(), DenseSpec(units=3)), (4, 4, 1))


def test_fused_and_unfused_networks_agree():
    a = Network(SMALL, (10, 10, 1), seed=1)
    b = Network(SMALL, (10, 10, 1), seed=1, fuse=False)
    b.set_weights(a.get_weights())
    data = blobs(8)
    for net in (a, b):
        for layer in net.layers:
            if isinstance(layer, Dropout):
                layer.rng = np.random.default_rng(0)
    la, _ = a.loss_and_grads(data.x, data.y)
    lb, _ = b.loss_and_grads(data.x, data.y)
    assert la == pytest.approx(lb, rel=1e-6)
    assert np.allclose(a.flat_grads, b.flat_grads, atol=1e-6)


def test_replica_shares_parameters_and_split_batches_match_whole():
    net = Network(SMALL, (10, 10, 1), seed=0)
    twin = net.replica(1)
    assert np.shares_memory(twin.flat_params, net.flat_params)
    assert not np.shares_memory(twin.flat_grads, net.flat_grads)
    data = blobs(8)
    for n in (net, twin):
        n.layers[-2].rate = 0.0  # no dropout: the two halves must add up to the whole
    net.loss_and_grads(data.x, data.y)
    whole = net.flat_grads.copy()
    net.loss_and_grads(data.x[:4], data.y[:4], 0.5)
    twin.loss_and_grads(data.x[4:], data.y[4:], 0.5)
    assert np.allclose(net.flat_grads + twin.flat_grads, whole, atol=1e-6)


def test_optimizer_updates():
    p = np.array([1.0, 2.0], np.float32)
    g = np.array([0.5, -1.0], np.float32)
    mask = np.array([1.0, 0.0], np.float32)
    sgd = SGD(0.1, weight_decay=0.2)
    q = p.copy()
    sgd.step(q, g.copy(), mask)
    assert np.allclose(q, p - 0.1 * (g + 0.2 * mask * p))
    mom = Momentum(0.1, 0.9)
    q = p.copy()
    mom.step(q, g.copy(), mask)
    mom.step(q, g.copy(), mask)
    assert np.allclose(q, p - 0.1 * g - (0.9 * 0.1 * g + 0.1 * g))
    adam = Adam(0.01)
    q = p.copy()
    adam.step(q, g.copy(), mask)
    assert np.allclose(q, p - 0.01 * np.sign(g), atol=1e-6)  # first Adam step is lr * sign
    assert isinstance(make_optimizer("momentum", 0.1), Momentum)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("rmsprop", 0.1)


def test_overfits_a_small_batch():
    data = blobs(32, seed=1)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 32)  # random labels: only memorizing reaches 100%
    arch = tuple(s for s in SMALL if s.type != "dropout")
    net = Network(arch, (10, 10, 1), seed=0)
    opt = Adam(0.01)
    for _ in range(300):
        _, correct = net.loss_and_grads(data.x, y)
        opt.step(net.flat_params, net.flat_grads, net.decay_mask)
    assert correct == 32
    assert np.array_equal(net.predict(data.x), y)


def test_save_load_predicts_exactly(tmp_path):
    net = Network(SMALL_BN, (10, 10, 1), seed=0)
    data = blobs(16)
    net.loss_and_grads(data.x, data.y)  # move the running statistics
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert "__arch__" in f.files and "conv1_bn/mean" in f.files
    loaded = Network.load(tmp_path / "m.npz")
    assert loaded.arch == net.arch
    assert np.array_equal(loaded.predict_proba(data.x), net.predict_proba(data.x))
    assert np.array_equal(loaded.predict(data.x), net.predict(data.x))


def model_params(arch=SMALL, **train) -> ModelParams:
    tp = TrainParams(**{"epochs": 3, "batch_size": 16, "optimizer": "adam", **train})
    return ModelParams(family="scratch", dataset="digits10", arch=arch, train=tp)


def test_train_history_save_and_interface(tmp_path):
    train, val = blobs(320, seed=0), blobs(64, seed=1)
    rows = []
    history = family.train(
        model_params(learning_rate=0.01), train, val, seed=0, out_dir=tmp_path,
        on_epoch=rows.append, progress=False,
    )  # fmt: skip
    assert rows == history and [r["epoch"] for r in history] == [1, 2, 3]
    keys = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
            "epoch_seconds", "images_per_second"}  # fmt: skip
    assert keys <= set(history[0])
    assert {"grad_norm/conv1", "grad_norm/conv2", "grad_norm/dense1", "grad_norm/dense2"} <= set(
        history[0]
    )
    assert history[-1]["val_accuracy"] > 0.9
    model = family.load(tmp_path)
    proba = family.predict_proba(model, val.x)
    assert proba.shape == (64, 3) and proba.dtype == np.float32
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert family.first_layer_kernels(model).shape == (3, 3, 1, 4)
    maps = family.feature_maps(model, val.x[:5])
    assert maps.shape == (5, 8, 8, 4) and maps.min() >= 0
    unfused = Network(model.arch, model.input_shape, fuse=False)
    unfused.set_weights(model.get_weights())
    assert np.allclose(maps, unfused.layers[1].forward(unfused.layers[0].forward(
        val.x[:5], False), False))  # fmt: skip


def test_train_is_seeded_and_supports_augment_and_batchnorm(tmp_path):
    from pipeline.core.params import AugmentParams

    mp = model_params(SMALL_BN, epochs=1, optimizer="momentum", learning_rate=0.05,
                      augment=AugmentParams(rotation=10, shift=0.1), weight_decay=1e-4)  # fmt: skip
    train, val = blobs(96), blobs(32, seed=1)
    a = family.train(mp, train, val, seed=5, out_dir=tmp_path / "a", progress=False)
    b = family.train(mp, train, val, seed=5, out_dir=tmp_path / "b", progress=False)
    assert a[0]["loss"] == b[0]["loss"] and a[0]["val_loss"] == b[0]["val_loss"]
    assert family.first_layer_kernels(family.load(tmp_path / "a")) is not None
    assert family.feature_maps(family.load(tmp_path / "a"), val.x[:2]).shape == (2, 8, 8, 3)


def test_early_stopping_restores_best_and_reduce_lr(tmp_path):
    train, val = blobs(64), blobs(32, seed=1)
    val = dataclasses.replace(val, y=np.random.default_rng(0).integers(0, 3, 32))  # noise
    mp = model_params(
        epochs=8, learning_rate=0.05,
        early_stopping=EarlyStoppingParams(patience=2), checkpoint=True,
        reduce_lr=ReduceLRParams(factor=0.5, patience=1, min_lr=0.02),
    )  # fmt: skip
    history = family.train(mp, train, val, seed=0, out_dir=tmp_path, progress=False)
    assert len(history) < 8
    best = min(r["val_loss"] for r in history)
    loss, _ = family.load(tmp_path).evaluate(val.x, val.y)
    assert loss == pytest.approx(best, rel=1e-5)
    checkpoint = Network.load(tmp_path / family.CHECKPOINT_FILE)
    assert checkpoint.evaluate(val.x, val.y)[0] == pytest.approx(best, rel=1e-5)
    lrs = [r["learning_rate"] for r in history]
    assert lrs[0] == 0.05 and min(lrs) >= 0.02


def test_scratch_package_is_pure_numpy():
    import subprocess
    import sys

    code = (
        "import sys, pipeline.models.numpy_cnn.family, pipeline.models.numpy_cnn.network;"
        "bad = [m for m in ('tensorflow', 'keras', 'torch', 'jax', 'numba') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bench_reports_missing_data(tmp_path, capsys):
    from pipeline.devtools import bench

    with pytest.raises(SystemExit, match="not found"):
        bench.main(["scratch", "--data", str(tmp_path / "missing.npz")])


def test_lr_schedule_sets_the_rate_of_every_step(tmp_path):
    from pipeline.core.params import LRScheduleParams
    from pipeline.models.schedule import learning_rate

    sched = LRScheduleParams(kind="one_cycle", warmup_epochs=1)
    mp = model_params(epochs=3, batch_size=32, learning_rate=0.01, lr_schedule=sched)
    train, val = blobs(96), blobs(32, seed=1)
    history = family.train(mp, train, val, seed=0, out_dir=tmp_path, progress=False)
    steps = 3  # 96 images, batch 32
    want = [float(learning_rate(sched, 0.01, e * steps, steps, 3)) for e in range(3)]
    assert [r["learning_rate"] for r in history] == pytest.approx(want)
    assert want[0] < want[1] and want[2] < want[1]  # up to the peak, then down
