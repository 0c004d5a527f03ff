"""The Model Registry: train@<model> registers its model as a new version of registered
model ``<model>``, evaluate@ tags it with ``test_accuracy``, plot moves alias ``champion``
to it only when it beats the champion."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import mlflow
from filelock import FileLock

from pipeline.core import config, numenv
from pipeline.tracking import digests
from pipeline.tracking.provenance import dataset_hash, git_commit
from pipeline.tracking.store import TrackingError, reachable, with_retry

CHAMPION = "champion"  # the alias of each registered model's best version by test accuracy
log = logging.getLogger(__name__)


def register_model(preset: str, dataset: str, root: Path = config.ROOT) -> str:
    """Register the model just logged to the active run as a new version of the registered
    model ``<preset>``, tagged with the preset, git commit, DVC hash of its data and the
    numeric environment of the training (``env.*``, pipeline/core/numenv.py)."""
    logged = mlflow.last_logged_model()
    if logged is None:
        raise TrackingError(f"{preset}: no model was logged to register")
    tags = {
        "preset": preset,
        "git_commit": git_commit(root) or "unknown",
        "dataset_dvc_md5": dataset_hash(dataset, root) or "unknown",
    } | numenv.as_tags(numenv.probe())
    tags |= digests.version_tags(logged)  # the sha256 of its files (digests.py)
    with reachable():
        version = with_retry(
            lambda: mlflow.register_model(f"models:/{logged.model_id}", preset, tags=tags)
        )
    return str(version.version)


def run_version(client, preset: str, run_id: str):
    """The version of registered model ``preset`` made by ``run_id`` (None: none)."""
    try:
        found = client.search_model_versions(f"name = '{preset}' and run_id = '{run_id}'")
    except mlflow.exceptions.MlflowException:
        return None
    return max(found, key=lambda v: int(v.version)) if found else None


def tag_test_accuracy(preset: str, run_id: str, accuracy: float) -> str | None:
    """Tag the version that ``run_id`` registered with its ``test_accuracy``; its number."""
    client = mlflow.MlflowClient()
    with reachable():
        version = run_version(client, preset, run_id)
        if version is None:
            return None
        client.set_model_version_tag(preset, version.version, "test_accuracy", f"{accuracy:.6f}")
    return str(version.version)


def _accuracy(version) -> float | None:
    try:
        return float(version.tags["test_accuracy"])
    except (KeyError, TypeError, ValueError):
        return None


def registry_lock(preset: str, uri: str | None = None) -> FileLock:
    """An exclusive lock for moving ``preset``'s champion in the store ``uri``: MLflow has no
    compare-and-set for aliases, so two ``plot`` stages at once (``dvc queue start -j 2``) could
    each read the champion, and the slower one put back a worse version than the faster one
    set. The lock lives in the system's temp folder, keyed by store and model, so it serialises
    every process of this machine (queued experiments run in copies of the repo); promotions
    from two machines at the same instant are not serialised."""
    uri = uri or mlflow.get_tracking_uri()
    key = hashlib.sha256(f"{uri}\0{preset}".encode()).hexdigest()[:20]
    folder = Path(tempfile.gettempdir()) / "pipeline-registry-locks"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f"{key}.lock"))


def promote(client, preset: str, run_id: str) -> str:
    """Move alias ``champion`` of ``preset`` to the version ``run_id`` registered, only when
    its test accuracy beats the champion's (ties keep the champion); one line saying why.
    Read, compare and move happen under :func:`registry_lock`."""
    with registry_lock(preset, client.tracking_uri):
        return _promote(client, preset, run_id)


def _promote(client, preset: str, run_id: str) -> str:
    candidate = run_version(client, preset, run_id)
    if candidate is None:
        return f"{preset}: run {run_id} registered no version; champion unchanged"
    acc = _accuracy(candidate)
    if acc is None:
        return f"{preset}: v{candidate.version} has no test_accuracy yet; champion unchanged"
    try:
        champ = client.get_model_version_by_alias(preset, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champ = None
    if champ is not None and champ.version == candidate.version:
        return f"{preset}: champion stays v{champ.version} (test_accuracy {acc:.4f})"
    champ_acc = _accuracy(champ) if champ is not None else None
    if champ is not None and champ_acc is not None and acc <= champ_acc:
        return (
            f"{preset}: champion stays v{champ.version} (test_accuracy {champ_acc:.4f}); "
            f"v{candidate.version} has {acc:.4f}"
        )
    client.set_registered_model_alias(preset, CHAMPION, candidate.version)
    if champ is None:
        return f"{preset}: champion -> v{candidate.version} (test_accuracy {acc:.4f}, the first)"
    before = "no test_accuracy" if champ_acc is None else f"{champ_acc:.4f}"
    return (
        f"{preset}: champion v{champ.version} -> v{candidate.version} "
        f"(test_accuracy {acc:.4f} beats {before})"
    )


def promote_champions(runs: dict[str, str]) -> list[str]:
    """:func:`promote` each ``preset -> run id``; logs and returns one line a decision."""
    client = mlflow.MlflowClient()
    lines = []
    with reachable():
        for preset, run_id in runs.items():
            lines.append(promote(client, preset, run_id))
            log.info(lines[-1])
    return lines
