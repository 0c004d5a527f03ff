"""The server's PostgreSQL: Debian's package (installed with apt-get when missing and this
runs as root), a cluster of the project's own in ``<state>/pgdata`` made with ``initdb`` and run
with ``pg_ctl`` on 127.0.0.1 only, as the ``postgres`` user when this runs as root (PostgreSQL
refuses root), its password in ``<state>/pgpass`` (mode 600)."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.server.procs import HOST, ServerError, alive, last_line, port_busy, read_pid

PG_PORT = 5433  # beside a system PostgreSQL on 5432
PG_ROLE = "mlflow"
PG_DATABASE = "mlflow"
PG_SYSTEM_USER = "postgres"  # runs the cluster when this runs as root (from the Debian package)


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


class PostgresCluster:
    """The cluster of a server's state folder (``self.state``) on ``self.pg_port``: a mixin
    of ``pipeline.server.cli.Server``."""

    state: Path
    pg_port: int

    @property
    def pgdata(self) -> Path:
        return self.state / "pgdata"

    @property
    def pgpass(self) -> Path:
        return self.state / "pgpass"

    @property
    def pg_pid_file(self) -> Path:
        return self.state / "postgres.pid"

    @property
    def pg_log(self) -> Path:
        return self.pgdata / "postgres.log"  # written by pg_ctl as the cluster's user

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
                raise ServerError(f"PostgreSQL did not start: {last_line(self.pg_log)}")
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
