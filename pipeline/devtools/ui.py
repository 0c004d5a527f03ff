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
experiment address lands on the GenAI overview. When the experiment has the saved view
"Figures" (pipeline/tracking/views.py: the runs' charts with their figures as pictures), it
prints that address too. docs/decisions/0006-mlflow-ui-figures-and-landing.md has the evidence.
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
# pipeline/tracking/views.py's saved view (its id and tag; tests/unit/tracking/test_views.py
# checks they agree): importing it would import mlflow, seconds of a start that must be quick
FIGURES_VIEW = "figures"
FIGURES_TAG = f"mlflow.sharedViewState.{FIGURES_VIEW}"


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


def _first_row(uri: str, query: str, *args: str) -> tuple | None:
    """The first row of ``query`` (``?`` placeholders) on the database store ``uri``, read
    directly so that nothing slows the server's start; None: no row, no store or schema yet,
    not a database store, or unreachable."""
    try:
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///") :])
            if not db.is_file():
                return None
            with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
                return con.execute(query, args).fetchone()
        if "://" in uri and not uri.startswith(("http://", "https://", "file:")):
            import sqlalchemy

            params = {f"a{i}": arg for i, arg in enumerate(args)}
            for name in params:
                query = query.replace("?", f":{name}", 1)
            engine = sqlalchemy.create_engine(uri)
            try:
                with engine.connect() as con:
                    return con.execute(sqlalchemy.text(query), params).first()
            finally:
                engine.dispose()
    except Exception:  # no schema yet, unreachable database: the address without the id
        return None
    return None


def experiment_id(uri: str, name: str) -> str | None:
    """The id of active experiment ``name`` in the database store ``uri``, or None: none yet,
    or not a database store."""
    row = _first_row(
        uri,
        "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'",
        name,
    )
    return None if row is None else str(row[0])


def has_figures_view(uri: str, exp_id: str) -> bool:
    """Whether experiment ``exp_id`` of the database store ``uri`` has the saved view
    "Figures"."""
    query = "SELECT 1 FROM experiment_tags WHERE experiment_id = ? AND key = ?"
    return _first_row(uri, query, exp_id, FIGURES_TAG) is not None


def landing_url(base: str, exp_id: str | None) -> str:
    """Where a fresh browser should open ``base``: experiment ``exp_id``'s training runs, else
    the experiments list, both on MLflow's "Model training" view."""
    route = f"experiments/{urllib.parse.quote(exp_id)}/runs" if exp_id else "experiments"
    return f"{base}/#/{route}?{TRAINING_VIEW}"


def figures_url(base: str, exp_id: str) -> str:
    """The saved view "Figures" of experiment ``exp_id``, on the charts of the training view."""
    return (
        f"{base}/#/experiments/{urllib.parse.quote(exp_id)}/runs?viewStateShareKey={FIGURES_VIEW}"
        f"&{TRAINING_VIEW}&compareRunsMode=CHART"
    )


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
    base = f"http://{HOST}:{args.port}"
    print(f"MLflow UI of {store_uri()} (Ctrl-C stops it); open {landing_url(base, exp_id)}")
    if exp_id is not None and has_figures_view(store_uri(), exp_id):
        print(f"the runs' figures as pictures (saved view 'Figures'): {figures_url(base, exp_id)}")
    sys.stdout.flush()
    os.execve(cmd[0], cmd, env)  # this process becomes the server: Ctrl-C and kill reach it
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
