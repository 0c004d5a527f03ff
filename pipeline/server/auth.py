"""MLflow's own authentication for the team server (``mlflow server --app-name basic-auth
--enable-workspaces``): the admin password, Flask secret and ``basic_auth.ini`` beside
``pgpass`` (mode 600), the ``readers`` and ``editors`` roles, and users made through the
server's REST API."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline.server.procs import ServerError

ADMIN = "admin"
WORKSPACE = "default"  # the workspace of every experiment and model (--enable-workspaces)

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


class BasicAuth:
    """Users, roles and secrets of a server's state folder (``self.state``), through its REST
    API at ``self.uri``: a mixin of ``pipeline.server.cli.Server`` (``add_user`` asks the host's
    ``mlflow_pid()`` and ``health()`` whether its server runs)."""

    state: Path
    uri: str

    @property
    def admin_password_file(self) -> Path:
        return self.state / "admin-password"

    @property
    def auth_config(self) -> Path:
        return self.state / "basic_auth.ini"

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
