"""``python -m pipeline.serve`` (``make serve``) against a real store and a real model.

The model is trained here in seconds: a dense network on pictures of the ten digits drawn
with Pillow's font and with pen strokes (a plain "1" and "7", as a mouse draws them), put
through ``pipeline.predict.preprocess.to_mnist`` like every served picture. It is logged
with ``tracking.serving.log_serving_model`` (what train@ does) into a temporary sqlite store and
registered as ``demo-serving`` with alias ``champion``. The server runs in a subprocess
on a free port of 127.0.0.1 and is stopped by its pid.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.helpers import (
    CHROMIUM,
    REPO,
    free_port,
    glyph_mask,
    headless_chromium,
    paint,
    png_header,
)

PRESET = "demo"
NAME = f"{PRESET}-serving"
# Pen strokes in a 280x280 pad (the page's canvas), as lists of points.
STROKES = {
    1: [[[150, 40], [148, 120], [146, 240]]],
    7: [[[70, 50], [210, 50]], [[210, 50], [170, 130], [130, 245]]],
}


def _stroke_picture(digit: int, rng: random.Random, size: int = 280) -> Image.Image:
    img = Image.new("L", (size, size), 255)
    pen = ImageDraw.Draw(img)
    dx, dy = rng.uniform(-40, 40), rng.uniform(-30, 30)
    for stroke in STROKES[digit]:
        pts = [(x + dx + rng.uniform(-12, 12), y + dy + rng.uniform(-8, 8)) for x, y in stroke]
        pen.line(pts, fill=0, width=rng.randint(10, 24), joint="curve")
    return img


def training_pictures(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Font glyphs of 0-9 and pen strokes of 1 and 7, through to_mnist."""
    from pipeline.predict.preprocess import to_mnist

    rng = random.Random(seed)
    xs, ys = [], []
    for d in range(10):
        for _ in range(n):
            mask = glyph_mask(
                d,
                size=(200, 200),
                height=rng.uniform(0.4, 0.8),
                stroke=rng.randint(0, 6),
                rotate=rng.uniform(-12, 12),
            )
            xs.append(to_mnist(paint(mask, mode="L")))
            ys.append(d)
            if d in STROKES:
                xs.append(to_mnist(_stroke_picture(d, rng)))
                ys.append(d)
    return np.stack(xs), np.array(ys)


def train_model(folder: Path, epochs: int = 40) -> Path:
    import keras

    x, y = training_pictures()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    return folder


def log_version(model_dir: Path) -> str:
    """A new version of ``demo-serving`` from ``model_dir`` (as train@ logs it)."""
    import mlflow

    from pipeline.tracking import serving

    with mlflow.start_run():
        mlflow.set_tag("preset", PRESET)
        return serving.log_serving_model(PRESET, model_dir, range(10))


