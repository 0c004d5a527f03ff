"""Where runs are stored: the tracking URI, the experiment, and one-line errors when a
tracking server does not answer."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar

import mlflow
from filelock import FileLock

from pipeline.core import config

T = TypeVar("T")


class TrackingError(RuntimeError):
    """The tracking store cannot be reached; the message names its URI."""


def store_root(root: Path = config.ROOT) -> Path:
    """The checkout that owns the store: the original repo for DVC's temporary copies."""
    parts = root.resolve().parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root.resolve()


def tracking_uri(root: Path = config.ROOT) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the sqlite store of :func:`store_root`."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{config.mlflow_db(store_root(root))}"


def artifact_location(root: Path = config.ROOT) -> str:
    return config.mlflow_artifacts(store_root(root)).as_uri()


def register_quietly(fn: Callable[[], T]) -> T:
    """``fn()`` (an ``mlflow.register_model``) without MLflow's "Successfully registered
    model" line, which it prints to its own stream whatever the log level (the stage reports
    the version itself); ``PIPELINE_VERBOSE=1`` keeps it."""
    from mlflow.utils import logging_utils

    stream = logging_utils.MLFLOW_LOGGING_STREAM
    if os.environ.get("PIPELINE_VERBOSE", "") not in ("", "0") or not stream.enabled:
        return fn()
    stream.enabled = False
    try:
        return fn()
    finally:
        stream.enabled = True


def with_retry(fn: Callable[[], T], attempts: int = 8, delay: float = 0.5) -> T:
    """Retry ``fn`` on sqlite's "database is locked" (two queued experiments at once)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(delay * (i + 1))
    raise AssertionError("unreachable")


def store_lock(uri: str) -> FileLock | nullcontext:
    """An exclusive lock beside a sqlite store file (``mlflow.db.lock``), held while the
    store's schema and experiment are created: MLflow creates the tables and runs its
    alembic migrations without a lock, so two processes on a fresh store collide (``table
    ... already exists``, ``duplicate column name``). Other stores need none."""
    if not uri.startswith("sqlite:///"):
        return nullcontext()
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(db) + ".lock")


# The experiment's kind, "custom_model_development" (the UI's ExperimentKind for classic ML
# training). MLflow 3.17's UI shows it but opens its view from ?workflowType= or the browser's
# saved switch (pipeline/devtools/ui.py prints an address that names the training view).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def setup(experiment: str, root: Path = config.ROOT) -> str:
    """Point MLflow at the project store and make sure ``experiment`` exists; its id.
    Safe for any number of processes at once on a fresh store (``store_lock``). On a
    tracking server (http/https) the server chooses where artifacts go (proxied:
    ``mlflow-artifacts:/``); elsewhere they go to the checkout's ``mlartifacts/``."""
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if is_server(uri):
        check_server(uri)
    elif not os.environ.get("MLFLOW_TRACKING_URI"):
        config.mlflow_artifacts(store_root(root)).mkdir(parents=True, exist_ok=True)
    with store_lock(uri):
        return _setup_experiment(experiment, root)


def _setup_experiment(experiment: str, root: Path) -> str:
    """The id of ``experiment``, created if needed (the first call creates the schema)."""
    location = None if is_server(mlflow.get_tracking_uri()) else artifact_location(root)

    def get_or_create() -> str:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is not None:
            if exp.tags.get(EXPERIMENT_KIND_TAG) is None:
                mlflow.MlflowClient().set_experiment_tag(
                    exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
                )
            return exp.experiment_id
        try:
            return mlflow.create_experiment(
                experiment,
                artifact_location=location,
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except Exception:
            exp = mlflow.get_experiment_by_name(experiment)  # created meanwhile by another run
            if exp is None:
                raise
            return exp.experiment_id

    with reachable():
        exp_id = with_retry(get_or_create)
        mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def active_experiment() -> str:
    """The id of the experiment new runs go to (the one :func:`setup` made active)."""
    # MLflow has no public getter for the active experiment id: its private one it is.
    return mlflow.tracking.fluent._get_experiment_id()


# --------------------------------------------------------------------------- tracking server


def is_server(uri: str) -> bool:
    """A tracking server (``mlflow server``) rather than a database or folder store."""
    return uri.startswith(("http://", "https://"))


def _unreachable(exc: BaseException) -> str | None:
    """Why ``exc`` means the server could not be reached (None: some other failure)."""
    import requests

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
            return "connection refused" if "refused" in text.lower() else "connection failed"
        if "API request to" in text and ("Max retries exceeded" in text or "Connection" in text):
            return "connection refused" if "refused" in text.lower() else "no answer"
        exc = exc.__cause__ or exc.__context__
    return None


def _refused(exc: BaseException) -> str | None:
    """Why the server refused the request (401: no or wrong credentials, 403: the user may
    not do this); None for any other failure."""
    text = str(exc)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "the user of ~/.mlflow/credentials"
    if "error code 401" in text:
        return (
            "refused the request (401, not authenticated): set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials (`make server-user` adds users)"
        )
    if "error code 403" in text:
        endpoint = text.split("endpoint ", 1)[-1].split(" ", 1)[0]
        return f"refused {endpoint} to {user} (403, permission denied: a read-only user?)"
    return None


@contextmanager
def reachable() -> Iterator[None]:
    """Turn "the tracking server does not answer" or "refuses these credentials" into one
    TrackingError line naming it."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        uri = mlflow.get_tracking_uri()
        refused = _refused(exc) if is_server(uri) else None
        if refused:
            raise TrackingError(f"MLflow tracking server {uri} {refused}") from None
        why = _unreachable(exc)
        if why is None:
            raise
        raise TrackingError(f"MLflow tracking server {uri} is unreachable ({why})") from None


def check_server(uri: str, timeout: float = 10.0) -> None:
    """Fail at once, not after MLflow's retries, when no server answers at ``uri``; cap those
    retries (a few seconds, not minutes) unless MLFLOW_HTTP_REQUEST_MAX_RETRIES says."""
    import urllib.error
    import urllib.request

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # it answers (a proxy or an authenticating front may refuse /health)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it with "
            "`make server`, or unset MLFLOW_TRACKING_URI for the embedded store"
        ) from None
