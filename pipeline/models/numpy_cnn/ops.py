"""Array kernels shared by the scratch layers (``layers.py``) and the fused fast path
(``fused.py``): column sums, im2col copies, and the max of tiling pool windows with its
gradient. Plain functions on NumPy arrays; no layer state.
"""

from __future__ import annotations

import numpy as np

_ONES: dict[tuple, np.ndarray] = {}


def col_sum(a: np.ndarray) -> np.ndarray:
    """Column sums of a 2-D array as one matrix-vector product (several times faster than
    ``a.sum(axis=0)`` for tall, narrow arrays)."""
    key = (len(a), a.dtype.str)
    ones = _ONES.get(key)
    if ones is None:
        if len(_ONES) > 32:
            _ONES.clear()
        ones = _ONES[key] = np.ones(len(a), a.dtype)
    return ones @ a


def im2col(dst: np.ndarray, windows: np.ndarray) -> None:
    """Copy sliding windows (..., k, k, C) into contiguous rows. With few channels one copy
    per kernel tap is faster (the whole-window copy would move C values at a time)."""
    if windows.shape[-1] >= 4:
        np.copyto(dst, windows)
        return
    for i in range(windows.shape[-3]):
        for j in range(windows.shape[-2]):
            np.copyto(dst[..., i, j, :], windows[..., i, j, :])


def tile_max(z: np.ndarray, p: int, out: np.ndarray) -> np.ndarray:
    """Max over p x p tiles of ``z`` (N, H, W, C) into ``out`` (N, H // p, W // p, C), one
    elementwise maximum per tile position (rows and columns past the last tile dropped)."""
    hq, wq = out.shape[1], out.shape[2]
    np.copyto(out, z[:, 0 : hq * p : p, 0 : wq * p : p])
    for i in range(p):
        for j in range(p):
            if i or j:
                np.maximum(out, z[:, i : hq * p : p, j : wq * p : p], out=out)
    return out


def tile_route(z: np.ndarray, m: np.ndarray, g: np.ndarray, p: int, dz: np.ndarray) -> np.ndarray:
    """Gradient of ``m = tile_max(z)``: ``g`` (the gradient of m) goes to the first maximal
    input of each tile in row-major order, as TensorFlow does; ``dz`` is written whole."""
    hq, wq = m.shape[1], m.shape[2]
    if dz.shape[1] != hq * p or dz.shape[2] != wq * p:
        dz.fill(0)  # rows and columns past the last tile get no gradient
    rem = g.copy()  # (N, Hq, Wq, C) gradient not yet given to a maximal input
    eq = np.empty(m.shape, bool)
    last = (p - 1, p - 1)
    for i in range(p):
        for j in range(p):
            dt = dz[:, i : hq * p : p, j : wq * p : p]
            if (i, j) == last:  # whatever is left: the max is here
                np.copyto(dt, rem)
                break
            np.equal(z[:, i : hq * p : p, j : wq * p : p], m, out=eq)
            np.multiply(rem, eq, out=dt)
            rem -= dt
    return dz
