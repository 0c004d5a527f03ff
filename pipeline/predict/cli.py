"""Predict digits in ordinary picture files with any trained model.

    python -m pipeline.predict --model keras_cnn photo.jpg scans/ [--json]
    python -m pipeline.predict --model runs:/<run id>/<preset> digit.png
    python -m pipeline.predict --model models:/<registered name>@<alias> digit.png

``--model`` is a preset of params.yaml (loaded from models/<preset>/ by its family), or an
MLflow model URI (``runs:/``, ``models:/``, or a local MLflow model folder) from the
project's tracking store. No model file is unpickled: the project's models load from their
``.keras`` (Keras safe mode) or ``.npz`` (``allow_pickle=False``) file inside the MLflow
model; any other MLflow model is refused unless ``--trust-pickle`` is given (then it loads
through ``mlflow.pyfunc``, which unpickles, i.e. runs, whatever its author saved).
Folders are walked for image files.
Every picture goes through ``pipeline.predict.preprocess.to_mnist``; model outputs are mapped back
to digits with the dataset's class map (``meta.json``, or the MLflow run's params).

Output: a first line ``# model: ...`` naming the model that answered (preset, registry name
and version for ``models:/``, MLflow run id), then one line a picture,
``path<TAB>digit<TAB>probability``; or, with ``--json``, a JSON list with those fields plus
``model`` (the same identity) and ``warning`` in every item. A picture whose top
probability is below the model's unknown-digit threshold gets a ``warning:`` line on stderr
(it may show a digit the model was not trained on): the 1st percentile of the model's top
probability over the validation images it classifies right (``data/prepared/<dataset>/
val.npz``, computed once, kept in ``data/cache/predict/``), else ``DEFAULT_THRESHOLD``; the
warning names the threshold and where it came from. A file that cannot be read gets an
``error:`` line on stderr and the others are still predicted; the exit code is 1 when any
file failed, 2 when the model cannot be loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core import config
from pipeline.predict.preprocess import IMAGE_SUFFIXES, ImageError, load_image, to_mnist

URI_SCHEMES = ("runs:/", "models:/", "file:", "mlflow-artifacts:", "s3:", "gs:", "http")
BATCH = 1024  # pictures per predict call
# Unknown-digit threshold: this percentile of the top probability over the validation images
# a model classifies right (at most CALIBRATION_IMAGES of them, a fixed sample)...
CALIBRATION_PERCENTILE = 1.0
CALIBRATION_IMAGES = 2000
MIN_CALIBRATION_IMAGES = 100  # fewer right answers than this: the default instead
# ... or, when the model's validation split is not here, this fixed value.
DEFAULT_THRESHOLD = 0.8
CALIBRATION_VERSION = 1  # part of the cache key: bump when the recipe changes


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


@dataclass(frozen=True)
class Prediction:
    path: Path
    digit: int
    probability: float
    probabilities: dict[int, float]
    warning: str | None = None  # the picture may show a digit the model does not know

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "digit": self.digit,
            "probability": self.probability,
            "probabilities": {str(d): p for d, p in self.probabilities.items()},
            "warning": self.warning,
        }


# --------------------------------------------------------------------------- models


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
    family = families.get("keras" if found.format == "keras" else "scratch")
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


# --------------------------------------------------------------------------- files


def _walk(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files under ``folder`` (sorted; hidden files and links to folders skipped),
    and the (path, message) of each subfolder it could not list and each link it could not
    follow (a loop, a missing target)."""
    files: list[Path] = []
    errors: list[tuple[Path, str]] = []

    def unreadable(exc: OSError) -> None:
        errors.append((Path(exc.filename or folder), exc.strerror or str(exc)))

    for top, _dirs, names in os.walk(folder, onerror=unreadable):
        for name in names:
            f = Path(top) / name
            if name.startswith("."):
                continue
            try:
                f.stat()  # follows links: ELOOP, ENOENT
            except OSError as exc:
                what = "link" if f.is_symlink() else "file"
                errors.append((f, f"cannot read this {what}: {exc.strerror or exc}"))
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                files.append(f)
    return sorted(files), sorted(errors)


