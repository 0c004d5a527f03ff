"""The MLflow run contract (docs/architecture.md, "MLflow run contract"): the only module
of the package that imports mlflow.

- Store: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<repo root>/mlflow.db`` with
  artifacts in ``<repo root>/mlartifacts``. Inside a ``dvc exp run --temp/--queue`` copy
  (``<repo>/.dvc/tmp/exps/...``) the repo root is the original checkout, so queued runs land
  in the same store as ``dvc repro``.
- One run per model per execution of train@<model>; its id is kept in models/<model>/ and
  evaluate@ and plot reopen that run.
- On a tracking server (``MLFLOW_TRACKING_URI=http://...``, ``make server``) the server
  stores the artifacts (proxied); an unreachable server is one TrackingError line naming it.
- Tags: git commit (``mlflow.source.git.commit``) and dirty flag (DVC's own outputs do not
  count), DVC hash of the prepared dataset, family, preset, DVC experiment name, and
  ``repro_id``, shared by every run of one ``dvc repro`` invocation. The prepared splits are
  the run's MLflow datasets (digest: their DVC md5).
- Model Registry: train@<model> registers its model (named after the preset) as a new
  version of registered model ``<model>``; evaluate@ tags it with ``test_accuracy``; plot
  moves alias ``champion`` to it only when it beats the champion.
- Models are logged in their flavor with a signature and an input example: keras and custom
  families in the ``mlflow.tensorflow`` flavor (``mlflow.keras.log_model`` with an input
  example fails on MLflow 3.17 with Keras 3.15), with the ``pipeline`` package shipped beside
  the model (``code_paths``) and ``pipeline.models.mlflow_keras`` (named by the keras
  family) as its ``keras_module``, so that MLflow's own loaders load the custom layers in
  any process; the scratch family as a pyfunc wrapping its ``model.npz``. Requirements are
  pinned from the installed versions rather than inferred (inference loads the model again
  in a subprocess).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import numpy as np
import yaml
from filelock import FileLock
from mlflow.models import infer_signature

from pipeline.core import config
from pipeline.core.dvc_outs import lock_stages

T = TypeVar("T")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole pipeline package
MODEL_ARTIFACT = "model"
log = logging.getLogger(__name__)


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
            return exp.experiment_id
        try:
            return mlflow.create_experiment(experiment, artifact_location=location)
        except Exception:
            exp = mlflow.get_experiment_by_name(experiment)  # created meanwhile by another run
            if exp is None:
                raise
            return exp.experiment_id

    with reachable():
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
    for out in lock_stages(root).get(f"prepare@{dataset}", {}).get("outs", []):
        return out.get("md5")
    return None


def run_tags(model: str, family: str, dataset: str, root: Path = config.ROOT) -> dict[str, str]:
    commit = _git(root, "rev-parse", "HEAD")
    status = git_status(root)
    tags = {
        "preset": model,
        "family": family,
        "dataset": dataset,
        "mlflow.source.git.commit": commit or "unknown",
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
    """A new run of the contract for one execution of train@<model>; yields its id.
    Runs of ``model`` left RUNNING by a killed process are marked KILLED first."""
    with reachable():
        kill_orphan_runs(model)
        tags = run_tags(model, family, dataset, root) | process_tags()
        run = mlflow.start_run(run_name=model, tags=tags)
    with reachable(), _ended(run.info.run_id):
        yield run.info.run_id


@contextmanager
def reopen(run_id: str) -> Iterator[str]:
    """Add to an existing run (evaluate@ and plot add to the training's run); the run's
    process tags name this process while it is open."""
    with reachable():
        try:
            preset = mlflow.MlflowClient().get_run(run_id).data.tags.get("preset")
        except mlflow.exceptions.MlflowException:
            raise RuntimeError(
                f"MLflow run {run_id} is not in the store {mlflow.get_tracking_uri()}; "
                "rerun the training (dvc repro -f train@<model>) to log a new one"
            ) from None
        if preset:
            kill_orphan_runs(preset)
        mlflow.start_run(run_id=run_id)
        with_retry(lambda: mlflow.set_tags(process_tags()))
    with reachable(), _ended(run_id):
        yield run_id


@contextmanager
def _ended(run_id: str) -> Iterator[None]:
    """End the active run FINISHED, FAILED on an error, KILLED on Ctrl-C or SIGTERM (the
    stage runner turns SIGTERM into KeyboardInterrupt); mlflow.start_run's own context
    says FAILED for all of them."""
    try:
        yield
    except KeyboardInterrupt:
        _end(run_id, "KILLED")
        raise
    except BaseException:
        _end(run_id, "FAILED")
        raise
    _end(run_id, "FINISHED")


def _end(run_id: str, status: str) -> None:
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        with_retry(lambda: mlflow.end_run(status))


# --------------------------------------------------------------------------- orphans

PID_TAG, HOST_TAG, BOOT_TAG, START_TAG = (
    "pipeline.pid",
    "pipeline.host",
    "pipeline.boot_id",
    "pipeline.proc_start",
)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_tags() -> dict[str, str]:
    """Who holds a run open: pid, its start time (pids are reused), host and boot id."""
    pid = os.getpid()
    return {
        PID_TAG: str(pid),
        HOST_TAG: socket.gethostname(),
        BOOT_TAG: _boot_id(),
        START_TAG: _proc_start(pid) or "",
    }


def process_gone(tags: dict[str, str]) -> bool:
    """True when the process the tags name surely no longer runs: same host, and either
    another boot or no process with that pid and start time. Runs of other hosts, or
    without the tags, are never judged gone."""
    pid = tags.get(PID_TAG, "")
    if not pid.isdigit() or tags.get(HOST_TAG) != socket.gethostname():
        return False
    if tags.get(BOOT_TAG) and tags.get(BOOT_TAG) != _boot_id():
        return True
    start = _proc_start(int(pid))
    return start is None or (bool(tags.get(START_TAG)) and start != tags.get(START_TAG))


def kill_orphan_runs(preset: str) -> list[str]:
    """Mark KILLED the runs of ``preset`` in the active experiment that are still RUNNING
    although their process is gone (SIGKILL, power loss); one log line each."""
    client = mlflow.MlflowClient()
    exp_id = _active_experiment()
    runs = with_retry(
        lambda: client.search_runs(
            [exp_id],
            filter_string=f"tags.preset = '{preset}' and attributes.status = 'RUNNING'",
        )
    )
    killed = []
    for run in runs:
        tags = run.data.tags
        if process_gone(tags):
            with_retry(lambda r=run: client.set_terminated(r.info.run_id, "KILLED"))
            killed.append(run.info.run_id)
            log.warning(
                "marked MLflow run %s of %s KILLED: its process %s on %s is gone",
                run.info.run_id,
                preset,
                tags.get(PID_TAG),
                tags.get(HOST_TAG),
            )
    return killed


def _active_experiment() -> str:
    from mlflow.tracking.fluent import _get_experiment_id

    return _get_experiment_id()


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


@contextmanager
def _no_global_custom_objects() -> Iterator[None]:
    """Hide Keras' registry of custom objects while MLflow saves a model: MLflow cloudpickles
    whatever it holds into ``global_custom_objects.cloudpickle``, which would run code when
    loaded. The ``.keras`` file names each custom layer by its registered import path, which
    is how ``load_model_file`` resolves it."""
    import keras

    registry = keras.saving.get_custom_objects()
    saved = dict(registry)
    registry.clear()
    try:
        yield
    finally:
        registry.update(saved)


class _KerasFlavor:
    """``mlflow.tensorflow`` that names ``keras_module`` as the model's Keras module: MLflow's
    own loaders import it and call its ``models.load_model``, where ``tensorflow.keras`` (the
    default) finds no custom layer the loading process has not imported itself."""

    def __init__(self, keras_module: str):
        self.keras_module = keras_module

    def save_model(self, path, mlflow_model, **kwargs) -> None:
        mlflow.tensorflow.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        conf = mlflow_model.flavors["tensorflow"]
        data = Path(path) / conf["data"]
        (data / "keras_module.txt").write_text(self.keras_module)  # read by mlflow.pyfunc
        conf["keras_module"] = self.keras_module  # read by mlflow.tensorflow.load_model
        mlflow_model.save(str(Path(path) / "MLmodel"))


def log_keras_model(model, example: np.ndarray, keras_module: str) -> None:
    """Log a Keras model to the active run (tensorflow flavor, ``data/model.keras``), with no
    pickle of custom objects; MLflow's loaders load it through ``keras_module`` (a module of
    the ``pipeline`` package, which is logged with the model)."""
    from mlflow.models import Model

    proba = np.asarray(model.predict(example, verbose=0))
    with _no_global_custom_objects():
        Model.log(
            artifact_path=None,
            name=model_name(),
            flavor=_KerasFlavor(keras_module),
            flavor_name="mlflow.tensorflow",
            model=model,
            signature=infer_signature(example, proba),
            input_example=example,
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=_pins("tensorflow-cpu", "keras", "numpy"),
            metadata={SAFE_FORMAT_KEY: "keras"},
        )


def log_pyfunc_model(
    code_file: Path, artifacts: dict[str, Path], example: np.ndarray, proba: np.ndarray
) -> None:
    """Log a pyfunc model defined in ``code_file`` (models-from-code: no pickle of the class)
    with its ``artifacts`` to the active run."""
    mlflow.pyfunc.log_model(
        name=model_name(),
        python_model=str(code_file),
        artifacts={k: str(v) for k, v in artifacts.items()},
        signature=infer_signature(example, proba),
        input_example=example,
        code_paths=[str(PACKAGE_DIR)],
        pip_requirements=_pins("numpy"),
        metadata={SAFE_FORMAT_KEY: "npz"},
    )


SAFE_FORMAT_KEY = "pipeline_format"  # MLmodel metadata: the pickle-free file format logged
KERAS_FILE = "model.keras"  # what mlflow.tensorflow writes under the flavor's data folder
PICKLE_NAMES = (".pkl", ".pickle", ".cloudpickle")


class PickleRefused(RuntimeError):
    """Loading the model would unpickle (run) code the model's author chose."""


