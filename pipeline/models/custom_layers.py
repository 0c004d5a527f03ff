"""Import path that logged models name: the layers live in pipeline/models/keras/layers.py."""

from pipeline.models.keras.layers import *  # noqa: F403
from pipeline.models.keras.layers import (  # noqa: F401
    CubicDense,
    CustomConv2D,
    CustomMaxPooling2D,
    FusedBatchNormalization,
)
