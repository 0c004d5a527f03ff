"""Model files that cannot be swapped: the sha256 of every file of a logged model (its
``code/`` included) is recorded when it is logged and checked before the project loads it.

At logging (:func:`record`) the model is read back from the store, every file hashed, and
the list (``<name>.sha256.json``, a run artifact) digested once more: that digest is a tag
in the tracking database, ``model_sha256.<name>`` on the run, ``model_sha256`` on the logged
model and on the registered version, beside ``model_manifest`` (the list's run and path).
Before loading (:func:`verify`), the downloaded folder is hashed again; a file changed,
missing or added (a planted ``*.cloudpickle``, code appended to ``code/``) is refused in
one line naming it. Artifacts live in the artifact store, the tags in the database: a swap
in one is caught by the other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

import mlflow

from pipeline.core.io import file_digest

log = logging.getLogger(__name__)
TAG = "model_sha256"  # on the logged model and the version; "model_sha256.<name>" on the run
MANIFEST_TAG = "model_manifest"  # "<run id>/<name>.sha256.json": where the list is
# written by MLflow into a models:/ download (the registered name and version; YAML, never run)
SKIPPED = {"registered_model_meta"}


class ModelTampered(ValueError):
    """A model's files differ from the digests recorded when it was logged."""


def folder_digests(folder: Path) -> dict[str, str]:
    """{relative POSIX path: sha256} of every file under ``folder`` (symlinks as files)."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): file_digest(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() not in SKIPPED
    }


def manifest_digest(digests: dict[str, str]) -> str:
    text = json.dumps(digests, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def record(model_info) -> dict[str, str]:
    """Hash the files of the model just logged (``mlflow.models.model.ModelInfo``) as the
    store holds them; log the list to the active run and its digest as tags. The tags."""
    name = model_info.name or model_info.artifact_path
    with tempfile.TemporaryDirectory(prefix="model-digests-") as tmp:
        folder = mlflow.artifacts.download_artifacts(model_info.model_uri, dst_path=tmp)
        digests = folder_digests(Path(folder))
    digest = manifest_digest(digests)
    run_id = mlflow.active_run().info.run_id
    manifest = f"{name}.sha256.json"
    mlflow.log_dict(digests, manifest)
    mlflow.set_tag(f"{TAG}.{name}", digest)
    tags = {TAG: digest, MANIFEST_TAG: f"{run_id}/{manifest}"}
    if getattr(model_info, "model_id", None):
        mlflow.set_logged_model_tags(model_info.model_id, tags)
    return tags


def version_tags(logged) -> dict[str, str]:
    """The digest tags of a logged model (``mlflow.last_logged_model()``) for its version."""
    tags = getattr(logged, "tags", None) or {}
    return {k: tags[k] for k in (TAG, MANIFEST_TAG) if k in tags}


def expected(uri: str) -> tuple[str, str] | None:
    """(digest, "<run id>/<manifest path>") recorded for the model at ``uri`` (``runs:/``,
    ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``models:/<model id>``); None
    when nothing was recorded (a local folder, a model logged before digests)."""
    client = mlflow.MlflowClient()
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/") :].partition("/")
        name = path.strip("/")
        tags = client.get_run(run_id).data.tags
        digest = tags.get(f"{TAG}.{name}")
        return (digest, f"{run_id}/{name}.sha256.json") if digest else None
    if not uri.startswith("models:/"):
        return None
    ref = uri[len("models:/") :].strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        tags = client.get_model_version_by_alias(name, alias).tags
    elif "/" in ref:
        name, version = ref.split("/", 1)
        if not version.isdigit():
            return None
        tags = client.get_model_version(name, version).tags
    else:
        tags = client.get_logged_model(ref).tags
    if TAG in tags and MANIFEST_TAG in tags:
        return tags[TAG], tags[MANIFEST_TAG]
    return None


def _bytecode_cache(rel: str) -> bool:
    """``.../__pycache__/<module>.pyc``: what Python writes beside a model's ``code/`` when
    MLflow's own loader imports it from a local store (``mlflow models serve`` does). Not
    checked: the project's loaders never import a model's ``code/`` (its ``pipeline`` is
    shadowed by the installed package), so a cache file there cannot run."""
    parts = rel.split("/")
    return len(parts) >= 2 and parts[-2] == "__pycache__" and parts[-1].endswith(".pyc")


def verify(uri: str, folder: Path) -> bool:
    """Check the downloaded model ``folder`` of ``uri`` against its recorded digests; raise
    ModelTampered naming the first file that differs. False when nothing was recorded."""
    found = expected(uri)
    if found is None:
        log.warning("%s: no sha256 digests recorded (logged before they were): not verified", uri)
        return False
    digest, manifest = found
    run_id, _, path = manifest.partition("/")
    try:
        recorded = mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")
    except Exception as exc:
        raise ModelTampered(f"{uri}: its sha256 list {path} cannot be read ({exc})") from None
    if manifest_digest(recorded) != digest:
        raise ModelTampered(f"{uri}: {path} differs from the digest tagged at logging: refused")
    got = folder_digests(folder)
    for rel in sorted(set(recorded) | set(got)):
        if rel not in got:
            problem = "is missing"
        elif rel not in recorded and _bytecode_cache(rel):
            continue
        elif rel not in recorded:
            problem = "was added after logging"
        elif got[rel] != recorded[rel]:
            problem = "differs from the sha256 recorded at logging"
        else:
            continue
        raise ModelTampered(f"{uri}: {rel} {problem}: refused (the model's files were changed)")
    return True
