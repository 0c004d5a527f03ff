"""pipeline.predict.cli (and pipeline.predict.foreign): digits from picture files, any model.

Models are trained here, tiny, on digits 0, 2 and 5 drawn with Pillow's bundled font (the
class map of ``digits025``), inside a temporary project root (``PIPELINE_ROOT``) that holds
params.yaml, data/prepared/digits025/meta.json and models/<preset>/. The CLI runs in a
subprocess; the slow tests add the keras family, MLflow URIs (runs:/, models:/<name>@alias,
the scratch pyfunc) and ``mlflow models serve``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.data.prepared import Split
from pipeline.models import family as families
from pipeline.predict import cli as predict
from tests.helpers import (
    DRAWN_CLASSES,
    TINY_ARCH,
    TINY_SCRATCH,
    drawn_digits,
    free_port,
    glyph_mask,
    paint,
    params_spec,
    png_header,
    tiny_scratch_project,
)

CLASSES = DRAWN_CLASSES
TINY_PRESET = TINY_SCRATCH


def model_params(family: str, epochs: int) -> params_mod.ModelParams:
    raw = params_spec()
    raw["models"] = {
        "m": {
            "family": family,
            "dataset": "digits025",
            "arch": TINY_ARCH,
            "train": {"epochs": epochs, "batch_size": 16, "learning_rate": 0.003},
        }
    }
    raw["plot"] = {"compare_curves": []}
    return params_mod.parse(raw).models["m"]


@pytest.fixture(scope="module")
def data() -> tuple[Split, Split]:
    x, y = drawn_digits(60, seed=1)
    return Split(x[:150], y[:150]), Split(x[150:], y[150:])


@pytest.fixture(scope="module")
def root(tmp_path_factory, data) -> Path:
    """A project root: params.yaml (keras_cnn, dense_mlp and a scratch preset), the digits025
    class map, and that preset trained into models/tiny_scratch/."""
    root = tmp_path_factory.mktemp("root")
    history = tiny_scratch_project(root, *data, "keras_cnn", "dense_mlp")
    assert history[-1]["val_accuracy"] > 0.95
    return root


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """Ordinary pictures of 0, 2 and 5 named <digit>_<what>.<ext>, one in a subfolder."""
    folder = tmp_path_factory.mktemp("pictures")
    (folder / "sub").mkdir()
    paint(glyph_mask(0, (300, 400))).save(folder / "0_black_on_white.png")
    paint(glyph_mask(2, (900, 700), (0.7, 0.3), 0.3), ink=(240,) * 3, paper=(10, 20, 30)).save(
        folder / "2_white_on_black_offcentre.jpg", quality=85
    )
    paint(glyph_mask(5, (250, 250), stroke=4), mode="RGBA").save(folder / "5_rgba.webp")
    paint(glyph_mask(2, (120, 200)), ink=(30, 40, 160), paper=(250, 245, 200)).save(
        folder / "sub" / "2_blue_ink.bmp"
    )
    (folder / "notes.txt").write_text("not a picture, and not picked up from a folder\n")
    return folder


def expected(path: str | Path) -> int:
    return int(Path(path).name.split("_", 1)[0])


def run_cli(root: Path, *args: str, module: str = "pipeline.predict.cli", env=None, timeout=300):
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env |= {"PIPELINE_ROOT": str(root), "TF_CPP_MIN_LOG_LEVEL": "2"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=root,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def parse_lines(stdout: str) -> dict[str, tuple[int, float]]:
    """path -> (digit, probability) of each line; the first line names the model (``# ``)."""
    out = {}
    first, *lines = stdout.splitlines()
    assert first.startswith("# model: "), first
    for line in lines:
        path, digit, prob = line.split("\t")
        out[path] = (int(digit), float(prob))
    return out


# --------------------------------------------------------------------------- CLI, scratch


def test_cli_predicts_files_and_folders(root, pictures):
    r = run_cli(root, "--model", TINY_PRESET, str(pictures))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"# model: {TINY_PRESET}, run unknown, from models/{TINY_PRESET}/")
    got = parse_lines(r.stdout)
    assert len(got) == 4  # the .txt file is not picked up from a folder
    assert str(pictures / "sub" / "2_blue_ink.bmp") in got
    for path, (digit, prob) in got.items():
        assert digit == expected(path), path
        assert 1 / 3 < prob <= 1.0


