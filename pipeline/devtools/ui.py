"""MLflow's UI on the project's store for one local viewer (``make ui``).

    python -m pipeline.devtools.ui [--port 5000]

The store is ``MLFLOW_TRACKING_URI``, else ``sqlite:///<repo root>/mlflow.db``, with new
experiments' artifacts in ``<repo root>/mlartifacts``. Plain ``mlflow ui`` starts 4 uvicorn
workers and, on a database store, the job runner (huey consumers for GenAI jobs: judges,
trace archival); a viewer needs one worker and no jobs, so this runs ``mlflow ui
--workers 1`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``. The port is checked first:
``mlflow ui`` reports a busy port and still exits 0, and the browser then shows whichever
server owns it.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from pipeline.core import config

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
# What a local viewer does not need (MLflow 3.17's server, mlflow/server/__init__.py).
VIEWER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def store_uri(root: Path = config.ROOT) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the checkout's sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{config.mlflow_db(root)}"


def command(port: int, root: Path = config.ROOT) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow ui`` command line serving ``root``'s store on ``HOST:port``, and its
    environment."""
    mlflow = Path(sys.executable).with_name("mlflow")  # the venv's, beside its python
    argv = [
        str(mlflow),
        "ui",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        store_uri(root),
        "--default-artifact-root",
        str(config.mlflow_artifacts(root)),
    ]
    return argv, {**os.environ, **VIEWER_ENV}


def port_free(port: int) -> bool:
    """Whether a server could listen on ``HOST:port`` now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.devtools.ui", description=__doc__)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"error: port {args.port} is not a port number (1-65535)", file=sys.stderr)
        return 2
    if not port_free(args.port):
        print(
            f"error: port {args.port} on {HOST} is already in use; stop its server or run: "
            "make ui PORT=<another port>",
            file=sys.stderr,
        )
        return 1
    cmd, env = command(args.port)
    print(f"MLflow UI of {store_uri()} on http://{HOST}:{args.port} (Ctrl-C stops it)", flush=True)
    os.execve(cmd[0], cmd, env)  # this process becomes the server: Ctrl-C and kill reach it
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
