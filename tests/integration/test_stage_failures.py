"""A stage that fails or is killed leaves no debris and keeps the last good outputs: bad
params stop before DVC deletes anything, a failed train or evaluate puts its outputs back
from DVC's cache (or git), a killed train is cleaned up by the next run, and unvalidated
raw files never reach prepare.

Each test reproduces one defect found by probing a tiny-profile checkout, on a private copy
of the shared tiny project (conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.core import config
from pipeline.data.idx import encode_idx, read_idx
from tests.helpers import copy_tiny, plain_env, sh, tree


@pytest.fixture(scope="module")
def project(tiny_built, tmp_path_factory) -> Path:
    """A private copy of the tiny project for the tests that put back what they change."""
    return copy_tiny(tiny_built, tmp_path_factory.mktemp("failures") / "p")


# --------------------------------------------------------------------------- validation gate


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


@pytest.mark.slow
def test_bad_params_keep_the_previous_model_under_dvc_repro(project):
    env = plain_env()
    model = project / "models" / "scratch_cnn"
    before = tree(model)
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
        assert tree(model) == before, key
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
    before = tree(model)
    env = plain_env(MLFLOW_TRACKING_URI=dead, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    out = sh([".venv/bin/dvc", "repro", "-s", "-f", "train@dense_mlp"], project, env, False)
    log = out.stdout + out.stderr
    assert out.returncode != 0, log
    assert f"train@dense_mlp: error: MLflow tracking server {dead} is unreachable" in log, log
    assert "train@dense_mlp: models/dense_mlp: restored from DVC's cache" in log, log
    assert "Traceback" not in log
    assert tree(model) == before
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
    before = (tree(plots), metrics.read_bytes())
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
    assert (tree(plots), metrics.read_bytes()) == before
    assert sh(["git", "status", "--porcelain"], project, env).stdout == ""


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
    before = tree(models / preset)

    proc = _start_train_and_wait(project, preset)  # Ctrl-C's cousin: SIGTERM
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last == "train@scratch_cnn: interrupted (SIGTERM); previous outputs kept"
    assert "KILLED" in _run_statuses(project, preset) and "FAILED" not in _run_statuses(
        project, preset
    )
    assert not list(models.glob(".*.tmp")) and tree(models / preset) == before

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


def _stage_pid(project: Path, argv: list[bytes]) -> int | None:
    """The pid of the process running ``argv`` in ``project`` (a stage DVC started)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        if proc.name.isdigit() and cmd[1 : 1 + len(argv)] == argv and cwd == project.resolve():
            return int(proc.name)
    return None


@pytest.mark.slow
def test_sigkill_under_dvc_repro_is_cleaned_up_by_the_next_repro(tiny_built, tmp_path):
    """SIGKILL of train@ under `dvc repro`: the next plain `dvc repro` restores the model
    from the run cache without running train@; the marker the killed stage left in
    reports/running/ (a dep of check_params) makes check_params run, which marks the orphan
    run KILLED and removes the temporary folder; then `dvc status` is clean again."""
    project = copy_tiny(tiny_built, tmp_path / "p")
    preset, models = "dense_mlp", project / "models"
    before = tree(models / preset)
    env = plain_env()
    dvc = subprocess.Popen(
        [".venv/bin/dvc", "repro", "-f", "-s", f"train@{preset}"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    argv = [b"-m", b"pipeline.stages.train", preset.encode()]
    deadline = time.monotonic() + 300
    pid = None
    while time.monotonic() < deadline and dvc.poll() is None:
        pid = pid or _stage_pid(project, argv)
        if (
            pid
            and list(models.glob(f".{preset}.*.tmp"))
            and "RUNNING" in _run_statuses(project, preset)
        ):
            break
        time.sleep(0.05)
    assert pid and dvc.poll() is None, dvc.communicate()[0][-3000:]
    os.kill(pid, signal.SIGKILL)
    dvc.communicate(timeout=120)
    assert dvc.returncode != 0
    assert list(models.glob(f".{preset}.*.tmp")) and "RUNNING" in _run_statuses(project, preset)

    out = sh([".venv/bin/dvc", "repro"], project, env)
    log = out.stdout + out.stderr
    assert f"'train@{preset}' is cached - skipping run" in log, log[-3000:]
    # check_params, which runs first, removes it (any stage under dvc repro would)
    assert "removed 1 temporary file(s)/folder(s) left by a killed run" in log, log[-3000:]
    assert f"of {preset} KILLED: its process" in log, log[-3000:]
    outputs = [project / d for d in ("data", "models", "metrics", "plots", "reports")]
    assert not [t for d in outputs for t in d.rglob(".*.tmp")]
    statuses = _run_statuses(project, preset)
    assert "RUNNING" not in statuses and statuses.count("KILLED") == 1
    assert tree(models / preset) == before
    status = sh([".venv/bin/dvc", "status"], project, env).stdout
    assert "up to date" in status and not list((project / "reports" / "running").glob("*@*"))


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
