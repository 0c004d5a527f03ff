"""Hostile-but-fair probes: no code runs from a model file, the validation gate holds, a
failed or killed stage leaves no debris and keeps the last good output.

Each test reproduces one defect found by probing a tiny-profile checkout; the tests that
need pipeline outputs work on a private copy of the shared tiny project (conftest.py).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.core.io import BadModelFile
from pipeline.data import gate
from pipeline.data.idx import encode_idx, read_idx
from pipeline.data.sources import FetchError
from pipeline.predict import cli as predict
from pipeline.predict import preprocess as pp
from pipeline.stages import fetch as fetch_stage
from pipeline.stages import prepare, validate
from tests.conftest import REPO, copy_tiny, plain_env, sh, write_raw

# --------------------------------------------------------------------------- payloads


class Payload:
    """Unpickling this creates ``marker``: what a hostile model file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(marker)))


def logged_model_folder(project: Path, run_id: str) -> Path:
    """The store's own folder of the model logged by ``run_id`` (what runs:/ resolves to)."""
    for mlmodel in (project / "mlartifacts").rglob("MLmodel"):
        if (yaml.safe_load(mlmodel.read_text()) or {}).get("run_id") == run_id:
            return mlmodel.parent
    raise AssertionError(f"no logged model of run {run_id} in {project}")


@pytest.fixture(scope="module")
def project(tiny_built, tmp_path_factory) -> Path:
    """A private copy of the tiny project for the tests that only read or plant files."""
    return copy_tiny(tiny_built, tmp_path_factory.mktemp("harden") / "p")