def collect(args: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to read: files as given, folders walked (sorted) for image suffixes.
    Returns the files and the (path, message) of arguments that yield none and of files,
    links or subfolders in a folder that could not be read."""
    files: list[Path] = []
    errors: list[tuple[Path, str]] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found, unread = _walk(p)
            errors.extend(unread)
            if not found:
                errors.append((p, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder"))
            files.extend(found)
        elif p.exists() or p.is_symlink():
            files.append(p)
        else:
            errors.append((p, "no such file or directory"))
    seen: set[Path] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    return unique, errors


def read_pictures(paths: Sequence[Path]) -> tuple[list[Path], np.ndarray, list[tuple[Path, str]]]:
    """Read and preprocess each file; the readable ones, their (N, 28, 28, 1) arrays and
    the (path, message) of the others."""
    ok: list[Path] = []
    arrays: list[np.ndarray] = []
    errors: list[tuple[Path, str]] = []
    for path in paths:
        try:
            arrays.append(to_mnist(load_image(path)))
            ok.append(path)
        except ImageError as exc:
            errors.append((path, str(exc)))
        except MemoryError:
            errors.append((path, "out of memory while decoding the image"))
    x = np.stack(arrays) if arrays else np.zeros((0, 28, 28, 1), np.float32)
    return ok, x, errors


def predict_arrays(loaded: LoadedModel, x: np.ndarray) -> np.ndarray:
    """(N, 28, 28, 1) float32 -> (N, k) probabilities, in batches."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, 28, 28, 1)
    parts = [loaded.proba(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])


def digits_of(loaded: LoadedModel, k: int) -> tuple[int, ...]:
    """Digit of each of the ``k`` outputs; output indices when the class map is unknown or
    does not fit (with a note)."""
    if loaded.classes is not None and len(loaded.classes) == k:
        return loaded.classes
    if loaded.classes is not None:
        loaded.notes.append(
            f"class map {list(loaded.classes)} does not fit {k} outputs; printing output indices"
        )
    elif k != 10:
        loaded.notes.append(f"class map unknown for {k} outputs; printing output indices")
    loaded.classes = tuple(range(k))
    return loaded.classes


def unknown_digit_warning(loaded: LoadedModel, digit: int, probability: float) -> str | None:
    """The warning for a picture whose top probability is below the model's threshold."""
    t = loaded.threshold
    if t is None or probability >= t.value:
        return None
    known = ", ".join(str(d) for d in loaded.classes or ())
    return (
        f"top probability {probability:.2f} (digit {digit}) is below {t.value:.2f}, {t.source}: "
        f"it may not be one of the digits this model knows ({known})"
    )


def predict_files(
    loaded: LoadedModel, args: Iterable[str | Path]
) -> tuple[list[Prediction], list[tuple[Path, str]]]:
    """Predict every picture in ``args`` (files or folders); (predictions, errors). Each
    prediction carries a warning when ``loaded.threshold`` is set and its top probability
    is below it."""
    files, errors = collect(args)
    ok, x, bad = read_pictures(files)
    errors += bad
    if not ok:
        return [], errors
    proba = predict_arrays(loaded, x)
    digits = digits_of(loaded, proba.shape[1])
    preds = []
    for path, p in zip(ok, proba, strict=True):
        i = int(np.argmax(p))
        digit, top = int(digits[i]), float(p[i])
        preds.append(
            Prediction(
                path=path,
                digit=digit,
                probability=top,
                probabilities={int(d): float(v) for d, v in zip(digits, p, strict=True)},
                warning=unknown_digit_warning(loaded, digit, top),
            )
        )
    return preds, errors


# --------------------------------------------------------------------------- calibration


def calibrate(loaded: LoadedModel, root: Path | None = None, say=None) -> Threshold:
    """The model's unknown-digit threshold (also set on ``loaded``): the
    ``CALIBRATION_PERCENTILE``th percentile of its top probability over the validation
    images (``data/prepared/<dataset>/val.npz``, a fixed sample of at most
    ``CALIBRATION_IMAGES``) it classifies right. Kept in ``data/cache/predict/`` under the
    sha256 of the model file and of the split; ``DEFAULT_THRESHOLD`` when the split is not
    here, does not fit the model, or too few images are right. ``say`` gets a progress line
    before a computation."""
    root = Path(root) if root is not None else config.ROOT
    try:
        loaded.threshold = _calibrate(loaded, root, say)
    except Exception as exc:  # an unreadable split, a model that fails on it: still predict
        loaded.threshold = _default(f"calibration failed: {_first_line(exc)}")
    return loaded.threshold


def _ordinal(x: float) -> str:
    n = f"{x:g}"
    if not n.isdigit() or n.endswith(("11", "12", "13")):
        return f"{n}th"
    return n + {"1": "st", "2": "nd", "3": "rd"}.get(n[-1], "th")


def _default(why: str) -> Threshold:
    return Threshold(DEFAULT_THRESHOLD, f"the fixed default ({why})")


def _calibrate(loaded: LoadedModel, root: Path, say) -> Threshold:
    from pipeline.core.io import atomic_write, file_digest

    if not loaded.dataset:
        return _default("the model's dataset is unknown")
    split = config.split_file(config.prepared_dir(loaded.dataset, root), "val")
    try:
        where = split.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        where = str(split)
    if not split.is_file():
        return _default(f"no validation split {where} here to calibrate on")
    cache = None
    if loaded.model_file is not None:
        key = f"v{CALIBRATION_VERSION}-{file_digest(loaded.model_file)[:16]}"
        cache = config.cache_dir(root) / "predict" / f"{key}-{file_digest(split)[:16]}.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            kept = json.loads(cache.read_text())
            return Threshold(float(kept["value"]), str(kept["source"]))
    if say is not None:
        say(f"calibrating the unknown-digit threshold on {where} (once for this model)")
    with np.load(split, allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    if len(y) > CALIBRATION_IMAGES:
        keep = np.sort(np.random.default_rng(0).choice(len(y), CALIBRATION_IMAGES, replace=False))
        x, y = x[keep], y[keep]
    proba = predict_arrays(loaded, x)
    if proba.ndim != 2 or len(y) == 0 or proba.shape[1] <= int(y.max()):
        return _default(f"{where} has labels the model's {proba.shape[-1]} outputs do not cover")
    right = proba.argmax(axis=1) == y
    if int(right.sum()) < MIN_CALIBRATION_IMAGES:
        return _default(f"only {int(right.sum())} of {len(y)} images of {where} classified right")
    value = float(np.percentile(proba.max(axis=1)[right], CALIBRATION_PERCENTILE))
    threshold = Threshold(
        round(value, 6),
        f"the {_ordinal(CALIBRATION_PERCENTILE)} percentile of its top probability over the "
        f"{int(right.sum())} images of {where} it classifies right",
    )
    if cache is not None:
        with contextlib.suppress(OSError):
            atomic_write(cache, json.dumps(threshold.to_json(), indent=2) + "\n")
    return threshold


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to stdout (Python's and the C libraries', e.g. TensorFlow's
    or MLflow's progress) to stderr, so that stdout holds only the predictions."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (embedded interpreters): Python level only
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.predict",
        description="Predict the digit in each picture (files or folders of images).",
    )
    ap.add_argument(
        "--model",
        required=True,
        help="preset of params.yaml, runs:/<run id>/<preset>, or models:/<name>@<alias>",
    )
    ap.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    ap.add_argument("--json", action="store_true", help="print a JSON list")
    ap.add_argument(
        "--trust-pickle",
        action="store_true",
        help="also load MLflow models that only load by unpickling (this runs code the "
        "model's author chose); the project's own models never need it",
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line a file

    with stdout_to_stderr():
        try:
            loaded = load_model(args.model, args.trust_pickle)
        except ModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        calibrate(loaded, say=lambda line: print(line, file=sys.stderr, flush=True))
        preds, errors = predict_files(loaded, args.paths)
    for note in loaded.notes:
        print(f"warning: {note}", file=sys.stderr)
    for path, msg in errors:
        print(f"error: {path}: {msg}", file=sys.stderr)
    if args.json:
        model = loaded.identity()
        print(json.dumps([p.to_json() | {"model": model} for p in preds], indent=2))
        for p in preds:
            if p.warning:
                print(f"warning: {p.path}: {p.warning}", file=sys.stderr)
    else:
        print(f"# {loaded.describe()}", flush=True)
        for p in preds:
            print(f"{p.path}\t{p.digit}\t{p.probability:.4f}", flush=True)
            if p.warning:
                print(f"warning: {p.path}: {p.warning}", file=sys.stderr, flush=True)
    return 1 if errors or not preds else 0


if __name__ == "__main__":
    sys.exit(main())