@dataclass(frozen=True)
class SafeModelFile:
    """A model of the project's families inside an MLflow model folder."""

    folder: Path  # the local MLflow model folder
    format: str  # "keras" (a .keras file, loaded in safe mode) or "npz" (allow_pickle=False)
    path: Path


def local_model_folder(uri: str) -> Path:
    """The MLflow model at ``uri`` (``runs:/``, ``models:/``, artifact URI or a local model
    folder) as a local folder; downloads from the project store as needed."""
    if Path(uri).is_dir():
        return Path(uri)
    mlflow.set_tracking_uri(tracking_uri())
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))


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
    pickles = sorted(p.name for p in folder.rglob("*") if p.name.endswith(PICKLE_NAMES))
    what = f" ({', '.join(pickles)})" if pickles else ""
    raise PickleRefused(
        f"{where}: not a model of the project's families (.keras or .npz); loading it would "
        f"unpickle code{what}. Pass --trust-pickle only if you trust where it came from"
    )


def load_pyfunc(uri: str, trust_pickle: bool = False):
    """Any MLflow model through ``mlflow.pyfunc`` (which may unpickle, i.e. run, code the
    model's author chose): only with ``trust_pickle``."""
    if not trust_pickle:
        raise PickleRefused(f"{uri}: loading it through mlflow.pyfunc needs --trust-pickle")
    mlflow.set_tracking_uri(tracking_uri())
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
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


