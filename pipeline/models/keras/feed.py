"""The training feed of the keras and custom families: ``EpochArrays`` builds each epoch's
images (shuffled and augmented with the shared pipeline.data.augment) as one NumPy array,
and tf.data slices it into batches, at the speed of a fit on in-memory arrays.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from pipeline.core.params import AugmentParams
from pipeline.data.augment import augment
from pipeline.data.prepared import Split


class EpochArrays:
    """The training images of each epoch as one contiguous array: shuffled and augmented.

    Batch ``i`` of epoch ``e`` holds the images ``permutation(seed, e)[i*B:(i+1)*B]``,
    augmented with a generator seeded by ``(seed, e, i)`` alone, so the data of every batch
    depends only on (seed, epoch, batch), whatever order or thread builds it.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        augment_params: AugmentParams | None = None,
    ):
        self.x, self.y = split.x, split.y
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.augment_params = augment_params

    def __len__(self) -> int:
        """Batches an epoch."""
        return math.ceil(len(self.y) / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.y))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.y))

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of epoch ``epoch`` (0-based), in batch order."""
        order = self.order(epoch)
        x = np.take(self.x, order, axis=0)  # (N, H, W, C), a fresh contiguous copy
        if self.augment_params is not None:
            b = self.batch_size
            for i in range(len(self)):
                rng = np.random.default_rng([self.seed, epoch, i])
                x[i * b : (i + 1) * b] = augment(x[i * b : (i + 1) * b], rng, self.augment_params)
        return x, self.y[order]

    def dataset(self, first_epoch: int = 0) -> tf.data.Dataset:
        """Every batch of epochs ``first_epoch, first_epoch + 1, ...`` in order, for
        ``model.fit(..., steps_per_epoch=len(self))``: one NumPy call builds a whole epoch,
        tf.data slices it into batches (no Python call per batch)."""
        shape = (None, *self.x.shape[1:])

        def build(e):
            x, y = tf.numpy_function(
                lambda e: self.epoch(int(e)), [e], [tf.float32, tf.as_dtype(self.y.dtype)]
            )
            x.set_shape(shape)
            y.set_shape((None,))
            return tf.data.Dataset.from_tensor_slices((x, y)).batch(self.batch_size)

        # Without tf.data's autotuning: nothing here is tuned (prefetch is fixed), and its
        # model thread made the iterator's teardown at the end of ``fit`` wait ~10 s now and
        # then (py-spy: ~IteratorResource -> UnboundedThreadPool ~LogicalThreadWrapper; seen
        # in sweep trials as exactly 10.0 s between the last epoch and fit's return).
        options = tf.data.Options()
        options.autotune.enabled = False
        epochs = tf.data.Dataset.range(first_epoch, first_epoch + 1_000_000)
        return epochs.flat_map(build).prefetch(2).with_options(options)
