"""Layers of the scratch CNN, in the style of numpy-ml and micrograd.

Every layer has ``params`` (trainable arrays), ``grads`` (same keys and shapes), ``state``
(non-trainable arrays saved with the model: BatchNorm's running statistics) and a ``cache``.
``forward(x, training)`` keeps in the cache what ``backward`` needs; ``backward(dy)`` *adds*
the parameter gradients into ``grads`` and returns the gradient with respect to the input.
Images are NHWC; convolution kernels are (kh, kw, cin, cout) like Keras', so weights can be
copied between the two backends as they are.

The fused conv-ReLU-pool fast path lives apart, in ``fused.py``; the array kernels both
use (im2col, column sums, tiled max) in ``ops.py``; output sizes and 'same' padding come
from pipeline/core/geometry.py, as for params and the Keras layers. Speed notes: convolutions
are one matrix product forward (im2col through ``as_strided``, channels innermost) and two
backward (one for the kernel gradient, one for the column gradients that are folded back
with one shifted slice-add per kernel tap); pooling with stride equal to its size is a
reshape and a max. Training-mode buffers are reused between steps of the same batch size,
so the arrays a layer returns are only valid until its next
``forward`` (the network consumes them before that).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from pipeline.core.geometry import conv_output, conv_padding
from pipeline.models.numpy_cnn.ops import col_sum, im2col, tile_max, tile_route


class Layer:
    """Base class: a layer without parameters that passes its input through."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.cache: dict[str, object] = {}
        self.need_dx = True  # False for the first layer: its input gradient is never used
        self._buffers: dict[tuple, np.ndarray] = {}

    def build(self, in_shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
        """Create the parameters for inputs of ``in_shape`` (no batch axis); return the
        output shape."""
        return in_shape

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def penalty(self) -> float:
        """Regularization term this layer adds to the loss (its gradient is in backward)."""
        return 0.0

    def zero_grads(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def _buffer(self, key: str, shape: tuple[int, ...], dtype, training: bool) -> np.ndarray:
        """A reusable uninitialized array in training, a fresh one otherwise."""
        if not training:
            return np.empty(shape, dtype)
        k = (key, shape, np.dtype(dtype).str)
        buf = self._buffers.get(k)
        if buf is None:
            if len(self._buffers) > 16:  # many batch sizes seen: start over
                self._buffers.clear()
            buf = self._buffers[k] = np.empty(shape, dtype)
        return buf

    def _init_param(self, key: str, value: np.ndarray) -> None:
        self.params[key] = value
        self.grads[key] = np.zeros_like(value)


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, dtype) -> np.ndarray:
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


class Conv2D(Layer):
    """2-D convolution, NHWC, kernel (k, k, cin, filters), stride s, 'valid' or 'same'."""

    def __init__(
        self,
        name: str,
        filters: int,
        kernel: int = 3,
        stride: int = 1,
        padding: str = "valid",
        use_bias: bool = True,
        l2: float = 0.0,
        dtype=np.float32,
    ) -> None:
        super().__init__(name)
        if padding not in ("valid", "same"):
            raise ValueError(f"{name}: padding must be 'valid' or 'same', got {padding!r}")
        self.filters, self.k, self.s, self.padding = filters, kernel, stride, padding
        self.use_bias, self.l2, self.dtype = use_bias, l2, np.dtype(dtype)

    def build(self, in_shape, rng):
        h, w, c = in_shape
        k, s = self.k, self.s
        self.ho, self.wo = conv_output(h, k, s, self.padding), conv_output(w, k, s, self.padding)
        self.pt, self.pb = conv_padding(h, k, s, self.padding)
        self.pl, self.pr = conv_padding(w, k, s, self.padding)
        if self.ho < 1 or self.wo < 1:
            raise ValueError(f"{self.name}: kernel {k} does not fit input {h}x{w}")
        self.cin = c
        self._init_param("W", he_normal(rng, (k, k, c, self.filters), k * k * c, self.dtype))
        if self.use_bias:
            self._init_param("b", np.zeros(self.filters, self.dtype))
        return self.ho, self.wo, self.filters

    def forward(self, x, training):
        y = self._conv(x, training)  # (N, Ho, Wo, F)
        if self.use_bias:
            y += self.params["b"]
        return y

    def backward(self, dy):
        if self.use_bias:
            self.grads["b"] += col_sum(dy.reshape(-1, self.filters))  # (F,)
        return self._conv_backward(dy)

    def _padded(self, x: np.ndarray, training: bool) -> np.ndarray:
        """``x`` with the 'same' zero border (N, Hp, Wp, C), contiguous."""
        if not (self.pt or self.pb or self.pl or self.pr):
            return np.ascontiguousarray(x)
        n, h, w, c = x.shape
        shape = (n, h + self.pt + self.pb, w + self.pl + self.pr, c)
        xp = self._buffer("xp", shape, x.dtype, training)
        xp.fill(0)
        xp[:, self.pt : self.pt + h, self.pl : self.pl + w] = x
        return xp

    def _conv(self, x: np.ndarray, training: bool) -> np.ndarray:
        """The convolution without bias: im2col and one matrix product."""
        n, c = len(x), x.shape[-1]
        k, s, ho, wo, f = self.k, self.s, self.ho, self.wo, self.filters
        xp = self._padded(x, training)
        sn, sh, sw, sc = xp.strides
        windows = as_strided(
            xp, (n, ho, wo, k, k, c), (sn, sh * s, sw * s, sh, sw, sc), writeable=False
        )  # (N, Ho, Wo, k, k, C)
        cols = self._buffer("cols", (n * ho * wo, k * k * c), x.dtype, training)
        im2col(cols.reshape(n, ho, wo, k, k, c), windows)  # (N*Ho*Wo, k*k*C)
        y = self._buffer("y", (n * ho * wo, f), x.dtype, training)
        np.matmul(cols, self.params["W"].reshape(k * k * c, f), out=y)  # (N*Ho*Wo, F)
        self.cache = {"cols": cols, "x_shape": x.shape}
        return y.reshape(n, ho, wo, f)  # (N, Ho, Wo, F)

    def _conv_backward(self, dz: np.ndarray) -> np.ndarray | None:
        """Kernel gradient (plus L2) and input gradient of the convolution without bias."""
        self._kernel_grad(self.cache["cols"], dz.reshape(-1, self.filters))
        return self._input_grad(dz) if self.need_dx else None

    def _kernel_grad(self, cols: np.ndarray, dz2: np.ndarray) -> None:
        """dW from the im2col rows (M, k*k*C) and output gradients (M, F) in the same order."""
        W = self.params["W"]
        self.grads["W"] += (cols.T @ dz2).reshape(W.shape)  # (k, k, C, F)
        if self.l2:
            self.grads["W"] += (2 * self.l2) * W

    def _input_grad(self, dz: np.ndarray) -> np.ndarray:
        """dx from the output gradient ``dz`` (N, ho, wo, F), which may cover only the first
        ho x wo output positions: one product and one shifted slice-add per kernel tap."""
        n, h, w, c = self.cache["x_shape"]
        _, ho, wo, f = dz.shape
        k, s = self.k, self.s
        dz2 = dz.reshape(n * ho * wo, f)  # (N*ho*wo, F)
        W = self.params["W"]
        hp, wp = h + self.pt + self.pb, w + self.pl + self.pr
        dxp = self._buffer("dxp", (n, hp, wp, c), dz.dtype, True)  # (N, Hp, Wp, C)
        dxp.fill(0)
        tap = self._buffer("tap", (n * ho * wo, c), dz.dtype, True)
        for i in range(k):
            for j in range(k):
                np.matmul(dz2, W[i, j].T, out=tap)  # (N*ho*wo, C)
                dxp[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s] += tap.reshape(
                    n, ho, wo, c
                )
        return dxp[:, self.pt : self.pt + h, self.pl : self.pl + w]  # (N, H, W, C)

    def penalty(self):
        return self.l2 * float(np.sum(np.square(self.params["W"], dtype=np.float64)))


class Dense(Layer):
    """Fully connected: ``y = x @ W + b`` with W (in, units)."""

    def __init__(self, name: str, units: int, use_bias: bool = True, dtype=np.float32) -> None:
        super().__init__(name)
        self.units, self.use_bias, self.dtype = units, use_bias, np.dtype(dtype)

    def build(self, in_shape, rng):
        if len(in_shape) != 1:
            raise ValueError(f"{self.name}: needs flat inputs, got shape {in_shape}; add a flatten")
        (d,) = in_shape
        self._init_param("W", he_normal(rng, (d, self.units), d, self.dtype))
        if self.use_bias:
            self._init_param("b", np.zeros(self.units, self.dtype))
        return (self.units,)

    def forward(self, x, training):
        self.cache = {"x": x}  # (N, D)
        y = x @ self.params["W"]  # (N, U)
        if self.use_bias:
            y += self.params["b"]
        return y

    def backward(self, dy):
        x = self.cache["x"]  # (N, D)
        self.grads["W"] += x.T @ dy  # (D, U)
        if self.use_bias:
            self.grads["b"] += col_sum(dy)  # (U,)
        return dy @ self.params["W"].T if self.need_dx else None  # (N, D)


class BatchNorm(Layer):
    """Batch normalization over the last axis (conv channels or dense features).

    Training normalizes with the batch's mean and (biased) variance and updates the running
    statistics ``running = momentum * running + (1 - momentum) * batch``; inference uses the
    running statistics. Defaults are Keras': momentum 0.99, epsilon 1e-3.
    """

    def __init__(
        self, name: str, momentum: float = 0.99, eps: float = 1e-3, dtype=np.float32
    ) -> None:
        super().__init__(name)
        self.momentum, self.eps, self.dtype = momentum, eps, np.dtype(dtype)

    def build(self, in_shape, rng):
        c = in_shape[-1]
        self._init_param("gamma", np.ones(c, self.dtype))
        self._init_param("beta", np.zeros(c, self.dtype))
        self.state = {"mean": np.zeros(c, self.dtype), "var": np.ones(c, self.dtype)}
        return in_shape

    def forward(self, x, training):
        c = x.shape[-1]
        x2 = x.reshape(-1, c)  # (M, C), M = N or N*H*W
        m = len(x2)
        if training:
            mean = col_sum(x2) / m  # (C,)
            xhat = self._buffer("xhat", x2.shape, x.dtype, True)
            np.subtract(x2, mean, out=xhat)  # (M, C) centred
            var = np.einsum("ij,ij->j", xhat, xhat) / m  # (C,) biased, as Keras
            mom = self.momentum
            self.state["mean"] *= mom
            self.state["mean"] += (1 - mom) * mean
            self.state["var"] *= mom
            self.state["var"] += (1 - mom) * var
        else:
            mean, var = self.state["mean"], self.state["var"]
            xhat = x2 - mean  # (M, C)
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)  # (C,)
        xhat *= inv_std  # (M, C) normalized
        self.cache = {"xhat": xhat, "inv_std": inv_std, "training": training}
        y = self._buffer("y", x2.shape, x.dtype, training)
        np.multiply(xhat, self.params["gamma"], out=y)
        y += self.params["beta"]
        return y.reshape(x.shape)

    def backward(self, dy):
        xhat, inv_std = self.cache["xhat"], self.cache["inv_std"]  # (M, C), (C,)
        dy2 = dy.reshape(xhat.shape)  # (M, C)
        dgamma = np.einsum("ij,ij->j", dy2, xhat)  # (C,)
        dbeta = col_sum(dy2)  # (C,)
        self.grads["gamma"] += dgamma
        self.grads["beta"] += dbeta
        if not self.need_dx:
            return None
        scale = self.params["gamma"] * inv_std  # (C,)
        if not self.cache["training"]:  # the statistics are constants
            return dy * scale
        m = len(dy2)
        # d/dx of gamma * (x - mean(x)) / std(x) + beta, through the batch statistics:
        # scale * (dy - (dbeta + xhat * dgamma) / m).
        dx = self._buffer("dx", dy2.shape, dy.dtype, True)
        np.multiply(xhat, -scale * dgamma / m, out=dx)
        dx += dy2 * scale
        dx -= scale * dbeta / m
        return dx.reshape(dy.shape)


