"""CustomConv2D, CustomMaxPooling2D and CubicDense against stock Keras and NumPy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.models.keras.layers import CubicDense, CustomConv2D, CustomMaxPooling2D
from pipeline.models.keras.schedule import ParamsSchedule

RNG = np.random.default_rng(0)


def images(n=4, h=9, w=8, c=3) -> np.ndarray:
    return RNG.standard_normal((n, h, w, c)).astype(np.float32)


@pytest.mark.parametrize(
    ("kernel", "strides", "padding", "activation"),
    [(3, 1, "valid", "relu"), (3, 2, "same", "linear"), ((2, 3), (1, 2), "valid", "relu")],
)
def test_custom_conv_without_bn_equals_conv2d(kernel, strides, padding, activation):
    x = images()
    custom = CustomConv2D(5, kernel, strides=strides, padding=padding, activation=activation)
    stock = keras.layers.Conv2D(5, kernel, strides=strides, padding=padding, activation=activation)
    y_custom = custom(x)
    stock.build(x.shape)
    bias = RNG.standard_normal(5).astype(np.float32)
    custom.bias.assign(bias)
    stock.set_weights([keras.ops.convert_to_numpy(custom.kernel), bias])
    y_custom = keras.ops.convert_to_numpy(custom(x))
    y_stock = keras.ops.convert_to_numpy(stock(x))
    assert y_custom.shape == y_stock.shape == (4, *custom.compute_output_shape(x.shape)[1:])
    np.testing.assert_allclose(y_custom, y_stock, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("pool", "strides", "padding"), [(2, None, "valid"), (3, 2, "same"), ((2, 3), 1, "valid")]
)
def test_custom_max_pooling_equals_max_pooling2d(pool, strides, padding):
    x = images(h=9, w=11)
    y_custom = keras.ops.convert_to_numpy(CustomMaxPooling2D(pool, strides, padding)(x))
    y_stock = keras.ops.convert_to_numpy(keras.layers.MaxPooling2D(pool, strides, padding)(x))
    np.testing.assert_array_equal(y_custom, y_stock)
    shape = CustomMaxPooling2D(pool, strides, padding).compute_output_shape(x.shape)
    assert y_custom.shape == shape


def test_inner_batch_norm_training_vs_inference():
    x = images(n=16) * 3.0 + 2.0
    layer = CustomConv2D(4, 3, activation="linear", batch_norm=True, momentum=0.9)
    layer.build(x.shape)
    pre = keras.ops.convert_to_numpy(keras.ops.conv(x, layer.kernel) + layer.bias)  # (N,H,W,C)
    mean, var = pre.mean(axis=(0, 1, 2)), pre.var(axis=(0, 1, 2))

    # Training: batch statistics, and the moving averages move towards them.
    y_train = keras.ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_allclose(y_train, (pre - mean) / np.sqrt(var + 1e-3), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(y_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    moving_mean = keras.ops.convert_to_numpy(layer.moving_mean)
    moving_var = keras.ops.convert_to_numpy(layer.moving_variance)
    np.testing.assert_allclose(moving_mean, 0.1 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(moving_var, 0.9 + 0.1 * var, rtol=1e-4)

    # Inference: the moving statistics, not the batch's.
    y_infer = keras.ops.convert_to_numpy(layer(x, training=False))
    expected = (pre - moving_mean) / np.sqrt(moving_var + 1e-3)
    np.testing.assert_allclose(y_infer, expected, rtol=1e-3, atol=1e-4)
    assert not np.allclose(y_infer, y_train, atol=1e-2)
    assert {w.name for w in layer.non_trainable_weights} == {"moving_mean", "moving_variance"}
    assert {w.name for w in layer.trainable_weights} == {"kernel", "bias", "gamma", "beta"}


@pytest.mark.parametrize("training", [True, False])
def test_activation_before_bn_equals_conv2d_relu_then_batch_normalization(training):
    """Seed 004's block, Conv2D(activation='relu') -> BatchNormalization(), inside one layer."""
    x = images(n=8)
    custom = CustomConv2D(5, 3, batch_norm=True, activation_before_bn=True, momentum=0.9)
    custom.build(x.shape)
    stock_conv = keras.layers.Conv2D(5, 3, activation="relu")
    stock_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    stock_conv.build(x.shape)
    stock_bn.build((8, 7, 6, 5))
    bias = RNG.standard_normal(5).astype(np.float32)
    custom.bias.assign(bias)
    stock_conv.set_weights([keras.ops.convert_to_numpy(custom.kernel), bias])
    stats = [RNG.random(5).astype(np.float32) + 0.5 for _ in range(4)]  # gamma beta mean var
    for var, value in zip(
        (custom.gamma, custom.beta, custom.moving_mean, custom.moving_variance), stats, strict=True
    ):
        var.assign(value)
    stock_bn.set_weights(stats)
    y_custom = keras.ops.convert_to_numpy(custom(x, training=training))
    y_stock = keras.ops.convert_to_numpy(stock_bn(stock_conv(x), training=training))
    np.testing.assert_allclose(y_custom, y_stock, rtol=1e-4, atol=1e-4)
    assert (y_custom < 0).any()  # BN after the ReLU: negative outputs exist
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(custom.moving_mean),
        keras.ops.convert_to_numpy(stock_bn.moving_mean),
        rtol=1e-5,
    )


