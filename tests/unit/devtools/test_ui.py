"""pipeline/devtools/ui.py (what `make ui` runs) and the parts of pipeline/devtools/screens.py
and chromium.py that need no server: which run it draws, what counts as a blank page."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.devtools import chromium, screens, ui
from tests.helpers import empty_store


def test_mlflow_ui_with_one_worker_and_no_job_runner_on_the_checkout_store(tmp_path, monkeypatch):
    from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv, env = ui.command(5123, root=tmp_path)
    assert Path(argv[0]).name == "mlflow" and Path(argv[0]).is_file()  # the venv's
    assert argv[1] == "ui"
    assert dict(zip(argv[2::2], argv[3::2], strict=True)) == {
        "--host": "127.0.0.1",
        "--port": "5123",
        "--workers": "1",
        "--backend-store-uri": f"sqlite:///{tmp_path}/mlflow.db",
        "--default-artifact-root": str(tmp_path / "mlartifacts"),
    }
    # the pinned MLflow still reads this variable (mlflow/server/__init__.py: _run_server)
    assert env[MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name] == "false"


def test_the_store_is_mlflow_tracking_uri_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://viewer@127.0.0.1:5433/mlflow")
    argv, _ = ui.command(5000, root=tmp_path)
    assert (
        argv[argv.index("--backend-store-uri") + 1] == "postgresql://viewer@127.0.0.1:5433/mlflow"
    )


def test_a_busy_port_is_one_line_and_nothing_starts(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert ui.main(["--port", str(port)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (
        f"error: port {port} on 127.0.0.1 is already in use; stop its server or run: "
        "make ui PORT=<another port>\n"
    )


def _run(run_id, status="FINISHED", preset=True, accuracy=True):
    return screens.Run(
        run_id=run_id,
        name=run_id,
        status=status,
        tags={"preset": "dense_mlp"} if preset else {"run_kind": "plot"},
        metrics={"test_accuracy": 0.9} if accuracy else {},
    )


def test_the_run_drawn_is_the_newest_evaluated_training():
    newest_first = [
        _run("plot", preset=False),
        _run("running", status="RUNNING"),
        _run("trained", accuracy=False),
        _run("evaluated"),
        _run("older"),
    ]
    assert screens.pick_run(newest_first).run_id == "evaluated"
    assert screens.pick_run(newest_first[:3]).run_id == "running"
    assert screens.pick_run(newest_first[:1]) is None


def test_a_flat_page_is_blank_and_a_drawn_one_is_not(tmp_path):
    flat = np.full((200, 300, 3), 255, np.uint8)
    flat[50:60, 50:250] = (30, 30, 30)
    Image.fromarray(flat).save(tmp_path / "flat.png")
    drawn = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(drawn).save(tmp_path / "drawn.png")
    assert chromium.blank(tmp_path / "flat.png")
    assert not chromium.blank(tmp_path / "drawn.png")


def test_make_ui_prints_the_experiments_training_runs_on_the_training_view(tmp_path, monkeypatch):
    """MLflow 3.17's UI opens the GenAI view unless the address names ?workflowType=
    (pipeline/devtools/ui.py); the id is read from the store that pipeline.tracking wrote."""
    from pipeline import tracking

    # the store of tmp_path, whatever an earlier test of this worker left in the environment
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    empty_store(tmp_path)
    tracking.setup("mnist", root=tmp_path)
    uri = tracking.tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path}/mlflow.db"
    exp_id = ui.experiment_id(uri, "mnist")
    assert exp_id is not None and exp_id != "0"  # not the Default experiment
    assert ui.landing_url("http://127.0.0.1:5000", exp_id) == (
        f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning"
    )
    # no such experiment, no store yet, a server's store: the list, on the same view
    assert ui.experiment_id(uri, "other") is None
    assert ui.experiment_id(f"sqlite:///{tmp_path}/none.db", "mnist") is None
    assert not (tmp_path / "none.db").exists()
    assert ui.experiment_id("http://127.0.0.1:5000", "mnist") is None
    assert ui.landing_url("http://h:1", None) == (
        "http://h:1/#/experiments?workflowType=machine_learning"
    )