# --------------------------------------------------------------------------- reading runs
# Used by the two-run comparison (pipeline/compare/cli.py): runs are named by id, by
# preset (the newest run of it) or by preset@<DVC experiment name>, and read from whatever
# store tracking_uri() names, so a report can be rebuilt from a tracking server alone.

RUN_ID_LENGTH = 32  # MLflow run ids: 32 hexadecimal digits


class RunLookupError(LookupError):
    """A run spec names no run of the store; the message says which and where."""


def read_client():
    """A client of the project store that never creates one: an embedded sqlite store
    that does not exist is an error, not a new empty database."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise RunLookupError(
            f"no MLflow store at {uri[len('sqlite:///') :]} (run `make repro` first, or set "
            "MLFLOW_TRACKING_URI to the team's tracking server)"
        )
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def _is_run_id(spec: str) -> bool:
    return len(spec) == RUN_ID_LENGTH and all(c in "0123456789abcdef" for c in spec.lower())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_run(spec: str):
    """The run a spec names: ``<run id>``, ``<preset>`` (its newest run) or
    ``<preset>@<DVC experiment name>`` (its newest run with that ``dvc_exp_name`` tag).
    Returns an ``mlflow.entities.Run``; raises RunLookupError naming the spec."""
    client = read_client()
    uri = tracking_uri()
    try:
        return _find_run(client, spec, uri)
    except mlflow.exceptions.MlflowException as exc:  # e.g. a tracking server that is down
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunLookupError(f"{spec}: cannot read the MLflow store {uri}: {first}") from None


def _find_run(client, spec: str, uri: str):
    if _is_run_id(spec):
        try:
            return client.get_run(spec.lower())
        except mlflow.exceptions.MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc.error_code):
                raise
            raise RunLookupError(f"{spec}: no such run in the MLflow store {uri}") from None
    preset, _, exp_name = spec.partition("@")
    if not preset:
        raise RunLookupError(f"{spec!r}: expected a run id, <preset> or <preset>@<dvc exp name>")
    filters = [f"tags.preset = {_quote(preset)}"]
    if exp_name:
        filters.append(f"tags.dvc_exp_name = {_quote(exp_name)}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string=" and ".join(filters),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        what = f"preset {preset!r}" + (f" in DVC experiment {exp_name!r}" if exp_name else "")
        raise RunLookupError(f"{spec}: no run of {what} in the MLflow store {uri}")
    return runs[0]


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged value of ``key``, in step order."""
    client = mlflow.MlflowClient()
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def download_run_artifact(run_id: str, artifact: str, dest: Path) -> Path | None:
    """Copy one artifact file of a run into ``dest``; None when the run has no such file."""
    client = mlflow.MlflowClient()
    folder, _, name = artifact.rpartition("/")
    if name not in {Path(f.path).name for f in client.list_artifacts(run_id, folder or None)}:
        return None
    dest.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one file: no bar
    return Path(client.download_artifacts(run_id, artifact, str(dest)))


