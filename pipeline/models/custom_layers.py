"""Import path that logged models name: the layers live in pipeline/models/keras/layers.py,
the learning-rate schedule in pipeline/models/keras/schedule.py."""

from pipeline.models.keras.layers import *  # noqa: F403
from pipeline.models.keras.layers import (  # noqa: F401
    CubicDense,
    CustomConv2D,
    CustomMaxPooling2D,
    FusedBatchNormalization,
)
from pipeline.models.keras.schedule import ParamsSchedule  # noqa: F401