class ReLU(Layer):
    def forward(self, x, training):
        y = np.maximum(x, 0)
        self.cache = {"y": y}
        return y

    def backward(self, dy):
        return dy * (self.cache["y"] > 0)


class MaxPool2D(Layer):
    """Max pooling, ``size`` x ``size`` windows, any stride, 'valid' or 'same' padding.

    Windows that tile the input (stride == size, valid) take one elementwise maximum per
    tile position; other geometries take the max over ``as_strided`` windows and route the
    gradient back with one slice-add per window position. On ties the gradient goes to the
    first maximal input, as in TensorFlow.
    """

    def __init__(self, name: str, size: int = 2, stride: int | None = None, padding="valid"):
        super().__init__(name)
        self.p, self.s, self.padding = size, stride or size, padding

    def build(self, in_shape, rng):
        h, w, c = in_shape
        p, s = self.p, self.s
        self.ho, self.wo = conv_output(h, p, s, self.padding), conv_output(w, p, s, self.padding)
        self.pt, self.pb = conv_padding(h, p, s, self.padding)
        self.pl, self.pr = conv_padding(w, p, s, self.padding)
        if self.ho < 1 or self.wo < 1:
            raise ValueError(f"{self.name}: pool size {p} does not fit input {h}x{w}")
        self.tiled = s == p and self.padding == "valid"
        return self.ho, self.wo, c

    def forward(self, x, training):
        n, h, w, c = x.shape
        p, s, ho, wo = self.p, self.s, self.ho, self.wo
        if self.tiled:
            y = tile_max(x, p, np.empty((n, ho, wo, c), x.dtype))  # (N, Ho, Wo, C)
            self.cache = {"x": x, "y": y}
            return y
        hp, wp = h + self.pt + self.pb, w + self.pl + self.pr
        xp = np.full((n, hp, wp, c), -np.inf, x.dtype)
        xp[:, self.pt : self.pt + h, self.pl : self.pl + w] = x
        sn, sh, sw, sc = xp.strides
        win = as_strided(
            xp, (n, ho, wo, c, p, p), (sn, sh * s, sw * s, sc, sh, sw), writeable=False
        ).reshape(n, ho, wo, c, p * p)  # (N, Ho, Wo, C, p*p)
        arg = win.argmax(axis=-1)  # (N, Ho, Wo, C), the first maximum
        y = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]  # (N, Ho, Wo, C)
        self.cache = {"arg": arg, "x_shape": x.shape}
        return y

    def backward(self, dy):
        p, s, ho, wo = self.p, self.s, self.ho, self.wo
        if self.tiled:
            x, y = self.cache["x"], self.cache["y"]
            return tile_route(x, y, dy, p, np.empty(x.shape, dy.dtype))  # (N, H, W, C)
        n, h, w, c = self.cache["x_shape"]
        arg = self.cache["arg"]  # (N, Ho, Wo, C)
        hp, wp = h + self.pt + self.pb, w + self.pl + self.pr
        dxp = np.zeros((n, hp, wp, c), dy.dtype)
        for i in range(p):
            for j in range(p):
                dxp[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s] += dy * (
                    arg == i * p + j
                )
        return dxp[:, self.pt : self.pt + h, self.pl : self.pl + w]