def log_artifact_to_run(run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Add a file to a finished run without reopening it (its status stays as it was)."""
    mlflow.MlflowClient().log_artifact(run_id, str(path), artifact_path=artifact_path)


# --------------------------------------------------------------------------- tracking server


class TrackingError(RuntimeError):
    """The tracking store cannot be reached; the message names its URI."""


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


@contextmanager
def reachable() -> Iterator[None]:
    """Turn "the tracking server does not answer" into one TrackingError line naming it."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        why = _unreachable(exc)
        if why is None:
            raise
        uri = mlflow.get_tracking_uri()
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


# --------------------------------------------------------------------------- run contract


def git_status(root: Path = config.ROOT) -> str | None:
    """``git status --porcelain`` of tracked files, without DVC's own outputs: dvc.lock, the
    outs it lists and the .gitignore files DVC writes beside them change during every
    `dvc repro` and do not make the tree dirty. None outside git."""
    excluded = {"dvc.lock"}
    try:
        stages = lock_stages(root)
    except yaml.YAMLError:
        stages = {}
    for stage in stages.values():
        for out in stage.get("outs", []) or []:
            path = Path(str(out.get("path", "")))
            if str(path) not in ("", "."):
                excluded |= {str(path), str(path.parent / ".gitignore")}
    specs = [f":(exclude,top){p}" for p in sorted(excluded)]
    return _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *specs)


