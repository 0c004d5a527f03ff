"""The MLflow run contract (docs/architecture.md, "MLflow run contract"): the only module
of the package that imports mlflow.

- Store: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<repo root>/mlflow.db`` with
  artifacts in ``<repo root>/mlartifacts``. Inside a ``dvc exp run --temp/--queue`` copy
  (``<repo>/.dvc/tmp/exps/...``) the repo root is the original checkout, so queued runs land
  in the same store as ``dvc repro``.
- One run per model per execution of train@<model>; its id is kept in models/<model>/ and
  evaluate@ and plot reopen that run.
- Tags: git commit and dirty flag, DVC hash of the prepared dataset, family, preset, DVC
  experiment name, and ``repro_id``, shared by every run of one ``dvc repro`` invocation.
- Models are logged in their flavor with a signature and an input example: keras and custom
  families through ``mlflow.tensorflow.log_model`` (``mlflow.keras.log_model`` with an input
  example fails on MLflow 3.17 with Keras 3.15), with the ``pipeline`` package shipped beside
  the model (``code_paths``) so that the custom layers load anywhere; the scratch family as a
  pyfunc wrapping its ``model.npz``. Requirements are pinned from the installed versions
  rather than inferred (inference loads the model again in a subprocess).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import numpy as np
import yaml
from mlflow.models import infer_signature

from pipeline.core import config

T = TypeVar("T")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole pipeline package
MODEL_ARTIFACT = "model"


def store_root(root: Path = config.ROOT) -> Path:
    """The checkout that owns the store: the original repo for DVC's temporary copies."""
    parts = root.resolve().parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root.resolve()


def tracking_uri(root: Path = config.ROOT) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{config.mlflow_db(store_root(root))}"


def artifact_location(root: Path = config.ROOT) -> str:
    return config.mlflow_artifacts(store_root(root)).as_uri()


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


def setup(experiment: str, root: Path = config.ROOT) -> str:
    """Point MLflow at the project store and make sure ``experiment`` exists; its id."""
    mlflow.set_tracking_uri(tracking_uri(root))
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        config.mlflow_artifacts(store_root(root)).mkdir(parents=True, exist_ok=True)

    def get_or_create() -> str:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return mlflow.create_experiment(experiment, artifact_location=artifact_location(root))
        except Exception:
            exp = mlflow.get_experiment_by_name(experiment)  # created meanwhile by another run
            if exp is None:
                raise
            return exp.experiment_id

    exp_id = with_retry(get_or_create)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _proc_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks


def repro_id() -> str | None:
    """An id shared by all stages of one ``dvc repro``: the DVC process that runs them.

    DVC starts each stage as ``dvc -> shell -> python``; the id hashes the pid and start
    time of the nearest ancestor whose command line runs dvc. ``PIPELINE_REPRO_ID`` wins.
    """
    if os.environ.get("PIPELINE_REPRO_ID"):
        return os.environ["PIPELINE_REPRO_ID"]
    pid = os.getppid()
    for _ in range(4):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        if any(Path(c.decode(errors="replace")).name == "dvc" for c in cmd[:2]):
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
            token = f"{boot}:{pid}:{_proc_start(pid)}"
            return hashlib.sha1(token.encode()).hexdigest()[:12]
        pid = ppid
    return None


