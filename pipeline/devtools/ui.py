"""MLflow's UI on the project's store for one local viewer (``make ui``).

    python -m pipeline.devtools.ui [--port 5000]

The store is ``MLFLOW_TRACKING_URI``, else ``sqlite:///<repo root>/mlflow.db``, with new
experiments' artifacts in ``<repo root>/mlartifacts``. Plain ``mlflow ui`` starts 4 uvicorn
workers and, on a database store, the job runner (huey consumers for GenAI jobs: judges,
trace archival); a viewer needs one worker and no jobs, so this runs ``mlflow ui
--workers 1`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``. The port is checked first:
``mlflow ui`` reports a busy port and still exits 0, and the browser then shows whichever
server owns it.

It prints the address to open: the experiment's training runs
(``#/experiments/<id>/runs?workflowType=machine_learning``). MLflow 3.17's UI chooses between
its GenAI and "Model training" views from ``?workflowType=`` in the address, else the browser's
saved choice of the sidebar switch (local storage ``mlflow.workflowType``, default ``genai``);
it does not read the experiment's ``mlflow.experimentKind`` tag (the flag that would,
``Z0`` in the built ``main.*.js``, is hard-wired on), so a fresh browser opening the bare
experiment address lands on the GenAI overview.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sqlite3
import sys
import urllib.parse
from pathlib import Path

from pipeline.core import config

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
# What a local viewer does not need (MLflow 3.17's server, mlflow/server/__init__.py).
VIEWER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# The query that opens MLflow 3.17's UI on its "Model training" view (module docstring).
TRAINING_VIEW = "workflowType=machine_learning"


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


def experiment_id(uri: str, name: str) -> str | None:
    """The id of active experiment ``name`` in the database store ``uri`` (read directly, so
    that nothing slows the server's start), or None: none yet, or not a database store."""
    query = "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'"
    try:
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///") :])
            if not db.is_file():
                return None
            with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
                row = con.execute(query, (name,)).fetchone()
        elif "://" in uri and not uri.startswith(("http://", "https://", "file:")):
            import sqlalchemy

            engine = sqlalchemy.create_engine(uri)
            try:
                with engine.connect() as con:
                    row = con.execute(
                        sqlalchemy.text(query.replace("?", ":name")), {"name": name}
                    ).first()
            finally:
                engine.dispose()
        else:
            return None
    except Exception:  # no schema yet, unreachable database: the address without the id
        return None
    return None if row is None else str(row[0])


def landing_url(base: str, exp_id: str | None) -> str:
    """Where a fresh browser should open ``base``: experiment ``exp_id``'s training runs, else
    the experiments list, both on MLflow's "Model training" view."""
    route = f"experiments/{urllib.parse.quote(exp_id)}/runs" if exp_id else "experiments"
    return f"{base}/#/{route}?{TRAINING_VIEW}"


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
    from pipeline.core import params

    try:
        exp_id = experiment_id(store_uri(), params.load().mlflow.experiment)
    except (params.ParamsError, OSError):  # the UI serves the store all the same: the list
        exp_id = None
    url = landing_url(f"http://{HOST}:{args.port}", exp_id)
    print(f"MLflow UI of {store_uri()} (Ctrl-C stops it); open {url}", flush=True)
    os.execve(cmd[0], cmd, env)  # this process becomes the server: Ctrl-C and kill reach it
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
