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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.predict.calibration import (  # noqa: F401  (re-exported: the names cli had)
    CALIBRATION_IMAGES,
    CALIBRATION_PERCENTILE,
    CALIBRATION_VERSION,
    DEFAULT_THRESHOLD,
    MIN_CALIBRATION_IMAGES,
    Threshold,
    calibrate,
)
from pipeline.predict.loading import (  # noqa: F401  (re-exported: the names cli had)
    BATCH,
    URI_SCHEMES,
    LoadedModel,
    ModelError,
    load_model,
    load_preset,
    load_uri,
    predict_arrays,
    run_classes,
)
from pipeline.predict.preprocess import IMAGE_SUFFIXES, ImageError, load_image, to_mnist


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