@pytest.fixture
def store(project, monkeypatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    return project


def _digit_picture(tmp_path: Path) -> Path:
    from PIL import Image

    a = np.full((60, 60), 255, np.uint8)
    a[10:50, 28:33] = 0
    Image.fromarray(a).save(tmp_path / "one.png")
    return tmp_path / "one.png"


@pytest.mark.slow
def test_keras_model_with_planted_cloudpickle_loads_without_running_it(store, tmp_path):
    marker = tmp_path / "keras-payload-ran"
    run_id = (store / "models" / "keras_small_cnn" / config.RUN_ID_FILE).read_text().strip()
    folder = logged_model_folder(store, run_id)
    assert not list(folder.rglob("*.cloudpickle"))  # logged without any pickle
    for name in ("global_custom_objects.cloudpickle", "custom_objects.cloudpickle"):
        plant(folder / "data" / name, marker)

    loaded = predict.load_uri(f"runs:/{run_id}/keras_small_cnn")  # named after the preset
    preds, errors = predict.predict_files(loaded, [_digit_picture(tmp_path)])
    assert len(preds) == 1 and not errors
    assert not marker.exists()

    # The payload is live: MLflow's own loader, allowed to unpickle, runs it.
    import mlflow

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    try:
        mlflow.tensorflow.load_model(str(folder))
    finally:
        del os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
    assert marker.exists()


_MLFLOW_LOAD = """
import sys, mlflow, numpy as np
x = np.zeros((2, 28, 28, 1), np.float32)
for name in ("custom_cnn", "keras_cnn"):
    proba = np.asarray(mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(x))
    print(name, "pyfunc:", proba.shape, bool(np.allclose(proba.sum(axis=1), 1, atol=1e-4)))
model = mlflow.tensorflow.load_model("models:/custom_cnn@champion")
print("custom_cnn tensorflow:", type(model).__name__, model.count_params())
print("custom layers from the model's code:",
      sys.modules["pipeline.models.keras.layers"].__file__.endswith(
          "/code/pipeline/models/keras/layers.py"))
"""


@pytest.mark.slow
def test_custom_layer_models_load_through_mlflow_in_any_process(project):
    """MLflow's own loaders, in a fresh process outside the project that imported nothing of
    it: models with custom layers load (the logged keras_module passes them to Keras, from
    the code logged with the model) and predict; their logging warned of nothing."""
    env = plain_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    out = sh([str(project / ".venv" / "bin" / "python"), "-c", _MLFLOW_LOAD], Path("/"), env)
    said = out.stdout + out.stderr[-3000:]
    assert "custom_cnn pyfunc: (2, 10) True" in out.stdout, said
    assert "keras_cnn pyfunc: (2, 10) True" in out.stdout, said
    assert "custom_cnn tensorflow: Functional" in out.stdout, said
    assert "custom layers from the model's code: True" in out.stdout, said
    # MLflow checks the input example by loading the model as it is logged: it passed
    assert "Failed to validate serving input example" not in (project / ".repro.log").read_text()


@pytest.mark.slow
def test_scratch_model_needing_unpickling_is_refused_unless_trusted(store, tmp_path, capsys):
    marker = tmp_path / "scratch-payload-ran"
    run_id = (store / "models" / "scratch_cnn" / config.RUN_ID_FILE).read_text().strip()
    folder = logged_model_folder(store, run_id)
    assert not list(folder.rglob("python_model.pkl"))  # models-from-code: no pickle

    # A model folder: a planted python_model.pkl beside the .npz is never read.
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    plant(copy / "python_model.pkl", marker)
    loaded = predict.load_uri(str(copy))
    assert predict.predict_files(loaded, [_digit_picture(tmp_path)])[0]
    assert not marker.exists()

    # The store's model rewritten to load through its pickle: refused, in one line.
    conf = yaml.safe_load((folder / "MLmodel").read_text())
    pf = conf["flavors"]["python_function"]
    pf.pop("model_code_path")
    pf.pop("artifacts")
    pf |= {"loader_module": "mlflow.pyfunc.model", "python_model": "python_model.pkl"}
    (folder / "MLmodel").write_text(yaml.safe_dump(conf))
    plant(folder / "python_model.pkl", marker)
    uri = f"runs:/{run_id}/scratch_cnn"  # the logged model is named after the preset
    assert predict.main(["--model", uri, str(_digit_picture(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust-pickle" in err[0] and "python_model.pkl" in err[0]
    assert not marker.exists()

    # --trust-pickle loads it through mlflow.pyfunc: the payload runs (it is live).
    with pytest.raises(predict.ModelError):
        predict.load_uri(uri, trust_pickle=True)
    assert marker.exists()


def test_npz_with_a_pickled_object_array_is_refused(tmp_path):
    from pipeline.models.numpy_cnn.network import Network

    marker = tmp_path / "npz-payload-ran"
    arr = np.empty(1, dtype=object)
    arr[0] = Payload(marker)
    np.savez(tmp_path / "model.npz", evil=arr, __arch__=np.array("[]"))
    with pytest.raises(BadModelFile, match=r"model\.npz: corrupt or not a model"):
        Network.load(tmp_path / "model.npz")
    assert not marker.exists()


def test_truncated_keras_file_is_reported_as_corrupt(tiny_built, tmp_path):
    from pipeline.models.keras import family

    src = tiny_built / "models" / "keras_small_cnn" / "model.keras"
    bad = tmp_path / "model.keras"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(BadModelFile, match=r"corrupt or truncated \.keras file"):
        family.load_file(bad)


# --------------------------------------------------------------------------- validation gate


def test_failed_validation_blocks_prepare(tmp_path):
    from tests.conftest import make_digits

    raw_params = yaml.safe_load(config.params_path(REPO).read_text())
    raw_params["validate"]["rows"] = {
        "train": {"min": 600, "max": 600},
        "test": {"min": 120, "max": 120},
    }
    p = params_mod.parse(raw_params)
    train, test = make_digits(60, seed=1), make_digits(12, seed=2)
    train[1][3] = 11  # the label the probe planted
    raw = write_raw(tmp_path / "raw", train, test)
    reports = tmp_path / "validation"
    with pytest.raises(validate.ValidationFailed):
        validate.run(p, raw, reports)
    summary = reports / config.SUMMARY_JSON
    assert json.loads(summary.read_text())["raw_sha256"] == gate.raw_hashes(raw)
    with pytest.raises(gate.NotValidated, match="failed"):
        prepare.run(p, "digits10", raw, tmp_path / "out", summary)
    assert not (tmp_path / "out").exists()

    # A passing report does not vouch for other files.
    train[1][3] = 3
    write_raw(raw, train, test)
    validate.run(p, raw, reports)
    prepare.run(p, "digits10", raw, tmp_path / "out", summary)
    write_raw(raw, make_digits(60, seed=5), test)
    with pytest.raises(gate.NotValidated, match="not the file validation checked"):
        prepare.run(p, "digits10", raw, tmp_path / "out", summary)


@pytest.mark.slow
def test_prepare_refuses_unvalidated_raw_files_from_the_command_line(project):
    env = plain_env()
    raw = config.raw_dir("mnist", project)
    labels = raw / "train-labels-idx1-ubyte"
    original = labels.read_bytes()
    y = read_idx(labels).copy()
    y[0] = 11
    labels.write_bytes(encode_idx(y))
    before = (project / "data" / "prepared" / "digits10" / "train.npz").read_bytes()
    try:
        out = sh(["bin/python", "-m", "pipeline.stages.prepare", "digits10"], project, env, False)
        assert out.returncode == 1
        err = out.stderr.strip().splitlines()
        assert err[-1].startswith("prepare@digits10: error: ")
        assert "not the file validation checked" in err[-1]
        assert "Traceback" not in out.stderr
        out = sh([".venv/bin/dvc", "repro", "-s", "prepare@digits10"], project, env, False)
        assert out.returncode != 0
        assert "not the file validation checked" in out.stdout + out.stderr
    finally:
        labels.write_bytes(original)
        sh([".venv/bin/dvc", "checkout", "-q", "prepare@digits10"], project, env, False)
    assert (project / "data" / "prepared" / "digits10" / "train.npz").read_bytes() == before


# --------------------------------------------------------------------------- dvc repro failures


def _edit_params(project: Path, edit) -> str:
    path = project / "params.yaml"
    text = path.read_text()
    raw = yaml.safe_load(text)
    edit(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return text


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


@pytest.mark.slow
def test_bad_params_keep_the_previous_model_under_dvc_repro(project):
    env = plain_env()
    model = project / "models" / "scratch_cnn"
    before = _tree(model)
    probes = {
        "models.scratch_cnn.train.learning_rate": lambda r: r["models"]["scratch_cnn"][
            "train"
        ].update(learning_rate=-0.1),
        "models.scratch_cnn.dataset": lambda r: r["models"]["scratch_cnn"].update(dataset="nope"),
        "models.scratch_cnn.arch[0].kernel": lambda r: r["models"]["scratch_cnn"]["arch"][0].update(
            kernel=40
        ),
    }
    for key, edit in probes.items():
        text = _edit_params(project, edit)
        try:
            out = sh([".venv/bin/dvc", "repro", "train@scratch_cnn"], project, env, False)
        finally:
            (project / "params.yaml").write_text(text)
        log = out.stdout + out.stderr
        assert out.returncode != 0, log
        assert f"check_params: error: {key}" in log, log
        assert "Errno 2" not in log and "Traceback" not in log
        assert _tree(model) == before, key
    out = sh([".venv/bin/dvc", "status", "train@scratch_cnn"], project, env)
    assert "changed" not in out.stdout


@pytest.mark.slow
def test_failed_train_under_dvc_repro_puts_the_previous_model_back(project):
    """DVC removes a stage's outs before running it: a train that then fails (here the
    tracking server is unreachable) must leave models/<m> as it was, from DVC's cache."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed when the block ends
    model = project / "models" / "dense_mlp"
    before = _tree(model)
    env = plain_env(MLFLOW_TRACKING_URI=dead, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    out = sh([".venv/bin/dvc", "repro", "-s", "-f", "train@dense_mlp"], project, env, False)
    log = out.stdout + out.stderr
    assert out.returncode != 0, log
    assert f"train@dense_mlp: error: MLflow tracking server {dead} is unreachable" in log, log
    assert "train@dense_mlp: models/dense_mlp: restored from DVC's cache" in log, log
    assert "Traceback" not in log
    assert _tree(model) == before
    assert not list((project / "models").glob(".*.tmp"))  # no temporaries left
    status = sh([".venv/bin/dvc", "status", "train@dense_mlp"], project, plain_env())
    assert "models/dense_mlp" not in status.stdout, status.stdout


@pytest.mark.slow
def test_failed_evaluate_puts_back_its_plots_and_metrics(tiny_built, tmp_path):
    """evaluate@'s outs (plots/<m>/..., metrics/<m>.json) come back when evaluate fails on a
    truncated model, byte for byte."""
    from pipeline.devtools import workspace

    project = copy_tiny(tiny_built, tmp_path / "p")
    workspace.commit_all(project, "tiny outputs")  # dvc.lock and metrics, as a user commits
    plots, metrics = project / "plots" / "dense_mlp", project / "metrics" / "dense_mlp.json"
    before = (_tree(plots), metrics.read_bytes())
    model = project / "models" / "dense_mlp" / "model.keras"
    model.chmod(0o644)
    model.write_bytes(model.read_bytes()[:1000])  # a truncated model: evaluate fails on it
    env = plain_env()
    out = sh([".venv/bin/dvc", "repro", "-s", "-f", "evaluate@dense_mlp"], project, env, False)
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "evaluate@dense_mlp: error: " in log, log
    assert "evaluate@dense_mlp: plots/dense_mlp/images: restored from DVC's cache" in log, log
    assert "evaluate@dense_mlp: metrics/dense_mlp.json: restored from" in log, log
    assert "Traceback" not in log
    assert (_tree(plots), metrics.read_bytes()) == before
    assert sh(["git", "status", "--porcelain"], project, env).stdout == ""


def test_an_output_dvc_does_not_cache_comes_back_from_git_head(tmp_path):
    """`cache: false` outputs (metrics/*.json) are kept in git: restored from HEAD when its
    md5 is the one dvc.lock records, and named, never guessed, when it is not."""
    import hashlib

    from pipeline.core import dvc_outs
    from pipeline.devtools import workspace

    (tmp_path / "metrics").mkdir()
    good = b'{"accuracy": 0.99}\n'
    (tmp_path / "metrics" / "m.json").write_bytes(good)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    workspace.commit_all(tmp_path, "metrics")
    (tmp_path / "metrics" / "m.json").unlink()  # what DVC does before running the stage
    cache = tmp_path / "cache"
    cache.mkdir()
    out = {"path": "metrics/m.json", "md5": hashlib.md5(good).hexdigest()}
    assert dvc_outs.restore(tmp_path, out, cache) == "metrics/m.json: restored from git (HEAD)"
    assert (tmp_path / "metrics" / "m.json").read_bytes() == good
    (tmp_path / "metrics" / "m.json").unlink()
    other = {"path": "metrics/m.json", "md5": "0" * 32}  # HEAD has another version
    assert "not restored" in dvc_outs.restore(tmp_path, other, cache)
    assert not (tmp_path / "metrics" / "m.json").exists()


# --------------------------------------------------------------------------- concurrency


CREATE = """
import sys
from pathlib import Path
from pipeline import tracking
print(tracking.setup("concurrent", root=Path(sys.argv[1])))
"""


@pytest.mark.slow
def test_four_processes_create_a_fresh_store_at_once(tmp_path):
    env = plain_env(PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert len({out.strip().splitlines()[-1] for _, out, _ in results}) == 1  # one experiment


# --------------------------------------------------------------------------- killed stages


def _run_statuses(project: Path, preset: str) -> list[str]:
    db = sqlite3.connect(project / "mlflow.db")
    try:
        rows = db.execute(
            "SELECT r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'preset' AND t.value = ?",
            (preset,),
        ).fetchall()
    finally:
        db.close()
    return [r[0] for r in rows]


def _start_train_and_wait(project: Path, preset: str) -> subprocess.Popen:
    """Start train@<preset> and return once its MLflow run is open and its temp folder exists."""
    before = _run_statuses(project, preset).count("RUNNING")
    proc = subprocess.Popen(
        ["bin/python", "-m", "pipeline.stages.train", preset],
        cwd=project,
        env=plain_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        temps = list((project / "models").glob(f".{preset}.*.tmp"))
        if temps and _run_statuses(project, preset).count("RUNNING") > before:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"train@{preset} ended before it could be killed: {proc.communicate()}")


@pytest.mark.slow
def test_killed_train_leaves_no_debris_after_a_rerun(tiny_built, tmp_path):
    project = copy_tiny(tiny_built, tmp_path / "p")
    preset, models = "scratch_cnn", tmp_path / "p" / "models"
    before = _tree(models / preset)

    proc = _start_train_and_wait(project, preset)  # Ctrl-C's cousin: SIGTERM
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last == "train@scratch_cnn: interrupted (SIGTERM); previous outputs kept"
    assert "KILLED" in _run_statuses(project, preset) and "FAILED" not in _run_statuses(
        project, preset
    )
    assert not list(models.glob(".*.tmp")) and _tree(models / preset) == before

    proc = _start_train_and_wait(project, preset)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate(timeout=60)
    assert list(models.glob(f".{preset}.*.tmp"))  # the debris the issue saw
    assert "RUNNING" in _run_statuses(project, preset)

    out = sh(["bin/python", "-m", "pipeline.stages.train", preset], project, plain_env())
    assert "removed 1 temporary file(s)/folder(s) left by a killed run" in out.stderr
    assert "KILLED: its process" in out.stderr
    assert not list(models.glob(".*.tmp"))
    statuses = _run_statuses(project, preset)
    assert "RUNNING" not in statuses and statuses.count("KILLED") == 2


@pytest.mark.slow
def test_evaluate_on_a_corrupt_model_npz_says_so_in_one_line(project):
    model = project / "models" / "scratch_cnn" / "model.npz"
    good = model.read_bytes()
    metrics = config.metrics_file("scratch_cnn", project).read_bytes()
    model.write_bytes(good[:1000])
    try:
        out = sh(
            ["bin/python", "-m", "pipeline.stages.evaluate", "scratch_cnn"],
            project,
            plain_env(),
            False,
        )
    finally:
        model.write_bytes(good)
    assert out.returncode == 1
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "model.npz: corrupt or not a model" in err[0], out.stderr
    assert config.metrics_file("scratch_cnn", project).read_bytes() == metrics


# --------------------------------------------------------------------------- small ones


def test_kernel_larger_than_its_input_is_refused_naming_the_key():
    raw = yaml.safe_load(config.params_path(REPO).read_text())
    arch = raw["models"]["scratch_cnn"]["arch"]
    first_conv = next(i for i, layer in enumerate(arch) if layer["type"] == "conv")
    arch[first_conv]["kernel"] = 29
    with pytest.raises(params_mod.ParamsError) as err:
        params_mod.parse(raw)
    assert str(err.value).startswith(f"models.scratch_cnn.arch[{first_conv}].kernel: 29 is larger")


def test_idx_dir_with_three_of_four_files_leaves_nothing(tmp_path, synthetic_raw):
    (synthetic_raw / config.RAW_FILES[3]).unlink()
    text = config.params_path(REPO).read_text()
    raw = yaml.safe_load(text)
    raw["data"].update(source="idx_dir", idx_dir=str(synthetic_raw))
    out = tmp_path / "data" / "raw" / "idx_dir"
    with pytest.raises(FetchError, match="t10k-labels-idx1-ubyte"):
        fetch_stage.run(params_mod.parse(raw), out, cache=tmp_path / "cache")
    assert not out.exists() and not list(out.parent.glob(".*"))


def test_a_speck_of_ink_is_no_digit():
    a = np.full((60, 60), 255, np.uint8)
    a[20:23, 30:33] = 0
    with pytest.raises(pp.ImageError, match="no digit found"):
        pp.to_mnist(a)


def test_make_ui_fails_on_a_busy_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            ["make", "ui", f"PORT={port}"], cwd=REPO, env=plain_env(), capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
    assert out.returncode != 0
    assert f"error: port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "mlflow" not in out.stdout  # the server was never started
