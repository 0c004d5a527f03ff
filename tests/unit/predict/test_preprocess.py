"""pipeline.predict.preprocess: ordinary pictures -> MNIST-like (28, 28, 1) arrays.

Digits are drawn with PIL (Pillow's bundled font, and pen strokes) and, when the prepared
MNIST test split exists, taken from MNIST itself, then rendered as ordinary pictures:
inverted, enlarged, off-centre, RGB/RGBA/palette, JPEG. ``to_mnist`` must give back the
same 28x28 digit: 20-pixel box, centre of mass at (14, 14), bright ink on black.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from pipeline.core import config
from pipeline.predict import preprocess as pp
from pipeline.predict.foreign import render_picture
from tests.helpers import glyph_mask, paint, png_header

MNIST_TEST = config.prepared_dir("digits10") / "test.npz"


# --------------------------------------------------------------------------- helpers


def reencode(img: Image.Image, fmt: str, **kw) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def shift_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Best correlation over whole-pixel shifts of at most one pixel (MNIST's own centring
    rounds the centre of mass to a pixel)."""
    a, b = np.squeeze(a), np.squeeze(b)
    return max(corr(np.roll(a, (dy, dx), axis=(0, 1)), b) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def ink_bbox(a: np.ndarray, level: float = 0.0) -> tuple[int, int]:
    rows, cols = np.nonzero(np.squeeze(a) > level)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def assert_mnist_like(m: np.ndarray) -> None:
    assert m.shape == (28, 28, 1)
    assert m.dtype == np.float32
    assert m.min() >= 0.0 and m.max() == pytest.approx(1.0)
    h, w = ink_bbox(m)
    assert max(h, w) == 20 and min(h, w) <= 20  # fits 20x20, touches it on one side
    cy, cx = ndimage.center_of_mass(m[:, :, 0])
    assert abs(cy - 14) <= 0.5 + 1e-6 and abs(cx - 14) <= 0.5 + 1e-6


@pytest.fixture(scope="module")
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """20 MNIST test digits (x (N, 28, 28) float, y) from the prepared data or
    ``PIPELINE_MNIST_TEST`` (an .npz with x, y); skipped without either."""
    path = Path(os.environ.get("PIPELINE_MNIST_TEST") or MNIST_TEST)
    if not path.is_file():
        pytest.skip(f"{path} not prepared (dvc repro prepare@digits10)")
    with np.load(path) as f:
        x, y = f["x"][:20, :, :, 0], f["y"][:20]
    return x, y


# --------------------------------------------------------------------------- drawn digits


@pytest.mark.parametrize("digit", range(10))
def test_drawn_digit_is_boxed_and_centred(digit):
    m = pp.to_mnist(paint(glyph_mask(digit), mode="RGB"))
    assert_mnist_like(m)
    assert m[:2].max() == 0 and m[:, :2].max() == 0  # margins stay black


def test_same_digit_whatever_the_picture():
    """Inverted or not, any size, off-centre, RGB/grey/palette/RGBA, PNG or JPEG."""
    ref = pp.to_mnist(glyph_mask(4))  # white on black, 200x300, centred
    variants = {
        "black on white RGB": paint(glyph_mask(4)),
        "white on black L": paint(glyph_mask(4), ink=(255,) * 3, paper=(0,) * 3, mode="L"),
        "blue on yellow": paint(glyph_mask(4), ink=(20, 30, 140), paper=(250, 240, 120)),
        "big, off-centre": paint(glyph_mask(4, (1200, 900), (0.8, 0.25), height=0.3)),
        "small": paint(glyph_mask(4, (40, 60))),
        "palette": paint(glyph_mask(4), mode="P"),
        "RGBA dark ink": paint(glyph_mask(4, (500, 400), (0.3, 0.6)), mode="RGBA"),
        "RGBA light ink": paint(glyph_mask(4), ink=(250, 250, 250), mode="RGBA"),
        "JPEG": reencode(paint(glyph_mask(4, (640, 480), (0.7, 0.4))), "JPEG", quality=70),
        "RGBA PNG": reencode(paint(glyph_mask(4), mode="RGBA"), "PNG"),
    }
    for name, img in variants.items():
        m = pp.to_mnist(img)
        assert_mnist_like(m)
        assert shift_corr(m, ref) > 0.9, name


def test_inversion_is_detected_both_ways():
    mask = glyph_mask(2)
    dark_on_light = pp.grey_levels(paint(mask))
    light_on_dark = pp.grey_levels(paint(mask, ink=(230,) * 3, paper=(20,) * 3))
    assert pp.is_dark_on_light(dark_on_light)
    assert not pp.is_dark_on_light(light_on_dark)
    a, b = pp.to_mnist(paint(mask)), pp.to_mnist(paint(mask, ink=(230,) * 3, paper=(20,) * 3))
    for m in (a, b):  # ink bright, paper black: the mean is MNIST's ~0.1-0.2, not ~0.8
        assert m[0, 0, 0] == 0 and m.mean() < 0.3
    assert corr(a, b) > 0.98


def test_arrays_of_any_dtype_and_channels():
    mask = glyph_mask(5)
    ref = pp.to_mnist(mask)
    grey = np.asarray(mask)  # (H, W) uint8, white on black
    rgb = np.asarray(paint(mask))  # (H, W, 3) uint8, black on white
    rgba = np.asarray(paint(mask, mode="RGBA"))  # (H, W, 4)
    for a in (
        grey,
        grey[:, :, None],
        grey.astype(np.float32) / 255,
        grey.astype(np.float64),  # 0..255 floats
        (grey.astype(np.uint16) * 257),
        rgb,
        rgba,
        grey > 127,
    ):
        assert corr(pp.to_mnist(a), ref) > 0.95, (a.dtype, a.shape)
    with pytest.raises(pp.ImageError, match="image array"):
        pp.to_mnist(np.zeros((4, 4, 5)))
    with pytest.raises(pp.ImageError, match="NaN"):
        pp.to_mnist(np.full((8, 8), np.nan))


def test_an_mnist_array_maps_to_itself():
    """A digit that is already MNIST-shaped comes back (nearly) unchanged."""
    m1 = pp.to_mnist(glyph_mask(8))
    m2 = pp.to_mnist(m1)
    assert shift_corr(m2, m1) > 0.97


def test_thin_pen_strokes_are_thickened():
    img = Image.new("L", (1000, 1000), 255)
    ImageDraw.Draw(img).line([(300, 200), (700, 200), (450, 900)], fill=0, width=4)
    m = pp.to_mnist(img)
    assert_mnist_like(m)
    assert pp.stroke_width(m[:, :, 0] >= pp.INK_THRESHOLD) >= 1.5
    assert (m >= 0.5).sum() >= 30  # a visible 7, not a faint trace


def test_specks_and_noise_are_ignored():
    mask = glyph_mask(3, (400, 400), (0.5, 0.5), height=0.5)
    clean = pp.to_mnist(paint(mask))
    rng = np.random.default_rng(0)
    a = np.asarray(paint(mask), dtype=np.float32)
    a += rng.normal(0, 6, a.shape)  # sensor noise
    for y, x in [(10, 10), (380, 30), (20, 390), (390, 385)]:  # dust far from the digit
        a[y : y + 3, x : x + 3] = 0
    noisy = pp.to_mnist(np.clip(a, 0, 255).astype(np.uint8))
    assert_mnist_like(noisy)
    assert shift_corr(noisy, clean) > 0.95


def test_blank_pictures_are_refused():
    with pytest.raises(pp.ImageError, match="no digit"):
        pp.to_mnist(Image.new("RGB", (50, 50), (255, 255, 255)))
    with pytest.raises(pp.ImageError, match="no digit"):
        pp.to_mnist(np.full((30, 30), 128, np.uint8) + np.eye(30, dtype=np.uint8) * 3)
    with pytest.raises(pp.ImageError, match="transparent"):
        pp.to_mnist(Image.new("RGBA", (20, 20), (0, 0, 0, 0)))


def test_a_speck_of_ink_is_no_digit():
    a = np.full((60, 60), 255, np.uint8)
    a[20:23, 30:33] = 0
    with pytest.raises(pp.ImageError, match="no digit found"):
        pp.to_mnist(a)


# --------------------------------------------------------------------------- MNIST digits


def test_mnist_digits_as_ordinary_pictures_come_back(mnist_digits):
    x, _ = mnist_digits
    rng = np.random.default_rng(7)
    scores = []
    for i, digit in enumerate(x):
        invert, mode = bool(i % 2), ("RGB", "L", "RGBA")[i % 3]
        img = render_picture(digit, rng, invert=invert, mode=mode, aspect_jitter=0.0)
        if i % 4 == 0 and mode != "RGBA":
            img = reencode(img, "JPEG", quality=85)
        m = pp.to_mnist(img)
        assert_mnist_like(m)
        got = np.array(ndimage.center_of_mass(m[:, :, 0]))
        want = np.array(ndimage.center_of_mass(digit))
        assert np.abs(got - want).max() <= 1.0, i
        scores.append(shift_corr(m, digit))
    assert min(scores) > 0.8
    assert np.median(scores) > 0.95


def test_mnist_arrays_keep_their_box(mnist_digits):
    x, _ = mnist_digits
    for digit in x:
        m = pp.to_mnist(digit)
        assert max(ink_bbox(m)) == max(ink_bbox(digit)) == 20
        assert shift_corr(m, digit) > 0.85


# --------------------------------------------------------------------------- load_image


def test_load_image_reads_common_formats(tmp_path):
    img = paint(glyph_mask(6))
    ref = pp.to_mnist(img)
    saves = {
        "a.png": {},
        "a.jpg": {"quality": 90},
        "a.bmp": {},
        "a.gif": {},
        "a.tif": {},
        "a.webp": {"lossless": True},
    }
    for name, kw in saves.items():
        img.save(tmp_path / name, **kw)
        assert corr(pp.to_mnist(pp.load_image(tmp_path / name)), ref) > 0.95, name
    Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257).save(tmp_path / "b.tif")
    assert corr(pp.to_mnist(pp.load_image(tmp_path / "b.tif")), ref) > 0.95


