"""Output size of a convolution or pooling window along one axis, by TensorFlow's rules.

The one formula behind params' shape check (``params.check_shapes``), the scratch layers
(pipeline/models/numpy_cnn/layers.py) and the custom Keras layers
(pipeline/models/keras/layers.py). It imports nothing, so the Keras layers may use it where
MLflow serves a model with only tensorflow-cpu, keras and numpy installed.
"""

from __future__ import annotations

PADDINGS = ("valid", "same")


def conv_output(size: int | None, window: int, stride: int, padding: str) -> int | None:
    """Output length of a window ``window`` wide moved by ``stride`` over ``size`` inputs:
    ``floor((size - window) / stride) + 1`` for 'valid' (0 when the window does not fit),
    ``ceil(size / stride)`` for 'same'. An unknown size (None) stays None."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    return max(0, (size - window) // stride + 1)


def conv_padding(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """Zeros added (before, after) along the axis: none for 'valid'; for 'same', what makes
    ``conv_output`` windows fit, the odd one after (as TensorFlow pads)."""
    if padding != "same":
        conv_output(size, window, stride, padding)  # rejects an unknown padding
        return 0, 0
    out = conv_output(size, window, stride, padding)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2