def model_name() -> str:
    """The name of the model logged to the active run: its preset (``runs:/<id>/<preset>``)."""
    run = mlflow.active_run()
    return (run.data.tags.get("preset") if run else None) or MODEL_ARTIFACT


def file_md5(path: Path) -> str:
    """md5 of a file's bytes: the hash DVC records for it (DVC 3 does no newline magic)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log_prepared_inputs(dataset: str, data_dir: Path, root: Path = config.ROOT) -> None:
    """The prepared splits as the run's MLflow datasets (the "Datasets" column of the UI):
    name ``<dataset>/<split>``, source the split's path in the checkout, digest its DVC md5,
    context the split; the folder's DVC hash rides along as a tag."""
    from mlflow.data.dataset_source_registry import get_registered_sources
    from mlflow.data.meta_dataset import MetaDataset

    # The local-file source class, built directly: resolving a path by name
    # (resolve_dataset_source) warns "can be interpreted in multiple ways" on every run, as
    # MLflow 3.17 registers LocalArtifactDatasetSource twice.
    local = next(s for s in get_registered_sources() if s._get_source_type() == "local")

    folder_md5 = dataset_hash(dataset, root) or ""
    for split in config.SPLITS:
        path = config.split_file(data_dir, split)
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError:
            rel = path
        ds = MetaDataset(
            source=local(str(rel)),
            name=f"{dataset}/{split}",
            digest=file_md5(path),
        )
        tags = {"dvc_md5": folder_md5} if folder_md5 else None
        with_retry(lambda ds=ds, split=split, tags=tags: mlflow.log_input(ds, split, tags))


def log_images(folder: Path, names: tuple[str, ...] = ("confusion_matrix", "curves")) -> None:
    """Figures at the run's top level (``<name>.png``) and as MLflow images (key ``<name>``),
    which the UI's run comparison shows side by side; nested artifacts it cannot reach."""
    from PIL import Image

    for name in names:
        path = folder / f"{name}.png"
        if not path.is_file():
            continue
        mlflow.log_artifact(str(path))
        with Image.open(path) as img:
            # synchronous: MLflow's default queues the image's tag, and end_run then waits
            # about a second for its logging thread (measured in evaluate@)
            mlflow.log_image(img.convert("RGB"), key=name, step=0, synchronous=True)


# --------------------------------------------------------------------------- model registry

CHAMPION = "champion"  # the alias of each registered model's best version by test accuracy
log = logging.getLogger(__name__)


def register_model(preset: str, dataset: str, root: Path = config.ROOT) -> str:
    """Register the model just logged to the active run as a new version of the registered
    model ``<preset>``, tagged with the preset, git commit and DVC hash of its data."""
    logged = mlflow.last_logged_model()
    if logged is None:
        raise TrackingError(f"{preset}: no model was logged to register")
    tags = {
        "preset": preset,
        "git_commit": _git(root, "rev-parse", "HEAD") or "unknown",
        "dataset_dvc_md5": dataset_hash(dataset, root) or "unknown",
    }
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
    for stage in lock_stages(root).values():
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
    with reachable():
        exists = run_exists(run_id)
    if exists:
        with reopen(run_id):
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
    status = git_status(root)
    tags = {
        "run_kind": name,
        "mlflow.source.git.commit": commit or "unknown",
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
    with reachable():
        run = mlflow.start_run(run_name=name, tags=tags | process_tags())
    with reachable(), _ended(run.info.run_id):
        yield run.info.run_id
