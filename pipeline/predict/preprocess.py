"""Ordinary pictures of digits -> MNIST-like arrays, made the way MNIST itself was made.

LeCun et al. normalized each NIST digit to fit a 20x20 box keeping its aspect ratio
(anti-aliased, hence grey levels), then centred it in a 28x28 field by its centre of mass.
``to_mnist`` does the same to any picture:

1. grey levels in [0, 1] from any mode (RGB, grey, palette, 16-bit, float); an alpha
   channel is composited over the colour that contrasts with the opaque ink;
2. polarity: the paper is the median of the image border; when it is lighter than the
   middle of the image's range, the picture is dark ink on light paper and is inverted, so
   that ink is bright on black as in MNIST;
3. the paper level is subtracted and the ink scaled to 1; faint noise (below a share of the
   range) is cut to zero, and specks much smaller than the digit are dropped;
4. crop to the ink's bounding box, thicken strokes that would come out thinner than MNIST's
   pen, scale the longer side to 20 pixels (anti-aliased), and paste into 28x28 so that the
   centre of mass falls on pixel (14, 14) (integer shift, zero fill), as MNIST's does;
5. float32 in [0, 1], shape (28, 28, 1): the training normalization (x / 255).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

SIZE = 28  # MNIST side
BOX = 20  # the digit's longer side after scaling
CENTRE = 14.0  # where MNIST's centre of mass lies (row and column, in pixel indices)
MAX_PIXELS = 40_000_000  # larger pictures are refused (decompression bombs, memory)
MAX_SIDE = 1600  # larger pictures are block-averaged down to this before the digit is sought
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

BORDER_SHARE = 0.04  # width of the border band that estimates the paper, share of the side
NOISE_FLOOR = 0.08  # levels below this share of the ink range are paper
INK_THRESHOLD = 0.35  # share of the ink range that counts as ink for the bounding box
SPECK_SHARE = 0.02  # ink components smaller than this share of the largest are noise
MIN_CONTRAST = 0.08  # a picture whose range is smaller than this holds no digit
PEN_WIDTH = 1.8  # thinnest stroke, in output pixels, before thickening kicks in
MIN_DIGIT_SIDE = 5  # ink whose box is smaller on both sides is a speck, not a digit
MIN_DIGIT_SHARE = 0.03  # ... as is ink whose box is under this share of the picture's side


class ImageError(ValueError):
    """A file or picture that cannot be turned into a digit; the message says why."""


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and decode one picture (first frame, EXIF orientation applied).

    Raises ``ImageError`` with a readable message for a missing or unreadable path, an
    empty file, a file that is not an image, and a picture over ``max_pixels``.
    """
    path = Path(path)
    if path.is_dir():
        raise ImageError("is a directory")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageError("empty file")
    return _decode(path, max_pixels)


