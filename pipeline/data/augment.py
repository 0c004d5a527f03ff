"""Random rotation and shift of image batches: one implementation for every family.

Vectorized bilinear resampling over the whole batch (no loop over images or pixels), zero
fill outside the image, seeded through the ``numpy.random.Generator`` the caller passes.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.params import AugmentParams


def random_affine(
    x: np.ndarray, rng: np.random.Generator, rotation: float, shift: float
) -> np.ndarray:
    """Rotate each image by U(-rotation, rotation) degrees about its centre and shift it by
    U(-shift, shift) of its side. ``x``: (N, H, W, C) float; returns a new array, same dtype."""
    n, h, w, _ = x.shape
    theta = np.deg2rad(rng.uniform(-rotation, rotation, n)).astype(np.float32)  # (N,)
    ty = (rng.uniform(-shift, shift, n) * h).astype(np.float32)  # (N,)
    tx = (rng.uniform(-shift, shift, n) * w).astype(np.float32)  # (N,)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # (H, W) each
    # Output pixel -> source pixel: undo the shift, then rotate by -theta about the centre.
    yo = yy[None] - cy - ty[:, None, None]  # (N, H, W)
    xo = xx[None] - cx - tx[:, None, None]  # (N, H, W)
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    ys = cos * yo - sin * xo + cy  # (N, H, W)
    xs = sin * yo + cos * xo + cx  # (N, H, W)
    return bilinear_sample(x, ys, xs)


def bilinear_sample(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``x`` (N, H, W, C) at float coordinates ``ys``, ``xs`` (N, H, W); zero outside."""
    n, h, w, c = x.shape
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    wy = (ys - y0).astype(x.dtype)[..., None]  # (N, H, W, 1)
    wx = (xs - x0).astype(x.dtype)[..., None]
    padded = np.zeros((n, h + 2, w + 2, c), dtype=x.dtype)  # one pixel of zeros all round
    padded[:, 1:-1, 1:-1] = x
    # Indices into the padded image, clipped so everything outside reads a zero border pixel.
    y0p = np.clip(y0 + 1, 0, h + 1)
    y1p = np.clip(y0 + 2, 0, h + 1)
    x0p = np.clip(x0 + 1, 0, w + 1)
    x1p = np.clip(x0 + 2, 0, w + 1)
    idx = np.arange(n)[:, None, None]
    top = padded[idx, y0p, x0p] * (1 - wx) + padded[idx, y0p, x1p] * wx  # (N, H, W, C)
    bottom = padded[idx, y1p, x0p] * (1 - wx) + padded[idx, y1p, x1p] * wx
    return (top * (1 - wy) + bottom * wy).astype(x.dtype, copy=False)


def augment(x: np.ndarray, rng: np.random.Generator, params: AugmentParams | None) -> np.ndarray:
    """Apply the params' augmentation, or return ``x`` unchanged when it is off."""
    if params is None or (params.rotation == 0 and params.shift == 0):
        return x
    return random_affine(x, rng, params.rotation, params.shift)
