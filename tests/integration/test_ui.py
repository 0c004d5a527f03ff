"""`make ui`: the MLflow UI of the local store, on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess

from tests.helpers import REPO, plain_env


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
