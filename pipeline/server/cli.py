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
import base64
import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core import config

HOST = "127.0.0.1"  # never another interface by default: share it through a tunnel
PORT = 5001
PG_PORT = 5433  # beside a system PostgreSQL on 5432
PG_ROLE = "mlflow"
PG_DATABASE = "mlflow"
PG_SYSTEM_USER = "postgres"  # runs the cluster when this runs as root (from the Debian package)
ADMIN = "admin"
WORKSPACE = "default"  # the workspace of every experiment and model (--enable-workspaces)
# role name -> (description, [(resource type, permission)]) on every resource ("*")
ROLES = {
    "readers": (
        "read experiments and models",
        [("experiment", "READ"), ("registered_model", "READ")],
    ),
    "editors": (
        "log runs, register models, move aliases",
        [("workspace", "USE"), ("experiment", "EDIT"), ("registered_model", "EDIT")],
    ),
}
ROLE_OF = {"read": "readers", "edit": "editors"}


class ServerError(RuntimeError):
    """The server cannot be started or stopped; the message says why."""


def port_busy(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat")
    return not (state.is_file() and state.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pg_bindir() -> Path | None:
    """bin/ of the newest PostgreSQL of Debian's packages (/usr/lib/postgresql/<v>/bin)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    if not found:
        return None
    return Path(max(found, key=lambda p: int(Path(p).parts[-3]))).parent


def install_postgres() -> Path:
    """Debian's postgresql package, installed with apt-get when missing (root only)."""
    found = pg_bindir()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ServerError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): install "
            "Debian's postgresql package, or set MLFLOW_BACKEND_STORE_URI to a database"
        )
    print("installing PostgreSQL: apt-get install postgresql", file=sys.stderr)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"]
    for cmd in (["apt-get", "update", "-qq"], install):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "failed").splitlines()[-1]
            raise ServerError(f"PostgreSQL could not be installed ({' '.join(cmd)}): {last}")
    found = pg_bindir()
    if not found:
        raise ServerError("apt-get installed postgresql, but no pg_ctl under /usr/lib/postgresql")
    return found


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(empty log)"