class Flatten(Layer):
    def build(self, in_shape, rng):
        return (math.prod(in_shape),)

    def forward(self, x, training):
        self.cache = {"x_shape": x.shape}
        return x.reshape(len(x), -1)  # (N, H*W*C), NHWC order like Keras' Flatten

    def backward(self, dy):
        return dy.reshape(self.cache["x_shape"])


class Dropout(Layer):
    """Inverted dropout: zero a ``rate`` share of the inputs and scale the rest by
    1 / (1 - rate) when training; the identity at inference."""

    def __init__(self, name: str, rate: float, rng: np.random.Generator) -> None:
        super().__init__(name)
        if not 0 <= rate < 1:
            raise ValueError(f"{name}: rate must be in [0, 1), got {rate}")
        self.rate, self.rng = rate, rng

    def forward(self, x, training):
        if not training or self.rate == 0:
            self.cache = {"mask": None}
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.rate  # (N, ...)
        mask = keep.astype(x.dtype) * x.dtype.type(1 / (1 - self.rate))
        self.cache = {"mask": mask}
        return x * mask

    def backward(self, dy):
        mask = self.cache["mask"]
        return dy if mask is None else dy * mask


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)  # (N, K)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(
    logits: np.ndarray, y: np.ndarray, smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient with
    respect to the logits, ``(softmax - q) / N``. The target ``q`` is the one-hot label, or
    with ``smoothing`` e: ``(1 - e) * onehot + e / K``, so the loss per image is
    ``log sum exp(z) - (1 - e) z_y - (e / K) sum_k z_k``."""
    n = len(y)
    z = logits - logits.max(axis=1, keepdims=True)  # (N, K)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)  # (N, 1)
    rows = np.arange(n)
    dlogits = e / s  # (N, K) softmax
    if smoothing:
        k = logits.shape[1]
        target = (1 - smoothing) * z[rows, y] + (smoothing / k) * z.sum(axis=1)
        loss = float(np.mean(np.log(s[:, 0]) - target))
        dlogits -= smoothing / k
        dlogits[rows, y] -= 1 - smoothing
    else:  # the same operations as before label smoothing existed (identical results)
        loss = float(np.mean(np.log(s[:, 0]) - z[rows, y]))
        dlogits[rows, y] -= 1
    dlogits /= n
    return loss, dlogits
