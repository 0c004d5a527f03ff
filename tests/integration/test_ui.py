"""`make ui`: the MLflow UI of the local store, on 127.0.0.1; `make screens`'s walk of it in
headless Chromium (pipeline/devtools/screens.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import CHROMIUM, REPO, free_port, plain_env, sh


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


# A small real store written by the project's own tracking code: experiment "mnist" (with the
# experiment kind the project sets) and two dense_mlp trainings of two `dvc repro`s, each with
# per-epoch curves, a test accuracy and the confusion-matrix figure logged as MLflow logs it.
STORE = """
import os, sys
from pathlib import Path
from PIL import Image, ImageDraw
from pipeline import tracking

root = Path(sys.argv[1])
figures = root / "figures"
figures.mkdir()
img = Image.new("RGB", (240, 240), "white")
draw = ImageDraw.Draw(img)
for i in range(3):
    for j in range(3):
        shade = 40 if i == j else 230 - 20 * (i + j)
        box = [20 + 70 * j, 20 + 70 * i, 85 + 70 * j, 85 + 70 * i]
        draw.rectangle(box, fill=(shade, shade, 255))
img.save(figures / "confusion_matrix.png")
tracking.setup("mnist", root=root)
for k, lr in enumerate((0.01, 0.05)):
    os.environ["PIPELINE_REPRO_ID"] = str(k) * 12
    with tracking.training_run("dense_mlp", "scratch", "digits025", root=root):
        tracking.log_params({"learning_rate": lr})
        for epoch in range(3):
            acc = 0.6 + 0.1 * epoch + k / 50
            tracking.log_metrics({"accuracy": acc, "val_accuracy": acc - 0.05}, step=epoch)
        tracking.log_metrics({"test_accuracy": 0.85 + k / 50})
        tracking.log_images(figures)
"""


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/search?max_results=1"):
            return True
    except (urllib.error.URLError, ConnectionError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_make_ui_serves_one_worker_without_jobs_and_screens_walk_it(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    sh([sys.executable, "-c", STORE, str(store)], cwd=REPO, env=plain_env())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = plain_env(MLFLOW_TRACKING_URI=f"sqlite:///{store}/mlflow.db")
    log = (tmp_path / "ui.log").open("w")
    make = subprocess.Popen(
        ["make", "ui", f"PORT={port}"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        start = time.monotonic()
        while not _answers(base):
            assert make.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            assert time.monotonic() - start < 180, "make ui did not answer within 180 s"
            time.sleep(0.2)
        # the store it opened is MLFLOW_TRACKING_URI's
        req = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=mnist"
        with urllib.request.urlopen(req) as resp:
            exp = json.load(resp)["experiment"]
        tags = {t["key"]: t["value"] for t in exp["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        # log_images gave the experiment the saved view "Figures" (docs/decisions/0006)
        assert "mlflow.sharedViewState.figures" in tags
        # the address it prints opens the experiment's runs on MLflow's training view
        landing = f"{base}/#/experiments/{exp['experiment_id']}/runs?workflowType=machine_learning"
        assert f"open {landing}\n" in (tmp_path / "ui.log").read_text()
        # under make: `mlflow ui` and one uvicorn process, no job runner nor huey consumer
        cmds = [c for c in map(_cmdline, _children(make.pid)) if "python" in c.split(" ")[0]]
        assert len(cmds) == 2, cmds
        assert any(c.split(" ")[1:3] == [str(REPO / ".venv/bin/mlflow"), "ui"] for c in cmds), cmds
        assert any("uvicorn" in c and "--workers 1" in c for c in cmds), cmds
        assert not any("mlflow.server.jobs" in c or "huey" in c for c in cmds), cmds

        out = sh(
            [sys.executable, "-m", "pipeline.devtools.screens", "--url", base,
             "--experiment", "mnist", "--out", str(tmp_path / "screens")],
            cwd=REPO, env=plain_env(), check=False,
        )  # fmt: skip
    finally:
        os.killpg(make.pid, signal.SIGTERM)  # the session this test started: make and its server
        try:
            make.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
        log.close()
    # screens reports what it sees, one line per problem; the two runs have distinct names
    problems = out.stderr.strip().splitlines()
    assert out.returncode == (1 if problems else 0), out.stdout + out.stderr
    assert all(line.startswith("problem: ") for line in problems), out.stderr
    assert not any("training runs are named" in line for line in problems), out.stderr
    assert not any(line.startswith("problem: landing.png") for line in problems), out.stderr
    # the saved view draws the confusion matrix on top of its card (elementFromPoint)
    assert not any("figures.png" in line or "saved view" in line for line in problems), out.stderr
    # what MLflow 3.17.2 cannot be told is one `limit:` line: a fresh browser on the bare
    # experiment address lands on the GenAI view
    assert "limit: bare.png: the bare address " in out.stdout, out.stdout
    for name in ("landing", "runs", "figures", "run", "bare"):
        png = tmp_path / "screens" / f"{name}.png"
        assert f"wrote {png}" in out.stdout
        pixels = np.asarray(Image.open(png).convert("RGB"))
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, name  # drawn, not blank
    assert not _answers(base)  # stopped