@dataclass
class Server:
    """The processes of one tracking server, their ports and their state folder."""

    state: Path
    port: int = PORT
    pg_port: int = PG_PORT
    workers: int = 2  # uvicorn processes: one a core of a small machine
    process: subprocess.Popen | None = field(default=None, repr=False)  # started here

    # ------------------------------------------------------------------ paths

    @property
    def pgdata(self) -> Path:
        return self.state / "pgdata"

    @property
    def pgpass(self) -> Path:
        return self.state / "pgpass"

    @property
    def mlflow_pid_file(self) -> Path:
        return self.state / "mlflow-server.pid"

    @property
    def pg_pid_file(self) -> Path:
        return self.state / "postgres.pid"

    @property
    def mlflow_log(self) -> Path:
        return self.state / "mlflow-server.log"

    @property
    def pg_log(self) -> Path:
        return self.pgdata / "postgres.log"  # written by pg_ctl as the cluster's user

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def admin_password_file(self) -> Path:
        return self.state / "admin-password"

    @property
    def auth_config(self) -> Path:
        return self.state / "basic_auth.ini"

    def artifacts_destination(self) -> str:
        return os.environ.get("MLFLOW_ARTIFACTS_DESTINATION") or str(self.state / "artifacts")

    # ------------------------------------------------------------------ PostgreSQL

    def _pg_user(self) -> str | None:
        """The system user that runs the cluster: None (this user) unless this runs as root."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            raise ServerError(
                f"running as root and there is no {PG_SYSTEM_USER!r} user to run PostgreSQL "
                "(Debian's postgresql package creates it)"
            ) from None
        return PG_SYSTEM_USER

    def _as_pg(self, cmd: list[str]) -> list[str]:
        user = self._pg_user()
        if not user:
            return cmd
        runuser = shutil.which("runuser") or next(
            (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if Path(p).is_file()), None
        )
        if runuser is None:
            raise ServerError(f"running as root and no `runuser` to run PostgreSQL as {user!r}")
        return [runuser, "-u", user, "--", *cmd]

    def password(self) -> str:
        return self.pgpass.read_text().strip()

    def backend_uri(self) -> str:
        external = os.environ.get("MLFLOW_BACKEND_STORE_URI")
        if external:
            return external
        return (
            f"postgresql+psycopg://{PG_ROLE}:{self.password()}@{HOST}:{self.pg_port}/{PG_DATABASE}"
        )

    def _init_cluster(self, bindir: Path) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        if (self.pgdata / "PG_VERSION").is_file():
            return
        user = self._pg_user()
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if not self.pgpass.is_file():
            self.pgpass.write_text(secrets.token_hex(16) + "\n")
        self.pgpass.chmod(0o600)
        pwfile = self.state / ".initdb-pw"  # readable by the cluster's user, removed below
        shutil.copyfile(self.pgpass, pwfile)
        try:
            self._initdb(bindir, user, pwfile)
        finally:
            pwfile.unlink(missing_ok=True)

    def _initdb(self, bindir: Path, user: str | None, pwfile: Path) -> None:
        if user:
            entry = pwd.getpwnam(user)
            for path in (self.pgdata, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            probe = subprocess.run(self._as_pg(["test", "-w", str(self.pgdata)]), check=False)
            if probe.returncode != 0:
                raise ServerError(
                    f"{self.pgdata}: the {user!r} user cannot reach this folder (a parent "
                    "folder is private); put the project where other users can read it"
                )
        cmd = [str(bindir / "initdb"), "-D", str(self.pgdata), "-U", PG_ROLE, "-E", "UTF8"]
        cmd += ["--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-instructions"]
        proc = subprocess.run(self._as_pg(cmd), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or "initdb failed").splitlines()[-1]
            shutil.rmtree(self.pgdata, ignore_errors=True)  # no half-made cluster
            raise ServerError(f"initdb {self.pgdata}: {last}")

    def postgres_running(self) -> bool:
        return alive(read_pid(self.pgdata / "postmaster.pid"))

    def start_postgres(self) -> None:
        """Start the project's cluster (made on first use) and create the mlflow database."""
        bindir = install_postgres()
        self._init_cluster(bindir)
        if not self.postgres_running():
            if port_busy(self.pg_port):
                raise ServerError(
                    f"port {self.pg_port} on {HOST} is busy: PostgreSQL cannot listen there "
                    "(pass --pg-port)"
                )
            opts = f"-c listen_addresses={HOST} -p {self.pg_port} -c unix_socket_directories=''"
            cmd = [str(bindir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.pg_log)]
            cmd += ["-o", opts, "-w", "-t", "60", "start"]
            proc = subprocess.run(self._as_pg(cmd), capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ServerError(f"PostgreSQL did not start: {_last_line(self.pg_log)}")
        pid = read_pid(self.pgdata / "postmaster.pid")
        self.pg_pid_file.write_text(f"{pid}\n")
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        conninfo = {"host": HOST, "port": self.pg_port, "user": PG_ROLE}
        conninfo["password"] = self.password()
        with psycopg.connect(dbname="postgres", autocommit=True, **conninfo) as conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            if conn.execute(query, (PG_DATABASE,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')

    def stop_postgres(self) -> bool:
        """Stop the cluster (pg_ctl signals the pid of its postmaster.pid); True if it ran."""
        bindir = pg_bindir()
        if bindir is None or not self.postgres_running():
            self.pg_pid_file.unlink(missing_ok=True)
            return False
        cmd = [str(bindir / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"]
        proc = subprocess.run(self._as_pg(cmd), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServerError(f"PostgreSQL did not stop: {proc.stderr.strip() or proc.stdout}")
        self.pg_pid_file.unlink(missing_ok=True)
        return True

    # ------------------------------------------------------------------ mlflow server

    def health(self, timeout: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    # ------------------------------------------------------------------ authentication

    def _secret(self, path: Path, make) -> str:
        """The secret kept in ``path`` (mode 600), made by ``make()`` the first time."""
        if not path.is_file():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(make() + "\n")
        path.chmod(0o600)
        return path.read_text().strip()

    def auth_env(self) -> dict[str, str]:
        """The environment of ``mlflow server --app-name basic-auth``; the secrets (mode 600
        beside ``pgpass``) are made at first start, the auth config is written each start."""
        self.state.mkdir(parents=True, exist_ok=True)
        admin = self._secret(self.admin_password_file, lambda: secrets.token_urlsafe(24))
        flask = self._secret(self.state / "flask-secret", lambda: secrets.token_hex(32))
        db = (self.state / "basic_auth.db").resolve()
        fd = os.open(self.auth_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:  # admin_password creates the admin once (empty db)
            out.write(
                f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///{db}\n"
                f"admin_username = {ADMIN}\nadmin_password = {admin}\n"
                "grant_default_workspace_access = false\n"
            )
        self.auth_config.chmod(0o600)
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": flask,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner: 2 processes, not 9
        }

    def api(self, method: str, endpoint: str, body: dict | None = None, user=None, query=None):
        """One call of the server's REST API as ``user`` ((name, password); default admin)."""
        name, password = user or (ADMIN, self.admin_password_file.read_text().strip())
        url = f"{self.uri}/api/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        token = base64.b64encode(f"{name}:{password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip()
            with contextlib.suppress(ValueError, KeyError, TypeError):
                text = json.loads(text)["message"]
            first = (text.splitlines() or [""])[0][:200]
            raise ServerError(f"{method} {endpoint}: HTTP {exc.code}: {first}") from None

    def ensure_roles(self) -> dict[str, int]:
        """The ``readers`` and ``editors`` roles (created when missing): name -> id."""
        listed = self.api("GET", "3.0/mlflow/roles/list", query={"workspace": WORKSPACE})
        have = {r["name"]: int(r["id"]) for r in listed.get("roles", [])}
        for name, (description, grants) in ROLES.items():
            if name in have:
                continue
            body = {"workspace": WORKSPACE, "name": name, "description": description}
            role_id = int(self.api("POST", "3.0/mlflow/roles/create", body)["role"]["id"])
            for resource, permission in grants:
                grant = {"role_id": role_id, "resource_type": resource}
                grant |= {"resource_pattern": "*", "permission": permission}
                self.api("POST", "3.0/mlflow/roles/permissions/add", grant)
            have[name] = role_id
        return have

    def add_user(self, name: str, role: str, password: str | None = None) -> str:
        """Create user ``name`` with role ``read`` or ``edit``; the password (generated when
        not given: 32 characters)."""
        if role not in ROLE_OF:
            raise ServerError(f"role {role!r}: choose read or edit")
        if not (self.mlflow_pid() and self.health()):
            raise ServerError(f"no MLflow server of {self.state} runs: `make server` first")
        password = password or secrets.token_urlsafe(24)
        if len(password) < 12:
            raise ServerError("the password must have at least 12 characters (MLflow's rule)")
        roles = self.ensure_roles()
        try:
            self.api("POST", "2.0/mlflow/users/create", {"username": name, "password": password})
        except ServerError as exc:
            if "already exists" in str(exc):
                raise ServerError(f"user {name!r} already exists on {self.uri}") from None
            raise
        self.api(
            "POST", "3.0/mlflow/roles/assign", {"username": name, "role_id": roles[ROLE_OF[role]]}
        )
        return password

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
                raise ServerError(f"mlflow server exited: {_last_line(self.mlflow_log)}")
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
