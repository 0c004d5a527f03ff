"""pipeline.core.geometry against Keras' own output shapes and 'same' padding."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from pipeline.core.geometry import conv_output, conv_padding
from pipeline.core.params import (
    ConvSpec,
    DenseSpec,
    FlattenSpec,
    ParamsError,
    PoolSpec,
    check_shapes,
)

SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 27, 28)
WINDOWS = (1, 2, 3, 5)
STRIDES = (1, 2, 3, 4)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_output_is_keras_conv_and_pool_output(padding):
    for size, k, s in itertools.product(SIZES, WINDOWS, STRIDES):
        ours = conv_output(size, k, s, padding)
        if padding == "valid" and k > size:
            assert ours == 0, (size, k, s)
            continue
        conv = keras.layers.Conv2D(1, (k, 1), strides=(s, 1), padding=padding)
        pool = keras.layers.MaxPooling2D((k, 1), strides=(s, 1), padding=padding)
        expected = conv.compute_output_shape((None, size, 1, 1))[1]
        assert ours == expected, (size, k, s, padding)
        assert pool.compute_output_shape((None, size, 1, 1))[1] == expected


@pytest.mark.parametrize("size,k,s", [(28, 3, 1), (28, 3, 2), (7, 2, 2), (13, 5, 3), (5, 4, 1)])
def test_same_padding_is_where_keras_pads(size, k, s):
    """A 'valid' convolution of the input padded by conv_padding equals Keras' 'same' one."""
    x = np.random.default_rng(0).random((1, size, size + 1, 2), dtype=np.float32)
    kernel = np.random.default_rng(1).random((k, k, 2, 3), dtype=np.float32)
    same = keras.ops.convert_to_numpy(keras.ops.conv(x, kernel, strides=s, padding="same"))
    pads = conv_padding(size, k, s, "same"), conv_padding(size + 1, k, s, "same")
    padded = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    valid = keras.ops.convert_to_numpy(keras.ops.conv(padded, kernel, strides=s, padding="valid"))
    assert same.shape == (
        1,
        conv_output(size, k, s, "same"),
        conv_output(size + 1, k, s, "same"),
        3,
    )
    np.testing.assert_allclose(valid, same, rtol=1e-5, atol=1e-6)


def test_valid_padding_adds_nothing_and_none_stays_none():
    assert conv_padding(28, 3, 2, "valid") == (0, 0)
    assert conv_output(None, 3, 1, "same") is None
    assert conv_padding(7, 2, 2, "same") == (0, 1)  # the odd zero goes after, as in TensorFlow


def test_unknown_padding_is_refused():
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same', got 'full'"):
        conv_output(28, 3, 1, "full")
    with pytest.raises(ValueError, match="got 'causal'"):
        conv_padding(28, 3, 1, "causal")


def test_check_shapes_follows_the_size_and_names_the_key():
    head = (FlattenSpec(), DenseSpec(units=3, activation="softmax"))
    # 28 -conv5/2-> 12 -pool2-> 6 -conv3 same/2-> 3 -pool3-> 1: fits
    fits = (
        ConvSpec(filters=2, kernel=5, stride=2),
        PoolSpec(size=2),
        ConvSpec(filters=2, kernel=3, stride=2, padding="same"),
        PoolSpec(size=3),
        *head,
    )
    check_shapes(fits, (28, 28), "models.m.arch")
    too_big = (*fits[:2], ConvSpec(filters=2, kernel=7), *head)  # 7 on the 6x6 of layer 2
    with pytest.raises(ParamsError) as err:
        check_shapes(too_big, (28, 28), "models.m.arch")
    assert str(err.value) == (
        "models.m.arch[2].kernel: 7 is larger than the layer's 6x6 input "
        "(the 28x28 images after layers 0..1)"
    )
    with pytest.raises(ParamsError, match=r"^a\[0\]\.size: 5 is larger than the 4x6 images$"):
        check_shapes((PoolSpec(size=5), *head), (4, 6), "a")
    check_shapes((PoolSpec(size=5, padding="same"), *head), (4, 6), "a")  # 'same' always fits