def test_l2_penalty_is_a_layer_loss():
    layer = CustomConv2D(6, 3, l2=0.01)
    layer.build((None, 8, 8, 2))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    (loss,) = layer.losses
    np.testing.assert_allclose(float(loss), 0.01 * np.sum(kernel**2), rtol=1e-5)
    no_l2 = CustomConv2D(6, 3)
    no_l2.build((None, 8, 8, 2))
    assert no_l2.losses == []
    # The penalty reaches a model's losses too.
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, CustomConv2D(6, 3, l2=0.01)(inputs))
    assert len(model.losses) == 1


def test_cubic_dense_matches_numpy_formula():
    x = RNG.standard_normal((5, 7)).astype(np.float32)
    layer = CubicDense(4)
    y = keras.ops.convert_to_numpy(layer(x))
    layer.b.assign(RNG.standard_normal(4).astype(np.float32))
    y = keras.ops.convert_to_numpy(layer(x))
    v, w, b = (keras.ops.convert_to_numpy(t) for t in (layer.V, layer.W, layer.b))
    np.testing.assert_allclose(y, x**3 @ v - x @ w + b, rtol=1e-5, atol=1e-5)
    assert y.shape == layer.compute_output_shape(x.shape) == (5, 4)
    assert [t.name for t in layer.trainable_weights] == ["V", "W", "b"]


@pytest.mark.parametrize(
    "layer",
    [
        CustomConv2D(8, (3, 5), strides=2, padding="same", batch_norm=True, l2=1e-4),
        CustomMaxPooling2D(3, 2, "same"),
        CubicDense(5, activation="relu"),
    ],
    ids=["conv", "pool", "cubic"],
)
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    registered = keras.saving.get_registered_object(f"pipeline>{type(layer).__name__}")
    assert registered is type(layer)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="padding"):
        CustomConv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="filters"):
        CustomConv2D(0)
    with pytest.raises(ValueError, match="units"):
        CubicDense(0)
    with pytest.raises(ValueError, match="pool_size"):
        CustomMaxPooling2D((2, 2, 2))


