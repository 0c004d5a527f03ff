"""Learning-rate schedules of ``train.lr_schedule``: one formula for every family.

The rate is a function of the optimizer step alone (``step`` 0 is the first update), so it
does not depend on timing or on how often it is read. The scratch family calls
``learning_rate`` before each step; the Keras families wrap the same formula in a
``keras.optimizers.schedules.LearningRateSchedule`` (pipeline/models/keras/schedule.py) that
evaluates it inside the compiled train step. ``xp`` is the array module: ``numpy`` here,
``keras.ops`` there.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # anything with these fields will do (the Keras schedule keeps plain ones)
    from pipeline.core.params import LRScheduleParams

ONE_CYCLE_DIV = 25.0  # one_cycle starts at peak / 25 (the usual one-cycle default)


def learning_rate(
    sched: LRScheduleParams,  # or any object with kind, warmup_epochs, final_lr, decay_rate
    peak: float,
    step: Any,
    steps_per_epoch: int,
    epochs: int,
    xp: ModuleType = np,
) -> Any:
    """The learning rate of optimizer step ``step`` (a number or a scalar tensor of ``xp``)."""
    step = xp.cast(step, "float32") if xp is not np else np.float64(step)
    total = float(max(1, steps_per_epoch * epochs))
    if sched.kind == "exponential":
        return peak * xp.power(sched.decay_rate, step / steps_per_epoch)
    warm = float(min(total, round(sched.warmup_epochs * steps_per_epoch)))
    # Decay phase: progress 0 -> 1 over the steps after warm-up, cosine from peak to final.
    progress = xp.clip((step - warm) / max(1.0, total - warm), 0.0, 1.0)
    decay = sched.final_lr + (peak - sched.final_lr) * 0.5 * (1.0 + xp.cos(math.pi * progress))
    if warm == 0:
        return decay
    ramp = xp.clip((step + 1.0) / warm, 0.0, 1.0)  # (0, 1]: the first step is not wasted
    if sched.kind == "warmup_cosine":
        rise = peak * ramp
    else:  # one_cycle: cosine from peak / 25 up to the peak
        low = peak / ONE_CYCLE_DIV
        rise = low + (peak - low) * 0.5 * (1.0 - xp.cos(math.pi * ramp))
    return xp.where(step < warm, rise, decay)
