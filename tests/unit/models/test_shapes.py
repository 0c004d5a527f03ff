"""Output sizes of conv and pool windows: the scratch layers, the custom Keras layers and
params' shape check (all on pipeline/core/geometry.py) against stock Keras layers."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from pipeline.core.params import ConvSpec, DenseSpec, FlattenSpec, ParamsError, check_shapes
from pipeline.models.keras.layers import CustomConv2D, CustomMaxPooling2D
from pipeline.models.numpy_cnn.layers import Conv2D, MaxPool2D

CASES = [
    (h, w, k, s, padding)
    for (h, w), k, s, padding in itertools.product(
        [(28, 28), (13, 9), (7, 8)], [1, 2, 3, 5], [1, 2, 3], ["valid", "same"]
    )
]


@pytest.mark.parametrize("h,w,k,s,padding", CASES)
def test_every_layer_has_keras_output_size(h, w, k, s, padding):
    conv = keras.layers.Conv2D(4, k, strides=s, padding=padding)
    expected = conv.compute_output_shape((None, h, w, 2))  # (None, Ho, Wo, 4)
    custom = CustomConv2D(4, k, strides=s, padding=padding)
    assert custom.compute_output_shape((None, h, w, 2)) == expected
    pool = CustomMaxPooling2D(k, s, padding)
    stock_pool = keras.layers.MaxPooling2D(k, s, padding)
    assert pool.compute_output_shape((None, h, w, 2)) == stock_pool.compute_output_shape(
        (None, h, w, 2)
    )
    rng = np.random.default_rng(0)
    assert Conv2D("c", 4, k, s, padding).build((h, w, 2), rng) == expected[1:]
    assert MaxPool2D("p", k, s, padding).build((h, w, 2), rng) == (*expected[1:3], 2)
    # params: a following window fits the layer's output exactly, one more does not
    ho, wo = expected[1:3]
    first = ConvSpec(filters=4, kernel=k, stride=s, padding=padding)
    head = (FlattenSpec(), DenseSpec(units=2, activation="softmax"))
    check_shapes((first, ConvSpec(filters=1, kernel=min(ho, wo)), *head), (h, w), "a")
    too_big = (first, ConvSpec(filters=1, kernel=min(ho, wo) + 1), *head)
    with pytest.raises(ParamsError, match=rf"^a\[1\]\.kernel: .* the layer's {ho}x{wo} input"):
        check_shapes(too_big, (h, w), "a")