def set_champion(version: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", version)


def photo_png(digit: int, size: int = 200) -> bytes:
    """A photo-like picture: dark digit on white, ``size`` x ``size``, RGB."""
    mask = glyph_mask(digit, size=(size, size), height=0.7, stroke=3)
    buf = io.BytesIO()
    paint(mask).save(buf, "PNG")
    return buf.getvalue()


def split_body(*pngs: bytes, **extra) -> bytes:
    data = [[base64.b64encode(p).decode()] for p in pngs]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": data}, **extra}).encode()


def post(url: str, body: bytes, ctype: str | None = "application/json", timeout: float = 60):
    """(status, headers, parsed JSON or text) of a POST; never raises for 4xx/5xx."""
    req = urllib.request.Request(url, data=body, method="POST")
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, headers, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode("utf-8", "replace")


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store holding demo-serving v1 (champion), and the env that points at it."""
    import mlflow

    root = tmp_path_factory.mktemp("serve-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.create_experiment("serve", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment("serve")
        model_dir = train_model(root / "model")
        set_champion(log_version(model_dir))
        env = dict(os.environ, MLFLOW_TRACKING_URI=uri, TF_CPP_MIN_LOG_LEVEL="2")
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # uvicorn
        env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        yield {"root": root, "env": env, "model_dir": model_dir}
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="module")
def server(store):
    port = free_port()
    log = (store["root"] / "serve.log").open("w")
    cmd = [sys.executable, "-m", "pipeline.serve", "--port", str(port), "--poll", "2"]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=store["env"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/ping", proc)
        yield {"url": url, "proc": proc, **store}
    finally:
        stop(proc)
        log.close()


@pytest.mark.slow
def test_photo_like_picture_gets_the_right_digit_and_the_version(server):
    status, headers, doc = post(f"{server['url']}/invocations", split_body(photo_png(4)))
    assert status == 200, doc
    (pred,) = doc["predictions"]
    assert pred["digit"] == 4
    assert set(pred["probabilities"]) == {str(d) for d in range(10)}
    assert pred["probability"] == pytest.approx(max(pred["probabilities"].values()))
    assert headers["X-Model-Version"] == f"{NAME}/1"
    assert doc["model"] == {"name": NAME, "version": "1"}
    with urllib.request.urlopen(f"{server['url']}/", timeout=10) as r:
        page = r.read().decode()
    assert "<canvas" in page and "http://" not in page and "https://" not in page


BAD = {
    "not an image": (split_body(b"this is not a picture"), "application/json"),
    "empty body": (b"", "application/json"),
    "20000x20000 picture": (split_body(png_header(20000, 20000)), "application/json"),
    "10 MB of JSON": (b'{"x": "' + b"a" * 10_000_000 + b'"}', "application/json"),
    "wrong column": (b'{"dataframe_split": {"columns": ["img"], "data": [["aGk="]]}}', None),
    "not JSON": (b"{nope", "application/json"),
    "no pictures": (b'{"dataframe_split": {"columns": ["image"], "data": []}}', None),
    "no content type": (split_body(photo_png(1)), None),
    "bad base64": (b'{"dataframe_records": [{"image": "%%%"}]}', None),
}


@pytest.mark.slow
def test_bad_input_gets_a_one_line_4xx_and_the_server_keeps_serving(server):
    url = f"{server['url']}/invocations"
    for what, (body, ctype) in BAD.items():
        kind = ctype if ctype or what == "no content type" else "application/json"
        status, _, doc = post(url, body, kind)
        assert 400 <= status < 500, (what, status, doc)
        assert isinstance(doc, dict) and set(doc) == {"error"}, (what, doc)
        assert "\n" not in doc["error"] and len(doc["error"]) <= 300, (what, doc)
        assert "Traceback" not in doc["error"] and "iVBOR" not in doc["error"], (what, doc)
    assert post(url, BAD["10 MB of JSON"][0])[0] == 413
    assert "image 0" in post(url, BAD["20000x20000 picture"][0])[2]["error"]
    status, _, doc = post(url, split_body(photo_png(7)))
    assert status == 200 and doc["predictions"][0]["digit"] == 7


@pytest.mark.slow
def test_stock_mlflow_models_serve_answers_the_same(server):
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{NAME}@champion",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log = (server["root"] / "stock.log").open("w")
    proc = subprocess.Popen(
        cmd,
        cwd=server["root"],
        env=server["env"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", proc)
        body = split_body(photo_png(4))
        stock = post(f"http://127.0.0.1:{port}/invocations", body)
        own = post(f"{server['url']}/invocations", body)
    finally:
        stop(proc)
        log.close()
    assert stock[0] == 200, stock
    assert stock[2]["predictions"][0]["digit"] == own[2]["predictions"][0]["digit"] == 4
    assert stock[2]["predictions"][0]["probability"] == pytest.approx(
        own[2]["predictions"][0]["probability"], abs=1e-6
    )


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_page_in_headless_chromium_reads_a_drawn_1_and_7(server, tmp_path):
    for digit, strokes in STROKES.items():
        address = f"{server['url']}/#draw=" + urllib.parse.quote(json.dumps(strokes))
        out = subprocess.run(
            headless_chromium(
                tmp_path / f"profile{digit}", "--virtual-time-budget=20000", "--dump-dom", address
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        assert 'data-state="answered"' in out, out[-2000:]
        assert f'<output id="digit">{digit}</output>' in out, out[-2000:]
        assert f'<span id="version">{NAME}/' in out
        ink = int(out.split('id="seen"', 1)[1].split('data-ink="', 1)[1].split('"', 1)[0])
        assert 30 < ink < 400  # the 28x28 picture the model saw is drawn on the page


@pytest.mark.slow
def test_new_champion_is_served_without_a_restart_and_no_request_fails(server):
    url = f"{server['url']}/invocations"
    body = split_body(photo_png(4))
    seen, failures, stop_flag = [], [], threading.Event()

    def client():
        while not stop_flag.is_set():
            status, headers, doc = post(url, body)
            if status != 200 or doc["predictions"][0]["digit"] != 4:
                failures.append((status, doc))
            seen.append((time.monotonic(), headers.get("X-Model-Version")))
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        new = log_version(server["model_dir"])
        moved = time.monotonic()
        set_champion(new)
        deadline = moved + 60
        while time.monotonic() < deadline and not any(v == f"{NAME}/{new}" for _, v in seen[-5:]):
            time.sleep(0.5)
        time.sleep(1)
    finally:
        stop_flag.set()
        for t in threads:
            t.join()
    assert failures == []
    first_new = min(t for t, v in seen if v == f"{NAME}/{new}")
    assert first_new - moved < 60
    assert len(seen) > 20