def test_cli_json(root, pictures):
    one = pictures / "0_black_on_white.png"
    r = run_cli(root, "--model", TINY_PRESET, "--json", str(one), str(pictures / "sub"))
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert [Path(i["path"]).name for i in items] == ["0_black_on_white.png", "2_blue_ink.bmp"]
    for item in items:
        assert set(item) == {"path", "digit", "probability", "probabilities", "model", "warning"}
        assert item["model"]["preset"] == TINY_PRESET
        assert set(item["probabilities"]) == {"0", "2", "5"}  # keyed by digit, not index
        assert item["digit"] == expected(item["path"])
        assert item["probability"] == max(item["probabilities"].values())
        assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_cli_bad_inputs_do_not_stop_the_others(root, pictures, tmp_path):
    bad = {
        "empty.png": b"",
        "text.jpg": b"just some words\n",
        "huge.png": png_header(8000, 6000),
        "bomb.png": png_header(30000, 30000),
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "empty_dir").mkdir()
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    good = pictures / "0_black_on_white.png"
    args = [str(tmp_path / n) for n in bad] + [
        str(good),
        str(tmp_path / "missing.png"),
        str(tmp_path / "empty_dir"),
        str(tmp_path / "blank.png"),
    ]
    r = run_cli(root, "--model", TINY_PRESET, *args)
    assert r.returncode == 1
    got = parse_lines(r.stdout)
    assert list(got) == [str(good)] and got[str(good)][0] == 0
    errors = [e for e in r.stderr.strip().splitlines() if not e.startswith("warning: ")]
    messages = {
        "empty.png": "empty file",
        "text.jpg": "not an image",
        "huge.png": "too large: 8000x6000 = 48.0 megapixels (limit 40 megapixels)",
        "bomb.png": "too large",
        "missing.png": "no such file",
        "empty_dir": "no image files",
        "blank.png": "no digit found",
    }
    assert len(errors) == len(messages), r.stderr
    for name, message in messages.items():
        line = next(e for e in errors if e.startswith(f"error: {tmp_path / name}: "))
        assert message in line, line
    assert "Traceback" not in r.stderr


