"""The scratch family's fast path, kept apart from the plain layers of ``layers.py``.

``ConvReLUPool`` fuses a biased convolution, its ReLU and a max pool whose windows tile the
output into one layer: one im2col matrix product, the ReLU and the pool on the product's
buffer, and a backward pass that routes the pooled gradient straight into the convolution's
columns. It computes exactly what Conv2D -> ReLU -> MaxPool2D compute (checked against them
and against central differences in tests/unit/models/test_scratch_layers.py); ``network.py`` uses it
wherever the spec allows (``_fusable``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from pipeline.models.numpy_cnn.layers import Conv2D
from pipeline.models.numpy_cnn.ops import col_sum, im2col


class ConvReLUPool(Conv2D):
    """Conv2D + ReLU + tiled MaxPool2D in one layer, computed in the cheaper order
    ``relu(max_pool(conv(x)) + b)``: the max commutes with the per-channel bias and with the
    ReLU, so this equals the three layers exactly while bias and ReLU touch a p*p times
    smaller array. The network builder uses it for a conv (with bias, ReLU, no batch norm)
    followed by a pool whose windows tile. Its parameters are named as the conv's.

    The im2col rows are ordered pool-major, (tile row, tile column, N, Hq, Wq), so the
    product gives the p*p members of every pool window as p*p contiguous blocks: the max and
    its gradient are contiguous elementwise operations, and conv outputs that no window
    covers (the odd last row and column) are never computed.
    """

    def __init__(self, name: str, filters: int, kernel: int, stride: int, padding: str,
                 pool: int, l2: float = 0.0, dtype=np.float32) -> None:  # fmt: skip
        super().__init__(name, filters, kernel, stride, padding, True, l2, dtype)
        self.pool = pool

    def build(self, in_shape, rng):
        ho, wo, f = super().build(in_shape, rng)
        if ho < self.pool or wo < self.pool:
            raise ValueError(f"{self.name}: pool size {self.pool} does not fit {ho}x{wo}")
        self.hq, self.wq = ho // self.pool, wo // self.pool
        return self.hq, self.wq, f

    def forward(self, x, training):
        n, c = len(x), x.shape[-1]
        k, s, p, f, hq, wq = self.k, self.s, self.pool, self.filters, self.hq, self.wq
        xp = self._padded(x, training)
        sn, sh, sw, sc = xp.strides
        windows = as_strided(
            xp,
            (p, p, n, hq, wq, k, k, c),
            (s * sh, s * sw, sn, s * p * sh, s * p * sw, sh, sw, sc),
            writeable=False,
        )  # (p, p, N, Hq, Wq, k, k, C): conv output (a + p*u, b + p*v) at [a, b, :, u, v]
        rows = n * hq * wq
        cols = self._buffer("cols", (p * p * rows, k * k * c), x.dtype, training)
        im2col(cols.reshape(windows.shape), windows)  # (p*p*N*Hq*Wq, k*k*C)
        z = self._buffer("z", (p * p * rows, f), x.dtype, training)
        np.matmul(cols, self.params["W"].reshape(k * k * c, f), out=z)
        zb = z.reshape(p * p, rows, f)  # (p*p, N*Hq*Wq, F) one block per window member
        m = self._buffer("m", (rows, f), x.dtype, training)
        np.maximum(zb[0], zb[1], out=m) if p > 1 else np.copyto(m, zb[0])
        for t in range(2, p * p):
            np.maximum(m, zb[t], out=m)  # (N*Hq*Wq, F) max before bias
        a = self._buffer("a", (rows, f), x.dtype, training)
        np.add(m, self.params["b"], out=a)
        np.maximum(a, 0, out=a)  # (N*Hq*Wq, F)
        self.cache = {"cols": cols, "zb": zb, "m": m, "a": a, "x_shape": x.shape}
        return a.reshape(n, hq, wq, f)  # (N, Hq, Wq, F)

    def backward(self, da):
        zb, m, a, cols = self.cache["zb"], self.cache["m"], self.cache["a"], self.cache["cols"]
        p, f, hq, wq = self.pool, self.filters, self.hq, self.wq
        rows = len(m)
        g = self._buffer("g", m.shape, da.dtype, True)
        np.multiply(da.reshape(m.shape), a > 0, out=g)  # (N*Hq*Wq, F) through the ReLU
        self.grads["b"] += col_sum(g)  # (F,)
        # The gradient goes to the first maximal member of each window (as TensorFlow).
        dzb = self._buffer("dz", zb.shape, da.dtype, True)  # (p*p, N*Hq*Wq, F)
        rem = self._buffer("rem", m.shape, da.dtype, True)
        eq = self._buffer("eq", m.shape, bool, True)
        np.copyto(rem, g)
        for t in range(p * p - 1):
            np.equal(zb[t], m, out=eq)
            np.multiply(rem, eq, out=dzb[t])
            rem -= dzb[t]
        np.copyto(dzb[-1], rem)  # whatever is left: the max is the last member
        self._kernel_grad(cols, dzb.reshape(p * p * rows, f))
        if not self.need_dx:
            return None
        n = self.cache["x_shape"][0]
        dz = self._buffer("dz_spatial", (n, hq * p, wq * p, f), da.dtype, True)
        blocks = dzb.reshape(p, p, n, hq, wq, f)
        for i in range(p):
            for j in range(p):
                dz[:, i::p, j::p] = blocks[i, j]  # back to (N, Hq*p, Wq*p, F)
        return self._input_grad(dz)