def load_image_bytes(raw: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``load_image`` for the bytes of a picture file (PNG, JPEG, ...), as a server gets
    them; the same checks, the same messages. The size is read from the header and checked
    before any pixel is decoded."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ImageError(f"expected the bytes of a picture file, got {type(raw).__name__}")
    if len(raw) == 0:
        raise ImageError("empty file")
    return _decode(io.BytesIO(raw), max_pixels)


def _decode(source: Path | io.BytesIO, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open, check the size in the header, decode the first frame, apply EXIF orientation."""
    try:
        with warnings.catch_warnings():
            # Our own limit below is stricter than PIL's warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageError(_too_large(w, h, max_pixels))
                img.seek(0)
                img.load()
                out = ImageOps.exif_transpose(img)
                if out is img:
                    out = img.copy()
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large (decompression bomb refused: {exc})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image file (format not recognized)") from None
    except PermissionError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"corrupt or truncated image ({exc})") from None
    if out.width == 0 or out.height == 0:
        raise ImageError("image has no pixels")
    return out


def _too_large(w: int, h: int, limit: int) -> str:
    return (
        f"image too large: {w}x{h} = {w * h / 1e6:.1f} megapixels "
        f"(limit {limit / 1e6:g} megapixels)"
    )


# --------------------------------------------------------------------------- grey levels


def _array_to_grey(a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W[, C]) array of any dtype -> grey (H, W) and alpha (H, W) or None, in [0, 1]."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise ImageError(f"expected an (H, W), (H, W, 1|2|3|4) image array, got {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    else:
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ImageError("image array holds NaN or infinite values")
        top = float(a.max()) if a.size else 0.0
        if top > 1.0:  # floats on the 0..255 (or larger) scale
            a = a / (255.0 if top <= 255.0 else top)
    a = np.clip(a, 0.0, 1.0)
    if a.ndim == 2:
        return a, None
    c = a.shape[2]
    alpha = a[:, :, -1] if c in (2, 4) else None
    colour = a[:, :, :3] if c >= 3 else a[:, :, :1]
    if colour.shape[2] == 3:  # ITU-R 601 luma, as PIL's "L" conversion
        grey = colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    else:
        grey = colour[:, :, 0]
    return grey.astype(np.float32), alpha


def _image_to_grey(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """PIL image of any mode -> grey (H, W) and alpha (H, W) or None, in [0, 1]."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img, dtype=np.float32)
        if img.mode.startswith("I;16"):
            a = a / 65535.0
        else:  # 32-bit int or float: scale by the range actually used
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return a, None
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        a = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return _array_to_grey(a)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0, None


def _composite(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten ``grey`` over the colour that contrasts with its opaque part.

    A picture with transparency is usually ink on nothing: the opaque pixels are the
    digit, so the background must be the other end of the scale (white under dark ink,
    black under light ink).
    """
    weight = float(alpha.sum())
    if weight <= 0:
        raise ImageError("image is fully transparent")
    ink = float((grey * alpha).sum() / weight)
    background = 1.0 if ink < 0.5 else 0.0
    return grey * alpha + background * (1.0 - alpha)


def grey_levels(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W) float32 grey levels in [0, 1], alpha flattened."""
    if isinstance(image, Image.Image):
        grey, alpha = _image_to_grey(image)
    else:
        grey, alpha = _array_to_grey(image)
    if grey.size == 0:
        raise ImageError("image has no pixels")
    if alpha is not None:
        grey = _composite(grey, alpha)
    return shrink(grey.astype(np.float32, copy=False))


def shrink(a: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Block-average ``a`` by a whole factor so its longer side is at most ``max_side``:
    a photo's digit keeps far more than 20 pixels, and the steps after it run fast."""
    f = -(-max(a.shape) // max_side)  # ceil
    if f <= 1:
        return a
    h, w = a.shape[0] // f, a.shape[1] // f
    if h == 0 or w == 0:  # a thin strip: keep it whole
        return a
    return a[: h * f, : w * f].reshape(h, f, w, f).mean(axis=(1, 3), dtype=np.float32)


# --------------------------------------------------------------------------- ink


def border(a: np.ndarray) -> np.ndarray:
    """The pixels of the outer band of ``a`` (at least one pixel wide)."""
    h, w = a.shape
    bh = max(1, round(h * BORDER_SHARE))
    bw = max(1, round(w * BORDER_SHARE))
    return np.concatenate([a[:bh].ravel(), a[-bh:].ravel(), a[:, :bw].ravel(), a[:, -bw:].ravel()])


def is_dark_on_light(grey: np.ndarray) -> bool:
    """True when the paper (border median) is lighter than the middle of the range, i.e.
    dark ink on light paper, the reverse of MNIST."""
    paper = float(np.median(border(grey)))
    lo, hi = float(grey.min()), float(grey.max())
    return paper > (lo + hi) / 2.0


def ink_map(grey: np.ndarray) -> np.ndarray:
    """Bright-on-dark ink in [0, 1]: inverted if needed, paper at 0, ink scaled to 1 and
    faint noise cut. Raises ``ImageError`` for a blank picture."""
    g = 1.0 - grey if is_dark_on_light(grey) else grey
    paper = float(np.median(border(g)))
    top = float(g.max())
    if top - paper < MIN_CONTRAST:
        raise ImageError("no digit found (blank or nearly uniform image)")
    v = (g - paper) / (top - paper)
    v = np.clip((v - NOISE_FLOOR) / (1.0 - NOISE_FLOOR), 0.0, 1.0)
    return v.astype(np.float32)


def drop_specks(v: np.ndarray) -> np.ndarray:
    """Zero the ink components much smaller than the largest one (dust, JPEG noise)."""
    mask = v >= INK_THRESHOLD
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n <= 1:
        return v
    areas = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    small = np.flatnonzero(areas < SPECK_SHARE * areas.max()) + 1
    if small.size == 0:
        return v
    # Grow the kept components by a pixel so their anti-aliased edges stay.
    keep = ndimage.binary_dilation(np.isin(labels, small, invert=True) & mask, iterations=2)
    return np.where(keep, v, 0.0).astype(np.float32)


def ink_box(v: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), half-open, of the pixels at or above the ink threshold."""
    rows = np.flatnonzero((v >= INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((v >= INK_THRESHOLD).any(axis=0))
    if rows.size == 0:
        raise ImageError("no digit found (no ink above the threshold)")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary drawing: twice its area over its perimeter."""
    area = float(mask.sum())
    edge = mask & ~ndimage.binary_erosion(mask)
    return 2.0 * area / max(float(edge.sum()), 1.0)


def thicken(crop: np.ndarray) -> np.ndarray:
    """Dilate strokes that would come out thinner than ``PEN_WIDTH`` pixels once the crop
    is scaled into the box; returns the (padded and re-cropped) thicker crop."""
    scale = BOX / max(crop.shape)
    width = stroke_width(crop >= INK_THRESHOLD) * scale
    if width >= PEN_WIDTH:
        return crop
    grow = min(round((PEN_WIDTH - width) / scale), max(crop.shape))  # source pixels
    if grow < 2:
        return crop
    padded = np.pad(crop, grow)
    thick = ndimage.maximum_filter(padded, size=grow)  # separable square pen: fast
    top, bottom, left, right = ink_box(thick)
    return thick[top:bottom, left:right]


def fit_box(crop: np.ndarray, box: int = BOX) -> np.ndarray:
    """Scale so that the longer side is ``box`` pixels, keeping the aspect ratio."""
    h, w = crop.shape
    s = box / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img = Image.fromarray(crop.astype(np.float32), mode="F")
    # Area averaging when shrinking (the anti-aliasing of MNIST), smooth when enlarging.
    resample = Image.Resampling.BOX if s < 1 else Image.Resampling.BICUBIC
    out = np.asarray(img.resize((nw, nh), resample=resample), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def centre_by_mass(digit: np.ndarray, size: int = SIZE, centre: float = CENTRE) -> np.ndarray:
    """Paste ``digit`` into a ``size``x``size`` field, moved by whole pixels so its centre of
    mass lands nearest ``(centre, centre)``; kept inside the field."""
    h, w = digit.shape
    cy, cx = ndimage.center_of_mass(digit)
    top = int(np.clip(round(centre - cy), 0, size - h))
    left = int(np.clip(round(centre - cx), 0, size - w))
    out = np.zeros((size, size), dtype=np.float32)
    out[top : top + h, left : left + w] = digit
    return out


def to_mnist(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any picture of one digit -> (28, 28, 1) float32 in [0, 1], bright ink on black,
    scaled into 20x20 and centred by mass as MNIST's digits are.

    ``image``: a PIL image of any mode, or an array (H, W), (H, W, C) with C in 1..4;
    integers are scaled by their dtype's maximum, floats taken as [0, 1] (or 0..255).
    Raises ``ImageError`` when there is no digit to find.
    """
    v = drop_specks(ink_map(grey_levels(image)))
    top, bottom, left, right = ink_box(v)
    h, w = bottom - top, right - left
    if max(h, w) < max(MIN_DIGIT_SIDE, MIN_DIGIT_SHARE * min(v.shape)):
        raise ImageError(
            f"no digit found (only a {h}x{w} speck of ink in a {v.shape[0]}x{v.shape[1]} picture)"
        )
    crop = v[top:bottom, left:right]
    crop = thicken(crop)
    digit = fit_box(crop)
    peak = float(digit.max())
    if peak <= 0:
        raise ImageError("no digit found (ink vanished when scaled)")
    digit = digit / peak  # MNIST's strokes reach full intensity
    return centre_by_mass(digit)[:, :, None]