def test_cli_refuses_unknown_or_untrained_models(root, pictures):
    r = run_cli(root, "--model", "no_such_model", str(pictures))
    assert r.returncode == 2
    assert "neither a preset" in r.stderr and "keras_cnn" in r.stderr
    r = run_cli(root, "--model", "keras_cnn", str(pictures))
    assert r.returncode == 2
    assert "no trained model" in r.stderr and "dvc repro train@keras_cnn" in r.stderr
    with pytest.raises(SystemExit) as exc:  # argparse: paths are required
        predict.main(["--model", "nothing/here"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_predict_eval_reports_accuracy(root, tmp_path):
    x, y = drawn_digits(4, seed=5)
    np.savez(tmp_path / "test.npz", x=x, y=np.asarray(CLASSES)[y])
    r = run_cli(
        root, "--model", TINY_PRESET, "--n", "12", "--data", str(tmp_path / "test.npz"),
        module="pipeline.predict.foreign",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("accuracy on pictures"))
    assert float(line.split()[3]) >= 0.9, r.stdout


# --------------------------------------------------------------------------- in process


def test_collect_walks_folders_sorted_and_unique(pictures, tmp_path):
    (tmp_path / ".hidden.png").write_bytes(b"x")
    files, errors = predict.collect(
        [pictures, pictures / "0_black_on_white.png", tmp_path / "nope", tmp_path]
    )
    names = [f.relative_to(pictures).as_posix() for f in files]
    assert names == [
        "0_black_on_white.png",
        "2_white_on_black_offcentre.jpg",
        "5_rgba.webp",
        "sub/2_blue_ink.bmp",
    ]
    assert [(p.name, m.split(" ")[0]) for p, m in errors] == [("nope", "no"), (tmp_path.name, "no")]


def test_predict_files_maps_indices_to_digits(pictures):
    """A stand-in model that always answers output index 1: digit 2 of the class map."""
    loaded = predict.LoadedModel(
        spec="fixed",
        proba=lambda x: np.tile(np.array([[0.1, 0.7, 0.2]], np.float32), (len(x), 1)),
        classes=CLASSES,
    )
    preds, errors = predict.predict_files(loaded, [pictures])
    assert not errors and len(preds) == 4
    assert {p.digit for p in preds} == {2}
    assert preds[0].probabilities == pytest.approx({0: 0.1, 2: 0.7, 5: 0.2})

    loaded.classes = (0, 1)  # does not fit 3 outputs: indices, with a warning
    preds, _ = predict.predict_files(loaded, [pictures / "5_rgba.webp"])
    assert preds[0].digit == 1 and "does not fit" in loaded.notes[0]


# --------------------------------------------------------------------------- slow: MLflow


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A temporary MLflow store holding a tiny keras model (run tagged with a dataset whose
    meta.json does not exist, classes as params) registered as tiny-digits@champion, and
    the scratch model as a pyfunc."""
    import mlflow

    with warnings.catch_warnings(record=True):
        # MLflow advises type hints on ScratchModel.predict (partly under its own "once"
        # filter, which wins over pytest's "error"): record and drop the advice.
        warnings.simplefilter("always")
        from pipeline import tracking  # its import logs MLflow's advice

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        tracking.setup("predict-tests", root=folder)
        x, y = drawn_digits(50, seed=3)
        out = folder / "keras"
        keras_family = families.get("keras")
        keras_family.train(
            model_params("keras", 3), Split(x[:120], y[:120]), Split(x[120:], y[120:]),
            seed=0, out_dir=out, verbose=0,
        )  # fmt: skip
        model = keras_family.load(out)
        with mlflow.start_run(tags={"dataset": "not_prepared_here"}) as run:
            mlflow.log_params({f"dataset.classes.{i}": c for i, c in enumerate(CLASSES)})
            keras_family.log_model(model, out, x[:2])
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "tiny-digits")
        mlflow.MlflowClient().set_registered_model_alias("tiny-digits", "champion", version.version)
        scratch_dir = folder / "scratch"
        scratch = families.get("scratch")
        scratch.train(
            model_params("scratch", 3), Split(x[:120], y[:120]), Split(x[120:], y[120:]),
            seed=0, out_dir=scratch_dir, progress=False,
        )  # fmt: skip
        with mlflow.start_run(tags={"dataset": "digits025"}) as srun, warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*(Add|Any) type hint", UserWarning)  # as above
            scratch.log_model(scratch.load(scratch_dir), scratch_dir, x[:2])
        return {
            "uri": uri,
            "keras_run": run.info.run_id,
            "scratch_run": srun.info.run_id,
            "keras_dir": out,
            "x": x[120:],
            "y": y[120:],
        }
    finally:
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    ["runs:/{keras_run}/model", "models:/tiny-digits@champion", "runs:/{scratch_run}/model"],
)
def test_cli_with_mlflow_uris(root, pictures, store, model):
    spec = model.format(**store)
    r = run_cli(
        root, "--model", spec, "--json", str(pictures), env={"MLFLOW_TRACKING_URI": store["uri"]}
    )
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert len(items) == 4
    for item in items:
        assert item["digit"] == expected(item["path"]), item
    assert "class map" not in r.stderr  # the class map was found
    answered = items[0]["model"]
    run = store["scratch_run"] if "scratch_run" in model else store["keras_run"]
    assert answered["run_id"] == run
    if spec.startswith("models:/"):
        assert (answered["registered_model"], answered["version"], answered["alias"]) == (
            "tiny-digits",
            "1",
            "champion",
        )
    assert "type hint" not in r.stderr  # MLflow's advice to the model's author is not shown


@pytest.mark.slow
def test_cli_with_a_keras_preset(root, pictures, store):
    """The keras family through models/<preset>/ (dense_mlp, classes from meta.json)."""
    target = config.model_dir("dense_mlp", root)
    target.mkdir(parents=True, exist_ok=True)
    (target / "model.keras").write_bytes((store["keras_dir"] / "model.keras").read_bytes())
    r = run_cli(root, "--model", "dense_mlp", str(pictures))
    assert r.returncode == 0, r.stderr
    for path, (digit, _) in parse_lines(r.stdout).items():
        assert digit == expected(path)


def _http(url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


@pytest.mark.slow
@pytest.mark.network
def test_mlflow_models_serve_answers(pictures, store, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env |= {"MLFLOW_TRACKING_URI": store["uri"], "TF_CPP_MIN_LOG_LEVEL": "2"}
    # The server execs `uvicorn` from PATH: the venv's bin first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log = (tmp_path / "serve.log").open("w")
    model_uri = f"runs:/{store['keras_run']}/model"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if _http(f"{base}/ping")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "server did not answer /ping in 180 s"
            time.sleep(1.0)
        files, _ = predict.collect([pictures])
        _, x, errors = predict.read_pictures(files)
        assert not errors
        status, body = _http(
            f"{base}/invocations", json.dumps({"inputs": x.tolist()}).encode(), timeout=60
        )
        assert status == 200
        proba = np.asarray(json.loads(body)["predictions"], dtype=np.float32)
        assert proba.shape == (len(files), len(CLASSES))
        digits = np.asarray(CLASSES)[proba.argmax(axis=1)]
        assert digits.tolist() == [expected(f) for f in files]
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    finally:
        _stop(server)
        log.close()


def _stop(server: subprocess.Popen) -> None:
    """Stop the server's process group (it runs uvicorn as a child)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue
    server.wait(timeout=20)
