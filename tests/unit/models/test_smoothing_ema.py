"""train.label_smoothing (scratch and Keras losses) and train.ema (Keras weight average),
each against a computation by hand."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.core.params import DenseSpec, FlattenSpec, ModelParams, TrainParams
from pipeline.data.prepared import Split
from pipeline.models.keras import build as keras_build
from pipeline.models.keras import family as keras_family
from pipeline.models.keras.losses import SparseSmoothedCrossentropy, training_loss
from pipeline.models.numpy_cnn.layers import softmax_cross_entropy

LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
LABELS = np.array([0, 1])


def by_hand(logits: np.ndarray, y: np.ndarray, e: float) -> float:
    """-sum_k q_k log p_k with q = (1 - e) one-hot + e / K, averaged over the rows."""
    total = 0.0
    for row, label in zip(logits.tolist(), y.tolist(), strict=True):
        norm = sum(math.exp(v) for v in row)
        k = len(row)
        for j, v in enumerate(row):
            q = (1 - e) * (j == label) + e / k
            total -= q * math.log(math.exp(v) / norm)
    return total / len(y)


@pytest.mark.parametrize("e", [0.0, 0.1, 0.3])
def test_scratch_loss_and_gradient_match_the_hand_computation(e):
    loss, grad = softmax_cross_entropy(LOGITS.copy(), LABELS, e)
    assert loss == pytest.approx(by_hand(LOGITS, LABELS, e), rel=1e-12)
    h = 1e-6  # the gradient is the derivative of that loss
    for i, j in np.ndindex(LOGITS.shape):
        up, down = LOGITS.copy(), LOGITS.copy()
        up[i, j] += h
        down[i, j] -= h
        slope = (by_hand(up, LABELS, e) - by_hand(down, LABELS, e)) / (2 * h)
        assert grad[i, j] == pytest.approx(slope, abs=1e-7)


def test_no_smoothing_is_bit_identical_to_plain_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 10)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    loss, grad = softmax_cross_entropy(logits, y, 0.0)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected = p.copy()
    expected[np.arange(64), y] -= 1
    assert np.array_equal(grad, expected / 64)
    assert loss == float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(64), y]))


def test_keras_loss_matches_the_hand_computation():
    probs = keras.ops.softmax(LOGITS.astype("float32"))
    got = SparseSmoothedCrossentropy(0.2)(LABELS.reshape(-1, 1), probs)
    assert float(got) == pytest.approx(by_hand(LOGITS, LABELS, 0.2), rel=1e-5)
    assert training_loss(0.0) == "sparse_categorical_crossentropy"
    plain = keras.losses.SparseCategoricalCrossentropy()(LABELS, probs)
    assert float(SparseSmoothedCrossentropy(0.0)(LABELS, probs)) == pytest.approx(float(plain))


def test_params_refuse_bad_smoothing_and_ema_on_scratch():
    with pytest.raises(ValidationError, match="label_smoothing"):
        TrainParams(epochs=1, batch_size=4, label_smoothing=1.0)
    with pytest.raises(ValidationError, match="ema"):
        TrainParams(epochs=1, batch_size=4, ema=1.0)
    arch = (FlattenSpec(), DenseSpec(units=3, activation="softmax"))
    train = TrainParams(epochs=1, batch_size=4, ema=0.9)
    with pytest.raises(ValidationError, match=r"train\.ema: the scratch family"):
        ModelParams(family="scratch", dataset="d", arch=arch, train=train)
    ModelParams(family="keras", dataset="d", arch=arch, train=train)


class RawWeights(keras.callbacks.Callback):
    """The raw weights after every training step."""

    def __init__(self):
        super().__init__()
        self.steps: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([keras.ops.convert_to_numpy(v) for v in self.model.trainable_weights])


def test_ema_model_holds_the_moving_average_computed_by_hand():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4)).astype("float32")
    y = rng.integers(0, 3, 12)
    arch = (FlattenSpec(), DenseSpec(units=3, activation="softmax"))
    tp = TrainParams(epochs=2, batch_size=4, optimizer="sgd", learning_rate=0.5, ema=0.6)
    mp = ModelParams(family="keras", dataset="d", arch=arch, train=tp)
    model = keras_build.build(mp, (4,), seed=0)
    raw = RawWeights()
    hist = model.fit(
        x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
        validation_data=(x, y), callbacks=[keras_family.EMAWeights(), raw],
    )  # fmt: skip
    assert len(raw.steps) == 6
    average = raw.steps[0]  # Keras: the first step copies, then m * avg + (1 - m) * w
    for w in raw.steps[1:]:
        average = [0.6 * a + 0.4 * b for a, b in zip(average, w, strict=True)]
    final = [keras.ops.convert_to_numpy(v) for v in model.trainable_weights]
    for got, want in zip(final, average, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(final[0], raw.steps[-1][0])  # not the raw weights
    # the last epoch's validation scored the average, as the saved model holds it
    score = model.evaluate(x, y, verbose=0, return_dict=True)
    assert hist.history["val_loss"][-1] == pytest.approx(score["loss"], rel=1e-5)


def test_family_train_with_ema_and_early_stopping_saves_the_average(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((64, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, 64)
    arch = (FlattenSpec(), DenseSpec(units=8), DenseSpec(units=3, activation="softmax"))
    tp = TrainParams(
        epochs=3, batch_size=16, learning_rate=0.01, ema=0.9, label_smoothing=0.1,
        early_stopping={"patience": 1}, checkpoint=True,
    )  # fmt: skip
    mp = ModelParams(family="keras", dataset="d", arch=arch, train=tp)
    rows = keras_family.train(mp, Split(x, y), Split(x[:16], y[:16]), seed=0, out_dir=tmp_path)
    model = keras_family.load(tmp_path)
    best = min(r["val_loss"] for r in rows)
    model.compile(loss=training_loss(0.1))
    assert model.evaluate(x[:16], y[:16], verbose=0) == pytest.approx(best, rel=1e-4)
