"""Optimizers over a network's flat parameter and gradient vectors (updated in place).

Update rules are Keras': SGD ``p -= lr * g``; momentum ``v = m * v - lr * g; p += v``;
Adam with bias correction folded into the step size and epsilon 1e-7. Optional L2 weight
decay adds ``weight_decay * p`` to the gradient of the kernels (``decay_mask``), not to
biases or batch-norm parameters.
"""

from __future__ import annotations

import math

import numpy as np


class Optimizer:
    def __init__(self, learning_rate: float, weight_decay: float = 0.0) -> None:
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.iterations = 0

    def step(
        self, params: np.ndarray, grads: np.ndarray, decay_mask: np.ndarray, pool=None
    ) -> None:
        """Update ``params`` (flat) from ``grads`` (flat; weight decay is added into it).
        With ``pool`` (an executor), the second half of the vector is updated on it."""
        self._ensure_state(params)
        self.iterations += 1
        if pool is None:
            self.apply(params, grads, decay_mask, slice(None))
            return
        h = len(params) // 2
        job = pool.submit(self.apply, params, grads, decay_mask, slice(h, None))
        self.apply(params, grads, decay_mask, slice(0, h))
        job.result()

    def apply(self, params, grads, decay_mask, part: slice) -> None:
        """The update of one part of the vectors (after ``iterations`` was advanced)."""
        p, g = params[part], grads[part]
        if self.weight_decay:
            g += (self.weight_decay * decay_mask[part]) * p
        self._update(p, g, part)

    def _ensure_state(self, params: np.ndarray) -> None:
        pass

    def _update(self, params: np.ndarray, grads: np.ndarray, part: slice) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    def _update(self, params, grads, part):
        params -= self.learning_rate * grads


class Momentum(Optimizer):
    def __init__(self, learning_rate: float, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(learning_rate, weight_decay)
        self.momentum = momentum
        self.velocity: np.ndarray | None = None

    def _ensure_state(self, params):
        if self.velocity is None:
            self.velocity = np.zeros_like(params)

    def _update(self, params, grads, part):
        v = self.velocity[part]
        v *= self.momentum
        v -= self.learning_rate * grads
        params += v


class Adam(Optimizer):
    def __init__(
        self,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-7,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(learning_rate, weight_decay)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def _ensure_state(self, params):
        if self.m is None:
            self.m, self.v, self._tmp = (np.zeros_like(params) for _ in range(3))

    def _update(self, params, grads, part):
        m, v, tmp = self.m[part], self.v[part], self._tmp[part]
        t = self.iterations
        lr_t = self.learning_rate * math.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        m *= self.beta1
        np.multiply(grads, 1 - self.beta1, out=tmp)
        m += tmp  # first moment
        np.square(grads, out=tmp)
        tmp *= 1 - self.beta2
        v *= self.beta2
        v += tmp  # second moment
        np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr_t
        params -= tmp


def make_optimizer(
    name: str, learning_rate: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> Optimizer:
    if name == "sgd":
        return SGD(learning_rate, weight_decay)
    if name == "momentum":
        return Momentum(learning_rate, momentum, weight_decay)
    if name == "adam":
        return Adam(learning_rate, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (sgd, momentum, adam)")
