"""``ParamsSchedule``: ``train.lr_schedule`` as a Keras learning-rate schedule.

Registered with Keras as ``pipeline>ParamsSchedule`` (the name saved optimizers refer to);
pipeline/models/keras/layers.py imports it, so whatever loads the custom layers (the
keras family, the MLflow loader of pipeline/models/keras/flavor.py) can load a saved
optimizer too. Imports keras and the NumPy formula of pipeline/models/schedule.py only.
"""

from __future__ import annotations

import keras
from keras import ops

from pipeline.models.schedule import learning_rate


@keras.saving.register_keras_serializable(package="pipeline")
class ParamsSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``train.lr_schedule`` as a Keras schedule: the formula of pipeline.models.schedule
    evaluated with ``keras.ops`` on the optimizer's step, inside the compiled train step."""

    def __init__(
        self,
        kind: str,
        peak: float,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: float = 1.0,
        final_lr: float = 0.0,
        decay_rate: float = 0.5,
    ):
        self.kind = kind
        self.peak = float(peak)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.warmup_epochs = float(warmup_epochs)
        self.final_lr = float(final_lr)
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        return learning_rate(self, self.peak, step, self.steps_per_epoch, self.epochs, xp=ops)

    def get_config(self):
        return {
            "kind": self.kind,
            "peak": self.peak,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "warmup_epochs": self.warmup_epochs,
            "final_lr": self.final_lr,
            "decay_rate": self.decay_rate,
        }
