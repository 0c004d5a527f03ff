"""scratch_dropout_cnn against its Keras twin keras_small_cnn: with the same weights and
batch, the loss and every gradient agree within float32 tolerance, and so does one Adam step
from the same gradients."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import params
from pipeline.models.numpy_cnn.layers import Dropout
from pipeline.models.numpy_cnn.network import Network
from pipeline.models.numpy_cnn.optim import Adam

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.slow  # importing TensorFlow alone takes several seconds


def twins(seed: int = 0):
    from pipeline.models.keras.build import build_keras_model

    p = params.load()
    arch = p.models["scratch_dropout_cnn"].arch
    assert p.models["keras_small_cnn"].arch == arch  # the same network by construction
    net = Network(arch, (28, 28, 1), seed=seed)
    for layer in net.layers:
        if isinstance(layer, Dropout):
            layer.rate = 0.0  # Keras runs with training=False below: dropout off in both
    model = build_keras_model(arch, (28, 28, 1), seed=seed)
    weighted = [layer for layer in model.layers if layer.weights]
    assert len(weighted) == len(net.slices)
    # Scratch weights into Keras, layer by layer (kernels share the (kh, kw, cin, cout) and
    # (in, out) layouts; Flatten is NHWC in both).
    by_name = {layer.name: layer for layer in net.layers}
    pairs = [(klayer, by_name[name]) for klayer, name in zip(weighted, net.slices, strict=True)]
    for klayer, scratch_layer in pairs:
        klayer.set_weights([scratch_layer.params["W"], scratch_layer.params["b"]])
    return net, model, pairs


def test_loss_gradients_and_adam_step_match_keras():
    net, model, pairs = twins()
    rng = np.random.default_rng(0)
    x = rng.random((16, 28, 28, 1), dtype=np.float32)  # (N, 28, 28, 1)
    y = rng.integers(0, 10, 16)

    loss, _ = net.loss_and_grads(x, y)
    with tf.GradientTape() as tape:
        proba = model(x, training=False)
        kloss = keras.losses.SparseCategoricalCrossentropy()(y, proba)
    kgrads = tape.gradient(kloss, model.trainable_variables)
    assert loss == pytest.approx(float(kloss), rel=1e-5)
    assert np.allclose(net.predict_proba(x), proba.numpy(), atol=1e-6)

    kgrad = {v.path: g.numpy() for v, g in zip(model.trainable_variables, kgrads, strict=True)}
    for klayer, scratch_layer in pairs:
        for key, var in zip(("W", "b"), klayer.trainable_variables, strict=True):
            g, kg = scratch_layer.grads[key], kgrad[var.path]
            scale = float(np.max(np.abs(kg)))
            assert np.max(np.abs(g - kg)) <= 1e-4 * scale + 1e-7, f"{scratch_layer.name}/{key}"
            # The Adam step below starts from identical gradients: Adam divides by
            # sqrt(v) + eps, so where a gradient entry is near eps a float32 rounding
            # difference would become a visible step difference. Here the optimizers are
            # compared, the gradients just were.
            g[...] = kg
    keras.optimizers.Adam(1e-3).apply_gradients(zip(kgrads, model.trainable_variables, strict=True))
    Adam(1e-3).step(net.flat_params, net.flat_grads, net.decay_mask)
    for klayer, scratch_layer in pairs:
        kw, kb = klayer.get_weights()
        assert np.allclose(scratch_layer.params["W"], kw, atol=2e-6), scratch_layer.name
        assert np.allclose(scratch_layer.params["b"], kb, atol=2e-6), scratch_layer.name
