"""Loading logged models: the project's families from their pickle-free file (nothing of
the model folder is executed or unpickled); any other model through ``mlflow.pyfunc`` only
when the caller trusts it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml

from pipeline.tracking import digests
from pipeline.tracking.store import tracking_uri

SAFE_FORMAT_KEY = "pipeline_format"  # MLmodel metadata: the pickle-free file format logged
KERAS_FILE = "model.keras"  # what mlflow.tensorflow writes under the flavor's data folder
PICKLE_NAMES = (".pkl", ".pickle", ".cloudpickle")
ALLOW_PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"  # MLflow's switch for pickled models


class PickleRefused(RuntimeError):
    """Loading the model would unpickle (run) code the model's author chose."""


@dataclass(frozen=True)
class SafeModelFile:
    """A model of the project's families inside an MLflow model folder."""

    folder: Path  # the local MLflow model folder
    format: str  # "keras" (a .keras file, loaded in safe mode), "npz" (allow_pickle=False)
    # or "ensemble" (ensemble.json naming member .keras/.npz files, each loaded as above)
    path: Path


def local_model_folder(uri: str) -> Path:
    """The MLflow model at ``uri`` (``runs:/``, ``models:/``, artifact URI or a local model
    folder) as a local folder; downloads from the project store as needed and checks every
    file against the sha256 recorded at logging (digests.py: ModelTampered names the file)."""

    if Path(uri).is_dir():
        return Path(uri)
    mlflow.set_tracking_uri(tracking_uri())
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    digests.verify(uri, folder)
    return folder


def verified_model_file(uri: str) -> SafeModelFile:
    """The pickle-free model file of the logged model at ``uri`` (``runs:/<run>/<preset>``,
    ``models:/<preset>@champion``, ``models:/<preset>/<version>``), after every file of it
    matched the sha256 recorded at logging. Raises ModelTampered (no digests recorded, or a
    file differs, naming it) and PickleRefused (not the project's format).
    ``pipeline.models.family.load_verified`` loads it."""
    mlflow.set_tracking_uri(tracking_uri())
    if Path(uri).is_dir() or digests.expected(uri) is None:
        raise digests.ModelTampered(f"{uri}: no sha256 digests recorded for it: not verified")
    return safe_model_file(local_model_folder(uri), uri)


def _inside(folder: Path, rel: str) -> Path | None:
    path = (folder / rel).resolve()
    return path if path.is_relative_to(folder.resolve()) else None


def safe_model_file(folder: Path, uri: str = "") -> SafeModelFile:
    """The pickle-free model file of an MLflow model folder: ``data/model.keras`` of the
    tensorflow flavor, or the ``.npz`` artifact of the scratch pyfunc. Nothing of the folder
    is executed or unpickled here (MLmodel is read with yaml.safe_load). Raises
    ``PickleRefused`` when the folder holds no such file: only unpickling could load it."""
    where = uri or str(folder)
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise FileNotFoundError(f"{where}: not an MLflow model (no MLmodel file)")
    try:
        conf = yaml.safe_load(mlmodel.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: MLmodel is not valid YAML ({exc})") from None
    flavors = conf.get("flavors") or {}
    tf_conf = flavors.get("tensorflow") or flavors.get("keras")
    if isinstance(tf_conf, dict) and tf_conf.get("model_type", "keras") == "keras":
        path = _inside(folder, f"{tf_conf.get('data', 'data')}/{KERAS_FILE}")
        if path is not None and path.exists():
            return SafeModelFile(folder, "keras", path)
    pf = flavors.get("python_function") or {}
    artifacts = pf.get("artifacts") or {}
    entry = artifacts.get("model") if isinstance(artifacts, dict) else None
    rel = entry.get("path") if isinstance(entry, dict) else None
    if isinstance(rel, str) and rel.endswith(".npz") and "model_code_path" in pf:
        path = _inside(folder, rel)
        if path is not None and path.exists():
            return SafeModelFile(folder, "npz", path)
    fmt = (conf.get("metadata") or {}).get(SAFE_FORMAT_KEY)
    if isinstance(rel, str) and fmt == "ensemble" and "model_code_path" in pf:
        path = _inside(folder, f"{rel}/ensemble.json")
        if path is not None and path.exists():
            return SafeModelFile(folder, "ensemble", path)
    pickles = sorted(p.name for p in folder.rglob("*") if p.name.endswith(PICKLE_NAMES))
    what = f" ({', '.join(pickles)})" if pickles else ""
    raise PickleRefused(
        f"{where}: not a model of the project's families (.keras or .npz); loading it would "
        f"unpickle code{what}. Pass --trust-pickle only if you trust where it came from"
    )


@contextmanager
def _pickle_allowed() -> Iterator[None]:
    """MLflow's pickle switch on while the block runs (MLflow reads it from the process
    environment at load time and offers no argument for it); as it was afterwards."""
    before = os.environ.get(ALLOW_PICKLE_ENV)
    os.environ[ALLOW_PICKLE_ENV] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ALLOW_PICKLE_ENV, None)
        else:
            os.environ[ALLOW_PICKLE_ENV] = before


def load_pyfunc(uri: str, trust_pickle: bool = False):
    """Any MLflow model through ``mlflow.pyfunc`` (which may unpickle, i.e. run, code the
    model's author chose): only with ``trust_pickle``. The pickle switch is on only during
    the load."""
    if not trust_pickle:
        raise PickleRefused(f"{uri}: loading it through mlflow.pyfunc needs --trust-pickle")
    mlflow.set_tracking_uri(tracking_uri())
    with _pickle_allowed():
        return mlflow.pyfunc.load_model(uri)
