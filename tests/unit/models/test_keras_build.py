"""One architecture spec built from stock Keras layers and from the custom layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.core.params import ConvSpec, CubicSpec, DenseSpec, FlattenSpec, PoolSpec
from pipeline.models.keras.build import build_keras_model
from pipeline.models.keras.layers import CubicDense, CustomConv2D, CustomMaxPooling2D


@pytest.fixture(scope="module")
def presets():
    return params_mod.load(config.params_path(config.ROOT)).models


def layer_summary(model: keras.Model) -> list[tuple[str, tuple]]:
    return [(type(layer).__name__, tuple(layer.output.shape[1:])) for layer in model.layers[1:]]


def test_keras_small_cnn_is_the_scratch_dropout_cnn_network(presets):
    assert presets["keras_small_cnn"].arch == presets["scratch_dropout_cnn"].arch
    model = build_keras_model(presets["keras_small_cnn"].arch, (28, 28, 1), n_classes=10)
    assert isinstance(model.layers[0], keras.layers.InputLayer)
    assert layer_summary(model) == [
        ("Conv2D", (26, 26, 32)),
        ("Activation", (26, 26, 32)),
        ("MaxPooling2D", (13, 13, 32)),
        ("Conv2D", (11, 11, 64)),
        ("Activation", (11, 11, 64)),
        ("MaxPooling2D", (5, 5, 64)),
        ("Flatten", (1600,)),
        ("Dense", (128,)),
        ("Activation", (128,)),
        ("Dropout", (128,)),
        ("Dense", (10,)),
        ("Activation", (10,)),
    ]
    # 3*3*1*32+32, 3*3*32*64+64, 1600*128+128, 128*10+10
    assert model.count_params() == 320 + 18_496 + 204_928 + 1_290


def test_keras_cnn_is_seed_004_as_written(presets):
    """Valid padding, Conv2D(activation='relu') then BatchNormalization(), 1,446,602
    parameters: the count Keras gives for seed 004's model."""
    model = build_keras_model(presets["keras_cnn"].arch, (28, 28, 1), n_classes=10)
    assert model.count_params() == 1_446_602
    assert [layer.name for layer in model.layers[1:4]] == ["conv0", "conv0_act", "conv0_bn"]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 4 and all(c.padding == "valid" and c.use_bias for c in convs)
    assert [tuple(c.output.shape[1:]) for c in convs] == [
        (26, 26, 64), (24, 24, 64), (10, 10, 128), (8, 8, 128),
    ]  # fmt: skip
    for layer in model.layers:  # every BN follows a ReLU
        if isinstance(layer, keras.layers.BatchNormalization):
            before = model.layers[model.layers.index(layer) - 1]
            assert isinstance(before, keras.layers.Activation), layer.name
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 6


def test_activation_before_bn_orders_blocks_and_custom_layer():
    arch = (
        ConvSpec(filters=3, batch_norm=True, activation_before_bn=True),
        ConvSpec(filters=3, batch_norm=True),
        FlattenSpec(),
        DenseSpec(units=4, batch_norm=True, activation_before_bn=True),
        DenseSpec(units=2, activation="softmax"),
    )
    names = [layer.name for layer in build_keras_model(arch, (8, 8, 1)).layers[1:]]
    assert names == [
        "conv0", "conv0_act", "conv0_bn", "conv1", "conv1_bn", "conv1_act", "flatten2",
        "dense3", "dense3_act", "dense3_bn", "dense4", "dense4_act",
    ]  # fmt: skip
    custom = build_keras_model(arch, (8, 8, 1), custom=True)
    flags = [
        layer.activation_before_bn for layer in custom.layers if isinstance(layer, CustomConv2D)
    ]
    assert flags == [True, False]


def test_custom_family_uses_the_custom_layers(presets):
    model = build_keras_model(presets["custom_cnn"].arch, (28, 28, 1), custom=True)
    convs = [layer for layer in model.layers if isinstance(layer, CustomConv2D)]
    assert len(convs) == 2 and all(c.batch_norm and c.l2 == 1e-4 for c in convs)
    assert sum(isinstance(layer, CustomMaxPooling2D) for layer in model.layers) == 2
    assert not any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
    assert len(model.losses) == 2  # one L2 penalty a conv layer

    cubic = build_keras_model(presets["cubic_mlp"].arch, (28, 28, 1), n_classes=3, custom=True)
    assert [type(layer).__name__ for layer in cubic.layers if layer.weights] == [
        "Dense",
        "Dense",
        "CubicDense",
        "Dense",
    ]
    assert isinstance(cubic.get_layer("cubic3"), CubicDense)


def test_same_seed_same_weights_other_seed_other_weights():
    arch = (ConvSpec(filters=4), PoolSpec(), FlattenSpec(), DenseSpec(units=3))
    weights = [
        [w.numpy() for w in build_keras_model(arch, (8, 8, 1), seed=s).weights] for s in (1, 1, 2)
    ]
    for a, b in zip(weights[0], weights[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(weights[0][0], weights[2][0])


def test_invalid_specs_are_rejected():
    arch = (FlattenSpec(), DenseSpec(units=3, activation="softmax"))
    with pytest.raises(ValueError, match="3 units but the dataset has 10 classes"):
        build_keras_model(arch, (28, 28, 1), n_classes=10)
    with pytest.raises(ValueError, match="family custom"):
        build_keras_model((FlattenSpec(), CubicSpec(units=4)), (28, 28, 1))
    with pytest.raises(ValueError, match="at least one layer"):
        build_keras_model((), (28, 28, 1))
