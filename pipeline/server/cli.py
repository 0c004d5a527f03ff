"""The team's MLflow tracking server: ``mlflow server`` over PostgreSQL, artifacts proxied.

    python -m pipeline.server.cli start [--port 5001] [--pg-port 5433]   # make server
    python -m pipeline.server.cli stop                                   # make server-stop
    python -m pipeline.server.cli status

The backend store is PostgreSQL, as MLflow's own recipe for a shared server has it: the
cluster of ``MLFLOW_BACKEND_STORE_URI`` when that is set, else a cluster of the project's own
in ``.mlflow-server/pgdata`` (git-ignored), made with ``initdb`` and run with ``pg_ctl`` from
Debian's ``postgresql`` package (installed with apt-get when missing and this runs as root).
PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user.
It listens on 127.0.0.1 only, with a password kept in ``.mlflow-server/pgpass`` (mode 600).

Artifacts go through the server (``--artifacts-destination``: ``.mlflow-server/artifacts``,
or ``MLFLOW_ARTIFACTS_DESTINATION``, e.g. an S3 bucket), so clients need no bucket
credentials: a client only needs ``MLFLOW_TRACKING_URI=http://127.0.0.1:5001``.

Authentication is MLflow's own (``mlflow server --app-name basic-auth --enable-workspaces``):
the first start writes ``admin-password`` (the ``admin`` user's), ``flask-secret`` and
``basic_auth.ini`` beside ``pgpass`` (mode 600); users live in ``basic_auth.db`` there. Anonymous
requests get 401 (``/health`` excepted). Two roles: ``readers`` (read experiments and models)
and ``editors`` (also create experiments, log runs, register versions, move aliases)::

    python -m pipeline.server.cli user NAME [--role read|edit] [--password PW]  # make server-user

prints the new user's password once. Clients pass ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` (or ``~/.mlflow/credentials``); MLflow's client reads them.

``start`` returns once the server answers ``/health``, prints the tracking URI and writes
pid files; ``stop`` stops both processes by those pids. Failures print one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core import config
from pipeline.server.auth import BasicAuth
from pipeline.server.postgres import PG_PORT, PostgresCluster, install_postgres, pg_bindir
from pipeline.server.procs import HOST, ServerError, alive, last_line, port_busy, read_pid

__all__ = [
    "HOST",
    "PG_PORT",
    "PORT",
    "Server",
    "ServerError",
    "alive",
    "install_postgres",
    "main",
    "pg_bindir",
    "port_busy",
    "read_pid",
]
PORT = 5001


@dataclass
class Server(PostgresCluster, BasicAuth):
    """The processes of one tracking server, their ports and their state folder
    (PostgreSQL: pipeline/server/postgres.py; users and roles: pipeline/server/auth.py)."""

    state: Path
    port: int = PORT
    pg_port: int = PG_PORT
    workers: int = 2  # uvicorn processes: one a core of a small machine
    process: subprocess.Popen | None = field(default=None, repr=False)  # started here

    # ------------------------------------------------------------------ paths

    @property
    def mlflow_pid_file(self) -> Path:
        return self.state / "mlflow-server.pid"

    @property
    def mlflow_log(self) -> Path:
        return self.state / "mlflow-server.log"

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    def artifacts_destination(self) -> str:
        return os.environ.get("MLFLOW_ARTIFACTS_DESTINATION") or str(self.state / "artifacts")

    # ------------------------------------------------------------------ mlflow server

    def health(self, timeout: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def mlflow_pid(self) -> int | None:
        pid = read_pid(self.mlflow_pid_file)
        return pid if alive(pid) else None

    def start_mlflow(self, wait: float = 300.0) -> int:
        """Start ``mlflow server`` in its own process group; its pid, once /health answers."""
        if self.mlflow_pid():
            raise ServerError(f"an MLflow server of {self.state} already runs (pid file)")
        if port_busy(self.port):
            raise ServerError(
                f"port {self.port} on {HOST} is busy: another process listens there "
                "(`make server-stop`, or pass --port)"
            )
        self.state.mkdir(parents=True, exist_ok=True)
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        cmd = [str(mlflow_bin), "server", "--host", HOST, "--port", str(self.port)]
        cmd += ["--app-name", "basic-auth", "--enable-workspaces"]
        cmd += ["--workers", str(self.workers)]
        cmd += ["--artifacts-destination", self.artifacts_destination()]
        # The backend URI holds the password: through the environment, not the command line.
        env = os.environ | {"MLFLOW_BACKEND_STORE_URI": self.backend_uri()} | self.auth_env()
        env["PATH"] = os.pathsep.join([str(mlflow_bin.parent), env.get("PATH", "")])
        with self.mlflow_log.open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers share its pid as process group
            )
        self.process = proc
        self.mlflow_pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + wait
        while not self.health():
            if proc.poll() is not None:
                self.process = None
                self.mlflow_pid_file.unlink(missing_ok=True)
                raise ServerError(f"mlflow server exited: {last_line(self.mlflow_log)}")
            if time.monotonic() > deadline:
                self.stop_mlflow()
                raise ServerError(f"mlflow server did not answer {self.uri}/health in {wait:.0f} s")
            time.sleep(0.5)
        self.ensure_roles()
        (self.state / "basic_auth.db").chmod(0o600)  # password hashes
        return proc.pid

    def stop_mlflow(self, wait: float = 30.0) -> bool:
        """Stop the server's process group (SIGTERM, then SIGKILL); True if it ran."""
        pid = self.mlflow_pid()
        self.mlflow_pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
        if self.process is not None and self.process.pid == pid:
            self.process.wait(timeout=10)  # reap it: no zombie, no "still running" warning
            self.process = None
        while port_busy(self.port) and time.monotonic() < deadline + 10:
            time.sleep(0.2)  # workers of the group release the port last
        return True

    # ------------------------------------------------------------------ both

    def start(self) -> None:
        if self.mlflow_pid() and self.health():
            print(f"MLflow tracking server already running: {self.uri}")
            return
        if port_busy(self.port):
            raise ServerError(
                f"port {self.port} on {HOST} is busy: another process listens there "
                "(`make server-stop`, or pass --port)"
            )
        external = bool(os.environ.get("MLFLOW_BACKEND_STORE_URI"))
        if not external:
            self.start_postgres()
        self.start_mlflow()
        backend = "MLFLOW_BACKEND_STORE_URI" if external else f"PostgreSQL on {HOST}:{self.pg_port}"
        (self.state / "server.json").write_text(
            json.dumps({"uri": self.uri, "backend": backend}, indent=2) + "\n"
        )
        print(f"MLflow tracking server: {self.uri} (backend: {backend}, ", end="")
        print(f"artifacts: {self.artifacts_destination()}, log: {self.mlflow_log})")
        print(f"point clients at it: export MLFLOW_TRACKING_URI={self.uri}")
        print("add users: make server-user NAME=<name> ROLE=edit|read ", end="")
        print(f"(admin's password: {self.admin_password_file})")

    def stop(self) -> None:
        stopped = [name for name, ok in (("mlflow server", self.stop_mlflow()),) if ok]
        if self.pgdata.is_dir() and self.stop_postgres():
            stopped.append("PostgreSQL")
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")

    def status(self) -> int:
        up = self.mlflow_pid() is not None and self.health()
        pg = self.postgres_running()
        print(f"mlflow server {self.uri}: {'up' if up else 'down'}; project PostgreSQL: ", end="")
        print("up" if pg else "down")
        return 0 if up else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.server.cli",
        description="The team's MLflow tracking server (PostgreSQL backend, proxied artifacts).",
    )
    ap.add_argument("action", choices=["start", "stop", "status", "user"])
    ap.add_argument("name", nargs="?", help="user: the new user's name")
    ap.add_argument("--role", default="read", help="user: read (the default) or edit")
    ap.add_argument("--password", default=None, help="user: default: generated and printed")
    ap.add_argument("--port", type=int, default=PORT, help=f"server port (default {PORT})")
    ap.add_argument(
        "--pg-port", type=int, default=PG_PORT, help=f"PostgreSQL port (default {PG_PORT})"
    )
    ap.add_argument("--workers", type=int, default=2, help="mlflow server worker processes")
    ap.add_argument("--state-dir", type=Path, default=None, help="default: .mlflow-server/")
    args = ap.parse_args(argv)
    state = args.state_dir or config.server_dir()
    server = Server(state, args.port, args.pg_port, args.workers)
    try:
        if args.action == "start":
            server.start()
        elif args.action == "stop":
            server.stop()
        elif args.action == "user":
            if not args.name:
                raise ServerError("user: give the new user's name (make server-user NAME=...)")
            password = server.add_user(args.name, args.role, args.password)
            print(f"user {args.name} ({args.role}) created on {server.uri}; its password "
                  "(shown once):")  # fmt: skip
            print(password)
        else:
            return server.status()
    except (ServerError, OSError) as exc:  # OSError: a program or folder that is missing
        print(f"server: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
