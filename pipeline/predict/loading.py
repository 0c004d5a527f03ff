"""Finding, loading and checking the model that ``python -m pipeline.predict`` answers with.

A preset of params.yaml loads from models/<preset>/ through its family; an MLflow model URI
or folder of the project's tracking store loads from its pickle-free file (``.keras`` under
Keras safe mode, ``.npz`` with ``allow_pickle=False``), anything else only through
``mlflow.pyfunc`` with ``trust_pickle``. ``LoadedModel`` carries the model's class map and
identity (preset, registry version, run id)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core import config

URI_SCHEMES = ("runs:/", "models:/", "file:", "mlflow-artifacts:", "s3:", "gs:", "http")
BATCH = 1024  # pictures per predict call


class ModelError(RuntimeError):
    """The model cannot be found or loaded; the message says which and why."""


@dataclass(frozen=True)
class Threshold:
    """Top probability under which a picture may show a digit the model does not know."""

    value: float
    source: str  # where the value came from, said in every warning

    def to_json(self) -> dict:
        return {"value": self.value, "source": self.source}


@dataclass
class LoadedModel:
    """A model ready to predict: (N, 28, 28, 1) float32 -> (N, k) probabilities, and which
    model it is."""

    spec: str  # what the user passed to --model
    proba: Callable[[np.ndarray], np.ndarray]
    classes: tuple[int, ...] | None = None  # digit of each output index; None: unknown
    dataset: str | None = None
    notes: list[str] = field(default_factory=list)  # warnings for stderr
    preset: str | None = None  # params.yaml preset (the run's ``preset`` tag for a URI)
    run_id: str | None = None  # the MLflow run that trained it (None: unknown)
    registered: str | None = None  # registered model name, for a models:/ URI
    version: str | None = None  # its registry version
    alias: str | None = None  # the alias the URI named (champion, challenger)
    source: str | None = None  # models/<preset>/ for a preset; the URI otherwise
    model_file: Path | None = None  # the weights file (its sha256 keys the calibration)
    threshold: Threshold | None = None  # set by ``calibrate``

    def identity(self) -> dict:
        """Which model answers: the ``model`` field of every ``--json`` item."""
        return {
            "spec": self.spec,
            "preset": self.preset,
            "registered_model": self.registered,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "source": self.source,
            "unknown_digit_threshold": self.threshold.to_json() if self.threshold else None,
        }

    def describe(self) -> str:
        """One line: preset, registry version (for a models:/ URI), run id, where from."""
        parts = [self.preset or self.spec]
        if self.version is not None:
            alias = f" (alias {self.alias})" if self.alias else ""
            parts.append(f"registry {self.registered} version {self.version}{alias}")
        parts.append(f"run {self.run_id}" if self.run_id else "run unknown")
        origin = self.source or self.spec
        if origin != parts[0]:
            parts.append(f"from {origin}")
        return "model: " + ", ".join(parts)


def _meta_classes(dataset: str | None) -> tuple[int, ...] | None:
    if not dataset:
        return None
    meta = config.prepared_dir(dataset) / "meta.json"
    if not meta.is_file():
        return None
    try:
        return tuple(int(c) for c in json.loads(meta.read_text())["classes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_preset(name: str, folder: Path | None = None, params=None) -> LoadedModel:
    """models/<name>/ (or ``folder``) through the family module of preset ``name``; classes
    from meta.json or params.yaml (``params``: already loaded)."""
    from pipeline.core import params as params_mod
    from pipeline.models import family as families

    try:
        params = params if params is not None else params_mod.load()
    except params_mod.ParamsError as exc:
        raise ModelError(str(exc)) from None
    if name not in params.models:
        raise ModelError(f"{name!r} is not a preset of params.yaml ({', '.join(params.models)})")
    mp = params.models[name]
    folder = Path(folder) if folder is not None else config.model_dir(name)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no trained model; run `dvc repro train@{name}` first")
    family = families.get(mp.family)
    try:
        model = family.load(folder)
    except Exception as exc:  # missing file, bad archive, unknown layer: cannot load
        raise ModelError(f"{folder}: cannot load the {mp.family} model: {exc}") from None
    classes = _meta_classes(mp.dataset) or tuple(params.datasets[mp.dataset].classes)
    model_file = folder / getattr(family, "MODEL_FILE", "")
    return LoadedModel(
        spec=name,
        proba=_proba(family, model),
        classes=classes,
        dataset=mp.dataset,
        preset=name,
        run_id=_kept_run_id(folder),
        source=_shown(folder) + "/",
        model_file=model_file if model_file.is_file() else None,
    )


def _proba(family, model) -> Callable[[np.ndarray], np.ndarray]:
    """``family.predict_proba``, except that a Keras model is called directly (inference
    mode): ``Model.predict`` first builds a data pipeline and traces a function, 0.6 s of a
    run on a few pictures (dense_mlp, measured)."""
    if type(model).__module__.startswith("keras"):
        return lambda x: np.asarray(model(x, training=False), dtype=np.float32)
    return lambda x: family.predict_proba(model, x)


def _kept_run_id(folder: Path) -> str | None:
    """The MLflow run id train@ kept beside the model (models/<preset>/mlflow_run_id)."""
    try:
        return (folder / config.RUN_ID_FILE).read_text().strip() or None
    except OSError:
        return None


def _shown(path: Path) -> str:
    """``path`` relative to the project root when inside it (as users type it)."""
    path = Path(path)
    try:
        return path.resolve().relative_to(config.ROOT).as_posix()
    except ValueError:
        return str(path)


def run_classes(run_id: str) -> tuple[tuple[int, ...] | None, str | None]:
    """Class map and dataset of an MLflow run: tag ``dataset`` + its meta.json, else the
    logged params ``dataset.classes.<i>``."""
    from pipeline import tracking

    return _classes_of(*tracking.run_params_and_tags(run_id))


def _classes_of(
    params: dict[str, str], tags: dict[str, str]
) -> tuple[tuple[int, ...] | None, str | None]:
    dataset = tags.get("dataset")
    classes = _meta_classes(dataset)
    if classes is None:
        logged = {
            int(k.rsplit(".", 1)[1]): int(float(v))
            for k, v in params.items()
            if k.startswith("dataset.classes.") and k.rsplit(".", 1)[1].isdigit()
        }
        if logged and sorted(logged) == list(range(len(logged))):
            classes = tuple(logged[i] for i in range(len(logged)))
    return classes, dataset


def _to_array(out) -> np.ndarray:
    """pyfunc output (array, DataFrame, Series, dict of arrays, list) -> (N, k) float array."""
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if hasattr(out, "to_numpy"):
        out = out.to_numpy()
    a = np.asarray(out, dtype=np.float32)
    return a.reshape(len(a), -1)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _safe_proba(uri: str) -> tuple[Callable[[np.ndarray], np.ndarray], Path]:
    """A model of the project's families from its pickle-free file in the MLflow model
    (.keras under safe mode, .npz with allow_pickle=False), and that file; nothing of the
    model folder is executed or unpickled. Raises ``tracking.PickleRefused`` for any other
    model."""
    from pipeline import tracking
    from pipeline.models import family as families

    folder = tracking.local_model_folder(uri)
    found = tracking.safe_model_file(folder, uri)
    family = families.get(families.FORMATS[found.format])
    model = family.load_file(found.path)
    return _proba(family, model), found.path


def _pyfunc_proba(uri: str) -> Callable[[np.ndarray], np.ndarray]:
    """Any MLflow model through mlflow.pyfunc (may unpickle code): ``--trust-pickle`` only."""
    from pipeline import tracking

    with warnings.catch_warnings(record=True) as caught:
        model = tracking.load_pyfunc(uri, trust_pickle=True)
    for w in caught:  # MLflow's advice to the model's author (type hints) is not for users
        if "type hint" not in str(w.message):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return lambda x: _to_array(model.predict(x))


def _registry_ref(uri: str) -> tuple[str, str | None, str | None] | None:
    """(registered name, version, alias) a ``models:/<name>/<version>`` or
    ``models:/<name>@<alias>`` URI names; None for other URIs."""
    if not uri.startswith("models:/"):
        return None
    rest = uri[len("models:/") :].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, None, alias
    if "/" in rest:
        name, version = rest.split("/", 1)
        return name, version if version.isdigit() else None, None
    return None


def _source_run(loaded: LoadedModel) -> str | None:
    """Fill in the registry version of a models:/ URI; the run that logged the model."""
    from pipeline import tracking
    from pipeline.tracking.lookup import read_client

    uri = loaded.spec
    if not uri.startswith(("runs:/", "models:/")):
        return None  # a model folder or artifact URI: its run may be in another store
    ref = _registry_ref(uri)
    if ref is None or (ref[1] is None and ref[2] is None):
        return tracking.model_source_run(uri)
    loaded.registered, loaded.version, loaded.alias = ref
    client = read_client()
    if loaded.alias:
        mv = client.get_model_version_by_alias(loaded.registered, loaded.alias)
    else:
        mv = client.get_model_version(loaded.registered, loaded.version)
    loaded.version = str(mv.version)
    return mv.run_id


def _mlmodel_run_id(folder: Path) -> str | None:
    """The run id a local MLflow model folder's MLmodel names (shown, not looked up)."""
    import yaml

    try:
        conf = yaml.safe_load((folder / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    run_id = conf.get("run_id") if isinstance(conf, dict) else None
    return str(run_id) if run_id else None


def load_uri(uri: str, trust_pickle: bool = False) -> LoadedModel:
    """An MLflow model (``runs:/``, ``models:/``, a model folder) from the project store.
    Models of the project's families load from their pickle-free file; anything else needs
    ``trust_pickle`` (loading it may run code its author chose)."""
    from pipeline import tracking
    from pipeline.tracking.lookup import read_client

    model_file = None
    try:
        if uri.startswith(("runs:/", "models:/")):
            read_client()  # a store that does not exist is one line, and is not created
        try:
            proba, model_file = _safe_proba(uri)
        except tracking.PickleRefused:
            if not trust_pickle:
                raise
            proba = _pyfunc_proba(uri)
    except (tracking.PickleRefused, tracking.RunLookupError) as exc:
        raise ModelError(str(exc)) from None
    except Exception as exc:  # MlflowException, BadModelFile, OSError: all "cannot load"
        raise ModelError(f"{uri}: cannot load the MLflow model: {_first_line(exc)}") from None
    loaded = LoadedModel(spec=uri, proba=proba, source=uri, model_file=model_file)
    loaded.run_id = _mlmodel_run_id(Path(uri))
    try:
        loaded.run_id = _source_run(loaded) or loaded.run_id
        if loaded.run_id and uri.startswith(("runs:/", "models:/")):
            params, tags = tracking.run_params_and_tags(loaded.run_id)
            loaded.preset = tags.get("preset")
            loaded.classes, loaded.dataset = _classes_of(params, tags)
    except Exception as exc:  # the model loads; only its class map is missing
        loaded.notes.append(f"class map of {uri} not found ({_first_line(exc)})")
    return loaded


def load_model(spec: str, trust_pickle: bool = False) -> LoadedModel:
    """A preset name of params.yaml, an MLflow model URI, or a local MLflow model folder."""
    if spec.startswith(URI_SCHEMES) or (Path(spec) / "MLmodel").is_file():
        return load_uri(spec, trust_pickle)
    from pipeline.core import params as params_mod

    try:
        params = params_mod.load()
    except params_mod.ParamsError as exc:
        raise ModelError(str(exc)) from None
    if spec not in params.models:
        raise ModelError(
            f"{spec!r} is neither a preset of params.yaml ({', '.join(params.models)}) "
            "nor an MLflow model URI (runs:/<run id>/<preset>, models:/<name>@<alias>)"
        )
    return load_preset(spec, params=params)


def predict_arrays(loaded: LoadedModel, x: np.ndarray) -> np.ndarray:
    """(N, 28, 28, 1) float32 -> (N, k) probabilities, in batches."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, 28, 28, 1)
    parts = [loaded.proba(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])
