"""The Model Registry: train@<model> registers its model as a new version of registered
model ``<model>``, evaluate@ tags it with ``test_accuracy``, plot moves alias ``champion``
to it only when the promotion gate (pipeline/tracking/gate.py) finds it better on evidence.
A version's model card (pipeline/tracking/cards.py) is written when evaluate@ tags it, and
again with each decision of the gate."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import mlflow
from filelock import FileLock

from pipeline.core import config, numenv
from pipeline.tracking import cards, digests, gate, serving
from pipeline.tracking.provenance import dataset_hash, git_commit
from pipeline.tracking.store import TrackingError, reachable, register_quietly, with_retry

CHAMPION = gate.CHAMPION  # the alias of each registered model's best version, on evidence
CHALLENGER = gate.CHALLENGER  # the newest version the gate did not promote
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
            lambda: register_quietly(
                lambda: mlflow.register_model(f"models:/{logged.model_id}", preset, tags=tags)
            )
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
    """Tag the version that ``run_id`` registered with its ``test_accuracy`` and write its
    model card (pipeline/tracking/cards.py); its number."""
    client = mlflow.MlflowClient()
    with reachable():
        version = run_version(client, preset, run_id)
        if version is None:
            return None
        client.set_model_version_tag(preset, version.version, "test_accuracy", f"{accuracy:.6f}")
        cards.write_card(client, preset, version.version)  # the gate's decision comes later
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


def promote(client, preset: str, run_id: str, settings: gate.Settings | None = None) -> str:
    """Move alias ``champion`` of ``preset`` to the version ``run_id`` registered only when the
    promotion gate (pipeline/tracking/gate.py) says it is better on evidence, else alias
    ``challenger``; one line saying why, also tagged on the version. Read, compare and move
    happen under :func:`registry_lock`."""
    with registry_lock(preset, client.tracking_uri):
        line = _promote(client, preset, run_id, settings or gate.Settings())
        serving.follow_champion(client, preset)  # <preset>-serving@champion moves along
        return line


def _promote(client, preset: str, run_id: str, settings: gate.Settings) -> str:
    candidate = run_version(client, preset, run_id)
    if candidate is None:
        return f"{preset}: run {run_id} registered no version; champion unchanged"
    acc = _accuracy(candidate)
    if acc is None:
        return f"{preset}: v{candidate.version} has no test_accuracy yet; champion unchanged"
    champ = gate.champion_version(client, preset)
    if champ is not None and champ.version == candidate.version:
        return f"{preset}: champion stays v{champ.version} (test_accuracy {acc:.4f})"
    decision = gate.decide(client, preset, candidate, champ, settings)
    gate.record(client, preset, candidate, decision, CHAMPION if decision.promote else CHALLENGER)
    cards.write_card(client, preset, candidate.version)  # the card carries the decision
    return decision.line


def promote_by_hand(
    preset: str, version: str, settings: gate.Settings | None = None, client=None
) -> list[str]:
    """Move alias ``champion`` of ``preset`` to ``version`` whatever the gate says (a
    person's decision, e.g. for a ``dvc exp run``); the gate's lines first, then the move."""
    settings = settings or gate.Settings()
    client = client or mlflow.MlflowClient()
    with reachable(), registry_lock(preset, client.tracking_uri):
        try:
            candidate = client.get_model_version(preset, str(version))
        except mlflow.exceptions.MlflowException:
            raise TrackingError(f"{preset}: no version {version} in the registry") from None
        champ = gate.champion_version(client, preset)
        if champ is not None and champ.version == candidate.version:
            return [f"{preset}: v{candidate.version} is already the champion"]
        if _accuracy(candidate) is None:
            lines = [f"{preset}: v{candidate.version} has no test_accuracy (not evaluated)"]
            decision = gate.Decision(False, lines[0])
        else:
            decision = gate.decide(client, preset, candidate, champ, settings)
            lines = [f"gate: {decision.line}"]
        before = "none" if champ is None else f"v{champ.version}"
        moved = f"{preset}: champion {before} -> v{candidate.version} (promoted by hand)"
        decision = gate.Decision(True, f"{moved}; the gate said: {decision.line}", decision.tags)
        gate.record(client, preset, candidate, decision, CHAMPION)
        cards.write_card(client, preset, candidate.version)  # now with the person's decision
        serving.follow_champion(client, preset)  # <preset>-serving@champion moves along
        return [*lines, moved]


def promote_champions(runs: dict[str, str], settings: gate.Settings | None = None) -> list[str]:
    """:func:`promote` each ``preset -> run id``; logs and returns one line a decision."""
    client = mlflow.MlflowClient()
    lines = []
    with reachable():
        for preset, run_id in runs.items():
            lines.append(promote(client, preset, run_id, settings))
            log.info(lines[-1])
    return lines
