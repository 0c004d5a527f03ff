"""The serving pyfunc (pipeline/serve/flavor.py) and the app's error handling,
in-process and fast: a scratch (NumPy) network, no server, no TensorFlow."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter

from pipeline.core.params import LayerSpec
from pipeline.models.numpy_cnn.network import Network
from pipeline.predict.preprocess import ImageError, load_image, load_image_bytes, to_mnist
from pipeline.serve import app
from tests.helpers import glyph_mask, paint, png_header

ARCH = [
    {"type": "flatten"},
    {"type": "dense", "units": 16},
    {"type": "dense", "units": 3, "activation": "softmax"},
]
CLASSES = [0, 2, 5]


def png(digit: int = 2, size: int = 200) -> bytes:
    buf = io.BytesIO()
    paint(glyph_mask(digit, size=(size, size))).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from pipeline.serve import flavor as serving_model

    folder = tmp_path_factory.mktemp("serving")
    arch = TypeAdapter(tuple[LayerSpec, ...]).validate_python(ARCH)
    Network(arch, (28, 28, 1), seed=0).save(folder / "model.npz")
    (folder / "classes.json").write_text(json.dumps(CLASSES))
    m = serving_model.DigitServing()
    m.load_context(SimpleNamespace(artifacts={
        "model": str(folder / "model.npz"), "classes": str(folder / "classes.json")
    }))  # fmt: skip
    return m


def test_bytes_decode_like_files(tmp_path):
    raw = png(5)
    (tmp_path / "five.png").write_bytes(raw)
    a = to_mnist(load_image_bytes(raw))
    assert np.array_equal(a, to_mnist(load_image(tmp_path / "five.png")))


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "empty file"),
        (b"not a picture", "not an image file"),
        (png_header(20000, 20000), "too large"),
    ],
)
def test_bytes_refused_with_a_reason(raw, message):
    with pytest.raises(ImageError, match=message):
        load_image_bytes(raw)


def test_pyfunc_answers_like_predict_json(model):
    out = model.predict(None, pd.DataFrame({"image": [png(2), base64.b64encode(png(5)).decode()]}))
    assert list(out.columns) == ["digit", "probability", "probabilities"]
    for _, row in out.iterrows():
        assert row["digit"] in CLASSES
        assert set(row["probabilities"]) == {"0", "2", "5"}
        assert row["probability"] == pytest.approx(max(row["probabilities"].values()))
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    seen = model.predict(None, pd.DataFrame({"image": [png(2)]}), params={"return_image": True})
    assert np.allclose(
        np.reshape(seen["image28"][0], (28, 28)), to_mnist(load_image_bytes(png(2)))[..., 0],
        atol=1e-3,
    )  # fmt: skip


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"img": [b"x"]}), "column named 'image'"),
        (pd.DataFrame({"image": []}), "no pictures"),
        (pd.DataFrame({"image": [b"nope"]}), "image 0: not an image file"),
        (pd.DataFrame({"image": [png(2), png_header(20000, 20000)]}), "image 1: image too large"),
        (pd.DataFrame({"image": ["%%%"]}), "image 0: not base64"),
    ],
)
def test_pyfunc_refuses_bad_pictures_in_one_line(model, frame, message):
    from pipeline.serve.flavor import PictureError

    with pytest.raises(PictureError, match=message) as info:
        model.predict(None, frame)
    assert info.value.get_http_status_code() == 400
    assert "\n" not in info.value.message


def test_mlflow_messages_lose_the_input_they_quote():
    quoted = "Failed to predict data '  image 0  iVBORw0KGgo...'. \nError: image 0: empty file"
    assert app.mlflow_message(json.dumps({"message": quoted}).encode()) == "image 0: empty file"
    schema = (
        "Failed to enforce schema of data ' img 0 aGk=' with schema ['image': binary "
        "(required)]. Error: Model is missing inputs ['image']."
    )
    assert "column named 'image'" in app.mlflow_message(json.dumps({"message": schema}).encode())
    assert app.mlflow_message(b"Internal Server Error") == "Internal Server Error"


def test_errors_are_one_short_line():
    resp = app.error(400, "a\nb " + "x" * 1000, "m/1")
    doc = json.loads(resp.body)
    assert set(doc) == {"error"} and "\n" not in doc["error"] and len(doc["error"]) <= app.MAX_ERROR
    assert resp.headers["x-model-version"] == "m/1"


def test_body_is_capped_and_drained():
    def receiver(chunks):
        it = iter([{"type": "http.request", "body": c, "more_body": True} for c in chunks])

        async def receive():
            return next(it, {"type": "http.request", "body": b"", "more_body": False})

        return receive

    assert asyncio.run(app._body(receiver([b"ab", b"cd"]), 10)) == b"abcd"
    assert asyncio.run(app._body(receiver([b"x" * 6, b"y" * 6]), 10)) is None