def test_load_image_applies_exif_orientation(tmp_path):
    img = paint(glyph_mask(7))
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated 180 degrees: viewers turn it upright
    img.rotate(180).save(tmp_path / "r.jpg", exif=exif, quality=95)
    assert corr(pp.to_mnist(pp.load_image(tmp_path / "r.jpg")), pp.to_mnist(img)) > 0.9


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"hello, I am not a picture\n", "not an image"),
        (png_header(7000, 7000), "too large: 7000x7000"),
        (png_header(20000, 20000), "too large"),  # PIL's own decompression-bomb guard
        (png_header(50, 50), "corrupt or truncated"),
    ],
)
def test_load_image_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(pp.ImageError, match=message):
        pp.load_image(path)


def test_load_image_refuses_missing_paths_and_folders(tmp_path):
    with pytest.raises(pp.ImageError, match="no such file"):
        pp.load_image(tmp_path / "nope.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(pp.ImageError, match="no such file"):
        pp.load_image(tmp_path / "link.png")
    with pytest.raises(pp.ImageError, match="directory"):
        pp.load_image(tmp_path)


def test_pixel_limit_is_configurable(tmp_path):
    paint(glyph_mask(1, (100, 100))).save(tmp_path / "a.png")
    assert pp.load_image(tmp_path / "a.png").size == (100, 100)
    with pytest.raises(pp.ImageError, match=r"limit 0\.005 megapixels"):
        pp.load_image(tmp_path / "a.png", max_pixels=5000)


def test_a_large_photo_is_shrunk_before_the_digit_is_sought():
    photo = paint(glyph_mask(3, (2600, 1800), (0.65, 0.4), height=0.25), paper=(240, 235, 225))
    assert pp.shrink(np.zeros((1800, 2600), np.float32)).shape == (900, 1300)
    m = pp.to_mnist(photo)
    assert_mnist_like(m)
    assert shift_corr(m, pp.to_mnist(glyph_mask(3))) > 0.9  # font hinting differs by size