def dataset_hash(dataset: str, root: Path = config.ROOT) -> str | None:
    """The md5 DVC recorded for data/prepared/<dataset> in dvc.lock, if any."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for out in stages.get(f"prepare@{dataset}", {}).get("outs", []):
        return out.get("md5")
    return None


def run_tags(model: str, family: str, dataset: str, root: Path = config.ROOT) -> dict[str, str]:
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    tags = {
        "preset": model,
        "family": family,
        "dataset": dataset,
        "git_commit": commit or "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
        "dvc_stage": os.environ.get("DVC_STAGE", ""),
        "mlflow.runName": f"{model}",
    }
    for key, value in {
        "dataset_dvc_md5": dataset_hash(dataset, root),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
        "repro_id": repro_id(),
    }.items():
        if value:
            tags[key] = value
    return tags


def save_run_id(model_dir: Path, run_id: str) -> None:
    (model_dir / config.RUN_ID_FILE).write_text(run_id + "\n")


def load_run_id(model_dir: Path) -> str:
    path = model_dir / config.RUN_ID_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no MLflow run id; run `dvc repro train` first")
    return path.read_text().strip()


# --------------------------------------------------------------------------- runs


@contextmanager
def training_run(model: str, family: str, dataset: str, root: Path = config.ROOT) -> Iterator[str]:
    """A new run of the contract for one execution of train@<model>; yields its id."""
    with mlflow.start_run(run_name=model, tags=run_tags(model, family, dataset, root)) as run:
        yield run.info.run_id


@contextmanager
def reopen(run_id: str) -> Iterator[str]:
    """Add to an existing run (evaluate@ and plot add to the training's run)."""
    with mlflow.start_run(run_id=run_id):
        yield run_id


def log_params(values: dict[str, Any]) -> None:
    with_retry(lambda: mlflow.log_params(values))


def _finite(row: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if k != "epoch" and isinstance(v, int | float) and math.isfinite(v)
    }


def log_metrics(values: dict[str, Any], step: int | None = None) -> None:
    """Log the finite numbers of ``values`` (an ``epoch`` key is the step, not a metric)."""
    with_retry(lambda: mlflow.log_metrics(_finite(values), step=step))


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_artifacts(folder: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


# --------------------------------------------------------------------------- models


def _pins(*dists: str) -> list[str]:
    return [f"{d}=={version(d)}" for d in dists]


def log_keras_model(model, example: np.ndarray) -> None:
    """Log a Keras model to the active run (tensorflow flavor)."""
    proba = np.asarray(model.predict(example, verbose=0))
    mlflow.tensorflow.log_model(
        model,
        name=MODEL_ARTIFACT,
        signature=infer_signature(example, proba),
        input_example=example,
        code_paths=[str(PACKAGE_DIR)],
        pip_requirements=_pins("tensorflow-cpu", "keras", "numpy"),
    )


def log_pyfunc_model(
    code_file: Path, artifacts: dict[str, Path], example: np.ndarray, proba: np.ndarray
) -> None:
    """Log a pyfunc model defined in ``code_file`` (models-from-code: no pickle of the class)
    with its ``artifacts`` to the active run."""
    mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=str(code_file),
        artifacts={k: str(v) for k, v in artifacts.items()},
        signature=infer_signature(example, proba),
        input_example=example,
        code_paths=[str(PACKAGE_DIR)],
        pip_requirements=_pins("numpy"),
    )


def load_pyfunc(uri: str):
    """An MLflow model (``runs:/``, ``models:/``, a model folder) from the project store."""
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.pyfunc.load_model(uri)


def run_params_and_tags(run_id: str) -> tuple[dict[str, str], dict[str, str]]:
    run = mlflow.MlflowClient().get_run(run_id)
    return dict(run.data.params), dict(run.data.tags)


def model_source_run(uri: str) -> str | None:
    """The MLflow run that logged the model at ``uri`` (None when it cannot be told)."""
    client = mlflow.MlflowClient()
    if uri.startswith("runs:/"):
        return uri[len("runs:/") :].split("/", 1)[0] or None
    if not uri.startswith("models:/"):
        return None
    rest = uri[len("models:/") :].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return client.get_model_version_by_alias(name, alias).run_id
    if "/" in rest:
        name, version = rest.split("/", 1)
        if version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            return max(versions, key=lambda v: int(v.version)).run_id if versions else None
        return client.get_model_version(name, version).run_id
    return client.get_logged_model(rest).source_run_id  # models:/<model id> (MLflow 3)


# --------------------------------------------------------------------------- pulled models
# A model pulled from a DVC remote carries the id of the MLflow run that trained it
# (models/<model>/mlflow_run_id), but that run lives in the store of whoever trained it. A
# fresh clone's store, or a CI runner's, does not have it; the team's tracking server does.

SOURCE_RUN_TAG = "source_run_id"  # the run a continuation stands in for
SOURCE_TAG = "source"  # where that run id came from (the file a DVC output carried)
SOURCE_STORE_TAG = "source_store"  # the store it was looked for in, without success


def run_exists(run_id: str) -> bool:
    """True when the current store holds ``run_id`` as a live (not deleted) run."""
    from mlflow.exceptions import MlflowException

    try:
        run = with_retry(lambda: mlflow.MlflowClient().get_run(run_id))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return False
        raise
    return run.info.lifecycle_stage == "active"


def source_label(path: Path, root: Path = config.ROOT) -> str:
    """``path`` relative to the checkout (what a run's ``source`` tag names), with the DVC
    hash of the stage output holding it when dvc.lock records one."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return str(path)
    lock = root / "dvc.lock"
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for out in stage.get("outs", []):
                if rel.parts[: len(Path(out["path"]).parts)] == Path(out["path"]).parts:
                    return f"{rel}, DVC output {out['path']} md5 {out.get('md5', '?')}"
    return str(rel)


@contextmanager
def reopen_or_continue(
    run_id: str, source: str, tags: dict[str, str] | None = None, log=None
) -> Iterator[str]:
    """Add to run ``run_id`` when the current store has it (as ``reopen``); otherwise start
    a run of its own, tagged with the original id and ``source`` (e.g. the file the id was
    read from), and say so in one line through ``log`` (a logging-style ``info``). Yields
    the id of the run that receives what the stage logs.

    Used by stages that meet runs made elsewhere: models restored by ``dvc pull`` from a
    remote, whose training ran on another machine with another store.
    """
    if run_exists(run_id):
        with mlflow.start_run(run_id=run_id):
            yield run_id
        return
    all_tags = dict(tags or {})
    all_tags |= {
        SOURCE_RUN_TAG: run_id,
        SOURCE_TAG: source,
        SOURCE_STORE_TAG: mlflow.get_tracking_uri(),
    }
    name = all_tags.get("mlflow.runName") or "run"
    all_tags["mlflow.runName"] = f"{name} (continues {run_id[:8]})"
    with mlflow.start_run(tags=all_tags) as run:
        if log is not None:
            log(
                f"MLflow run {run_id} (from {source}) is not in this store; "
                f"logging to new run {run.info.run_id} tagged {SOURCE_RUN_TAG}={run_id}"
            )
        yield run.info.run_id


def stage_tags(name: str, root: Path = config.ROOT) -> dict[str, str]:
    """Tags of a run that no single model owns (the cross-model figures of one pipeline
    execution): git commit and dirty flag, DVC stage and experiment, ``repro_id``."""
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    tags = {
        "run_kind": name,
        "git_commit": commit or "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
        "dvc_stage": os.environ.get("DVC_STAGE", ""),
        "mlflow.runName": name,
    }
    for key, value in (("dvc_exp_name", os.environ.get("DVC_EXP_NAME")), ("repro_id", repro_id())):
        if value:
            tags[key] = value
    return tags


@contextmanager
def execution_run(name: str, tags: dict[str, str]) -> Iterator[str]:
    """A new run for one execution of a stage that is not a model's (``plot``)."""
    with mlflow.start_run(run_name=name, tags=tags) as run:
        yield run.info.run_id
