"""Gradient checks of every scratch layer and the loss against central differences (float64)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.models.numpy_cnn.fused import ConvReLUPool
from pipeline.models.numpy_cnn.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    softmax,
    softmax_cross_entropy,
)

F64 = np.float64
EPS = 1e-6
TOL = 1e-6


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-12))


def numeric_grad(f, arr: np.ndarray) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to every element of ``arr``."""
    g = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        up = f()
        flat[i] = old - EPS
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * EPS)
    return g


def check_layer(layer, x: np.ndarray, training: bool = True, before=lambda: None) -> None:
    """The loss ``sum(forward(x) * r) + penalty``: compare backward's input and parameter gradients
    with central differences. ``before`` runs before every forward (to reset a generator)."""
    rng = np.random.default_rng(1)
    before()
    r = rng.standard_normal(layer.forward(x, training).shape)

    def loss() -> float:
        before()
        return float(np.sum(layer.forward(x, training) * r)) + layer.penalty()

    layer.zero_grads()
    before()
    layer.forward(x, training)
    dx = layer.backward(r)
    analytic = {k: g.copy() for k, g in layer.grads.items()}
    if dx is not None:
        assert dx.shape == x.shape
        assert rel_err(dx, numeric_grad(loss, x)) < TOL
    for k, p in layer.params.items():
        assert rel_err(analytic[k], numeric_grad(loss, p)) < TOL, k


def built(layer, in_shape, seed=0):
    layer.build(in_shape, np.random.default_rng(seed))
    return layer


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "shape", "use_bias"),
    [
        (3, 1, "valid", (2, 7, 6, 3), True),
        (3, 2, "valid", (2, 8, 7, 2), True),
        (3, 1, "same", (1, 5, 6, 2), False),
        (3, 2, "same", (2, 7, 8, 1), True),
        (2, 1, "same", (1, 5, 5, 2), True),
        (5, 2, "valid", (1, 9, 9, 1), True),
        (1, 1, "valid", (3, 4, 3, 2), True),
    ],
)
def test_conv2d_gradients(kernel, stride, padding, shape, use_bias):
    layer = Conv2D("c", 3, kernel, stride, padding, use_bias=use_bias, dtype=F64)
    built(layer, shape[1:])
    if use_bias:
        layer.params["b"][...] = rand(3, seed=5)
    check_layer(layer, rand(*shape))


def test_conv2d_l2_penalty_gradient():
    layer = built(Conv2D("c", 2, 3, l2=0.01, dtype=F64), (5, 5, 1))
    check_layer(layer, rand(1, 5, 5, 1))
    # With a zero upstream gradient the kernel gradient is exactly the penalty's, 2 * l2 * W.
    layer.zero_grads()
    x = rand(1, 5, 5, 1)
    layer.backward(np.zeros_like(layer.forward(x, True)))
    w = layer.params["W"]
    assert np.allclose(layer.grads["W"], 0.02 * w)
    assert layer.penalty() == pytest.approx(0.01 * np.sum(w**2))


def test_conv2d_output_shapes_match_tensorflow_rules():
    for h, k, s, padding, expected in [
        (28, 3, 1, "valid", 26),
        (28, 3, 2, "valid", 13),
        (28, 3, 1, "same", 28),
        (28, 3, 2, "same", 14),
        (7, 2, 2, "same", 4),
    ]:
        layer = built(Conv2D("c", 4, k, s, padding), (h, h, 1))
        assert layer.forward(np.zeros((1, h, h, 1), np.float32), False).shape == (
            1,
            expected,
            expected,
            4,
        )


def test_conv2d_matches_direct_convolution():
    x = rand(2, 6, 5, 3)
    layer = built(Conv2D("c", 4, 3, 1, "valid", dtype=F64), (6, 5, 3))
    layer.params["b"][...] = rand(4)
    w, b = layer.params["W"], layer.params["b"]
    want = np.zeros((2, 4, 3, 4))
    for i in range(4):
        for j in range(3):
            want[:, i, j] = np.einsum("nhwc,hwcf->nf", x[:, i : i + 3, j : j + 3], w) + b
    assert np.allclose(layer.forward(x, False), want)


@pytest.mark.parametrize(("units", "batch"), [(5, 4), (3, 1)])
def test_dense_gradients(units, batch):
    layer = built(Dense("d", units, dtype=F64), (7,))
    layer.params["b"][...] = rand(units, seed=3)
    check_layer(layer, rand(batch, 7))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 5, 4), (1, 3, 3, 2)])
def test_batchnorm_gradients(shape, training):
    layer = built(BatchNorm("bn", dtype=F64), shape[1:])
    c = shape[-1]
    layer.params["gamma"][...] = 1 + 0.5 * rand(c, seed=1)
    layer.params["beta"][...] = rand(c, seed=2)
    layer.state["mean"][...] = rand(c, seed=3)
    layer.state["var"][...] = 0.5 + np.abs(rand(c, seed=4))
    layer.momentum = 1.0  # keep the running statistics fixed across the difference quotients
    check_layer(layer, 3 + 2 * rand(*shape), training=training)


def test_batchnorm_running_statistics():
    layer = built(BatchNorm("bn", momentum=0.9, dtype=F64), (2,))
    x = rand(50, 2) * [1.0, 3.0] + [2.0, -1.0]
    y = layer.forward(x, True)
    assert np.allclose(y.mean(axis=0), 0, atol=1e-12)
    assert np.allclose(y.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-3))
    assert np.allclose(layer.state["mean"], 0.1 * x.mean(axis=0))
    assert np.allclose(layer.state["var"], 0.9 + 0.1 * x.var(axis=0))
    inference = layer.forward(x, False)
    want = (x - layer.state["mean"]) / np.sqrt(layer.state["var"] + 1e-3)
    assert np.allclose(inference, want)