def _custom_model() -> keras.Model:
    inputs = keras.Input((12, 12, 1))
    x = CustomConv2D(4, 3, batch_norm=True, l2=1e-3, name="conv")(inputs)
    x = CustomMaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten()(x)
    x = CubicDense(6, name="cubic")(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.slow
def test_keras_save_and_load_in_a_fresh_process(tmp_path: Path):
    keras.utils.set_random_seed(1)
    model = _custom_model()
    x = RNG.random((8, 12, 12, 1), dtype=np.float32)
    model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)  # moving statistics move off 0 / 1
    expected = model.predict(x, verbose=0)
    np.save(tmp_path / "x.npy", x)
    model.save(tmp_path / "model.keras")
    script = textwrap.dedent(
        f"""
        import numpy as np, keras
        import pipeline.models.keras.layers
        model = keras.saving.load_model({str(tmp_path / "model.keras")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "y.npy")!r}, model.predict(x, verbose=0))
        print(sorted(type(layer).__name__ for layer in model.layers))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CubicDense" in done.stdout and "CustomConv2D" in done.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


FLAVOR_IMPORTS = [  # all that MLflow's loader imports besides keras (serving has no more)
    "pipeline",
    "pipeline.core",
    "pipeline.core.geometry",
    "pipeline.models",
    "pipeline.models.keras",
    "pipeline.models.keras.flavor",
    "pipeline.models.keras.layers",
    "pipeline.models.keras.losses",
    "pipeline.models.keras.schedule",
    "pipeline.models.mlflow_keras",
    "pipeline.models.mlflow_keras.models",
    "pipeline.models.schedule",
]


@pytest.mark.slow
def test_mlflow_loader_alone_loads_a_scheduled_optimizer_saved_under_the_old_module(tmp_path):
    """The module MLflow imports (pipeline.models.mlflow_keras) loads, in a fresh process, a
    model whose optimizer runs on ParamsSchedule, with the config naming the module the
    schedule lived in before it moved (layers.py): Keras finds it by its registered name."""
    keras.utils.set_random_seed(2)
    model = _custom_model()
    model.compile(
        keras.optimizers.Adam(ParamsSchedule("warmup_cosine", 0.01, 4, 2)),
        "sparse_categorical_crossentropy",
    )
    x = RNG.random((16, 12, 12, 1), dtype=np.float32)
    model.fit(x, np.arange(16) % 3, epochs=1, batch_size=4, verbose=0)
    model.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    rate = config["compile_config"]["optimizer"]["config"]["learning_rate"]
    assert rate["registered_name"] == "pipeline>ParamsSchedule"
    rate["module"] = "pipeline.models.keras.layers"
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "old.keras", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys, keras, numpy as np
        before = set(sys.modules)
        from pipeline.models.mlflow_keras import models
        print(sorted(set(sys.modules) - before))
        model = models.load_model({str(tmp_path / "old.keras")!r})
        print(type(model.optimizer._learning_rate).__name__)
        print(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "y.npy")!r}, model.predict(x, verbose=0))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    imported, schedule, rate = done.stdout.strip().splitlines()[-3:]
    assert imported == str(FLAVOR_IMPORTS)
    assert schedule == "ParamsSchedule"
    assert float(rate) == float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0))


def test_fused_batch_norm_matches_the_keras_ops_maths_and_its_gradient():
    import tensorflow as tf

    from pipeline.models.keras.layers import _fused_batch_norm

    x = tf.constant(images(n=6, c=4) * 2.0 + 1.0)
    gamma = tf.Variable(RNG.random(4).astype(np.float32) + 0.5)
    beta = tf.Variable(RNG.standard_normal(4).astype(np.float32))

    def composite(x):
        mean, var = keras.ops.moments(x, axes=[0, 1, 2])
        return (x - mean) * keras.ops.rsqrt(var + 1e-3) * gamma + beta, mean, var

    results = []
    for fn in (composite, lambda x: _fused_batch_norm(x, gamma, beta, 1e-3)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y, mean, var = fn(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        results.append([y, mean, var, *tape.gradient(loss, [x, gamma, beta])])
    for a, b in zip(*results, strict=True):
        scale = float(np.max(np.abs(b.numpy())))
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("shape", [(16, 5, 6, 3), (32, 7)], ids=["conv", "dense"])
def test_fused_batch_normalization_equals_the_stock_layer(shape):
    from pipeline.models.keras.layers import FusedBatchNormalization

    x = RNG.standard_normal(shape).astype(np.float32) * 2.0 + 0.5
    stock, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    stock.build(shape)
    fused.build(shape)
    weights = [RNG.random(shape[-1]).astype(np.float32) + 0.5 for _ in range(4)]
    stock.set_weights(weights)
    fused.set_weights(weights)
    for training in (True, False, True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(fused(x, training=training)),
            keras.ops.convert_to_numpy(stock(x, training=training)),
            rtol=1e-4,
            atol=1e-4,
        )
        for a, b in zip(fused.get_weights(), stock.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5)  # moving statistics move alike
    assert fused.get_config() == {**stock.get_config(), "name": fused.name}
