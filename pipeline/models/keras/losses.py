"""The training loss of the Keras families with ``train.label_smoothing``: cross-entropy of
integer labels against smoothed targets ``(1 - e) * one-hot + e / K`` (Keras' sparse
cross-entropy has no smoothing; its categorical one wants one-hot labels). Registered under
the package ``pipeline`` so that a saved model's compile config names it."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="pipeline")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    def __init__(self, label_smoothing: float = 0.0, name: str = "smoothed_crossentropy", **kw):
        super().__init__(name=name, **kw)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        k = ops.shape(y_pred)[-1]
        onehot = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), k)
        return keras.losses.categorical_crossentropy(
            onehot, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def training_loss(label_smoothing: float) -> str | keras.losses.Loss:
    """Keras' own sparse cross-entropy, or the smoothed one when ``label_smoothing`` > 0."""
    if label_smoothing:
        return SparseSmoothedCrossentropy(label_smoothing)
    return "sparse_categorical_crossentropy"