def test_relu_gradients():
    check_layer(ReLU("r"), rand(3, 4, 5, 2))


@pytest.mark.parametrize(
    ("size", "stride", "padding", "shape"),
    [
        (2, None, "valid", (2, 6, 4, 3)),
        (2, None, "valid", (1, 7, 5, 2)),  # odd: the last row and column are dropped
        (3, None, "valid", (2, 7, 8, 1)),
        (3, 2, "valid", (2, 7, 7, 2)),
        (2, None, "same", (1, 5, 7, 2)),
        (3, 1, "same", (1, 4, 5, 1)),
    ],
)
def test_maxpool_gradients(size, stride, padding, shape):
    layer = built(MaxPool2D("p", size, stride, padding), shape[1:])
    check_layer(layer, rand(*shape))


def test_maxpool_forward_values_and_ties():
    x = np.arange(16, dtype=F64).reshape(1, 4, 4, 1)
    layer = built(MaxPool2D("p", 2), (4, 4, 1))
    assert layer.forward(x, True)[0, :, :, 0].tolist() == [[5, 7], [13, 15]]
    # Ties: the whole gradient goes to the first maximal input (row-major), as in TF.
    ones = np.ones((1, 4, 4, 1))
    layer.forward(ones, True)
    dx = layer.backward(np.ones((1, 2, 2, 1)))
    assert dx[0, :, :, 0].tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    general = built(MaxPool2D("p", 2, 1), (4, 4, 1))
    general.forward(ones, True)
    assert general.backward(np.ones((1, 3, 3, 1)))[0, 0, 0, 0] == 1


@pytest.mark.parametrize(
    ("shape", "pool"), [((2, 8, 8, 2), 2), ((1, 9, 10, 1), 2), ((2, 9, 9, 2), 3)]
)
def test_conv_relu_pool_gradients(shape, pool):
    layer = built(ConvReLUPool("c", 3, 3, 1, "valid", pool, dtype=F64), shape[1:])
    layer.params["b"][...] = 0.3 * rand(3, seed=7)
    check_layer(layer, rand(*shape))


def test_conv_relu_pool_equals_the_three_layers_with_ties():
    """Sparse images (zero background) make many exact ties; the fused layer must agree with
    conv -> ReLU -> pool in values and gradients."""
    rng = np.random.default_rng(0)
    x = (rng.random((4, 11, 11, 2)) > 0.7) * rng.random((4, 11, 11, 2))  # mostly zeros
    fused = built(ConvReLUPool("c", 4, 3, 1, "valid", 2, dtype=F64), (11, 11, 2))
    fused.params["b"][...] = [0.1, -0.1, 0.2, 0.0]
    conv = built(Conv2D("c", 4, 3, dtype=F64), (11, 11, 2))
    conv.params["W"][...] = fused.params["W"]
    conv.params["b"][...] = fused.params["b"]
    relu, pool = ReLU("r"), built(MaxPool2D("p", 2), (9, 9, 4))
    y = fused.forward(x, True)
    want = pool.forward(relu.forward(conv.forward(x, True), True), True)
    assert np.array_equal(y, want)
    dy = rng.standard_normal(y.shape)
    fused.zero_grads()
    conv.zero_grads()
    dx = fused.backward(dy)
    dx_want = conv.backward(relu.backward(pool.backward(dy)))
    assert np.allclose(dx, dx_want)
    for k in ("W", "b"):
        assert np.allclose(fused.grads[k], conv.grads[k])


def test_flatten_gradients_and_order():
    x = rand(2, 3, 4, 2)
    layer = Flatten("f")
    assert np.array_equal(layer.forward(x, True)[1], x[1].reshape(-1))  # NHWC, as Keras
    check_layer(layer, x)


def test_dropout_is_inverted_seeded_and_off_at_inference():
    x = np.ones((2000, 50), np.float32)
    layer = Dropout("d", 0.2, np.random.default_rng(0))
    y = layer.forward(x, True)
    assert set(np.unique(y).tolist()) == {0.0, np.float32(1 / 0.8)}
    assert abs(float(y.mean()) - 1) < 0.01
    assert np.array_equal(layer.backward(x), y)
    again = Dropout("d", 0.2, np.random.default_rng(0)).forward(x, True)
    assert np.array_equal(again, y)
    assert layer.forward(x, False) is x


def test_dropout_gradients():
    layer = Dropout("d", 0.3, np.random.default_rng(0))

    def reset():
        layer.rng = np.random.default_rng(42)

    check_layer(layer, rand(4, 6), before=reset)


@pytest.mark.parametrize("batch", [5, 1])
def test_softmax_cross_entropy_gradient(batch):
    logits = rand(batch, 4) * 3
    y = np.random.default_rng(1).integers(0, 4, batch)
    loss, d = softmax_cross_entropy(logits, y)
    p = softmax(logits)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(batch), y])))
    assert rel_err(d, numeric_grad(lambda: softmax_cross_entropy(logits, y)[0], logits)) < TOL


def test_softmax_cross_entropy_is_stable_for_large_logits():
    loss, d = softmax_cross_entropy(np.array([[1000.0, 0.0], [0.0, -1000.0]]), np.array([0, 1]))
    assert np.isfinite(loss)
    assert loss == pytest.approx(500.0)
    assert np.all(np.isfinite(d))
