"""The servable model of each preset, and the MLflow side of ``python -m pipeline.serve``.

train@<preset> logs, beside the model itself, a pyfunc that does the whole inference from
picture files (pipeline/serve/flavor.py: decode, ``pipeline.predict.preprocess.to_mnist``, the
network, the class map) and registers it as ``<preset>-serving``; ``promote`` moves
``<preset>-serving@champion`` to the version of the same training run whenever
``<preset>@champion`` moves. It is a registered model of its own, not a second flavour of
the preset's version: a version has one MLmodel and one signature, and the preset's is the
(N, 28, 28, 1) tensor that evaluate@, compare and MLflow's own loaders rely on; the serving
model's interface is different (PNG/JPEG bytes in, digits out), so it gets its own name,
and ``mlflow models serve -m models:/<preset>-serving@champion`` works as is.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Map

from pipeline.core import numenv
from pipeline.core.io import file_digest
from pipeline.tracking import digests, loading
from pipeline.tracking.models import PACKAGE_DIR
from pipeline.tracking.store import reachable, register_quietly, tracking_uri, with_retry

SUFFIX = "-serving"
ALIAS = "champion"
# The pyfunc's code: a path handed to MLflow (models-from-code), not an import, so tracking/
# does not depend on the serve/, predict/ and models/ code that file uses.
CODE_FILE = Path(__file__).resolve().parents[1] / "serve" / "flavor.py"
ARTIFACT = "serving"  # the logged model's name in its run: runs:/<run id>/serving
MODEL_FILES = ("model.keras", "model.npz", "model/ensemble.json")  # an ensemble: its folder
log = logging.getLogger(__name__)

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.binary, "image")]),
    outputs=Schema(
        [
            ColSpec(DataType.long, "digit"),
            ColSpec(DataType.double, "probability"),
            ColSpec(Map(DataType.double), "probabilities"),
        ]
    ),
    params=ParamSchema([ParamSpec("return_image", DataType.boolean, False)]),
)


class ServingError(RuntimeError):
    """No servable model, or one that may not be loaded; the message says which and why."""


def serving_name(preset: str) -> str:
    return f"{preset}{SUFFIX}"


def example_png(size: int = 200) -> bytes:
    """A photo-like picture of a "1": dark ink on white, ``size`` x ``size`` (the input
    example MLflow shows and checks at log time)."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (size, size), 255)
    pen = ImageDraw.Draw(img)
    w = max(2, size // 12)
    pen.line([(size * 0.5, size * 0.15), (size * 0.5, size * 0.85)], fill=0, width=w)
    pen.line([(size * 0.5, size * 0.15), (size * 0.38, size * 0.3)], fill=0, width=w)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def log_serving_model(preset: str, model_dir: Path, classes) -> str:
    """Log the serving pyfunc of the model saved in ``model_dir`` to the active run and
    register it as a new version of ``<preset>-serving``, tagged with the preset, the run
    and the numeric environment (``env.*``); returns the version."""
    model_file = next((model_dir / f for f in MODEL_FILES if (model_dir / f).is_file()), None)
    if model_file is None:
        raise ServingError(f"{model_dir}: no {' or '.join(MODEL_FILES)} to serve")
    if model_file.name == "ensemble.json":
        model_file = model_file.parent  # the folder: ensemble.json and the member files
    with tempfile.TemporaryDirectory() as tmp:
        classes_file = Path(tmp) / "classes.json"
        classes_file.write_text(json.dumps([int(c) for c in classes]))
        info = mlflow.pyfunc.log_model(
            name=ARTIFACT,
            python_model=str(CODE_FILE),
            artifacts={"model": str(model_file), "classes": str(classes_file)},
            code_paths=[str(PACKAGE_DIR)],
            signature=SIGNATURE,
            input_example=pd.DataFrame({"image": [example_png()]}),
            pip_requirements=[
                f"{d}=={version(d)}"
                for d in ("mlflow", "tensorflow-cpu", "keras", "numpy", "pillow", "scipy", "pandas")
            ],
            metadata={"serves": preset},
        )
    run = mlflow.active_run()
    tags = {"preset": preset, "run_id": run.info.run_id if run else ""}
    tags |= numenv.as_tags(numenv.probe())  # like the preset's version (registry.register_model)
    tags |= digests.record(info)  # the sha256 of every file, checked by local_model_folder
    with reachable():
        mv = with_retry(
            lambda: register_quietly(
                lambda: mlflow.register_model(info.model_uri, serving_name(preset), tags=tags)
            )
        )
    return str(mv.version)


def follow_champion(client, preset: str) -> str | None:
    """Point ``<preset>-serving@champion`` at the serving version logged by the run of
    ``<preset>@champion``; the version, or None when that run logged none (older runs)."""
    try:
        champ = client.get_model_version_by_alias(preset, ALIAS)
        found = client.search_model_versions(
            f"name = '{serving_name(preset)}' and run_id = '{champ.run_id}'"
        )
    except mlflow.exceptions.MlflowException:
        return None
    if not found:
        return None
    best = max(found, key=lambda v: int(v.version))
    if best.aliases is None or ALIAS not in best.aliases:
        client.set_registered_model_alias(serving_name(preset), ALIAS, best.version)
    return str(best.version)


# --------------------------------------------------------------------------- serving


def _client():
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.MlflowClient()


def best_served_preset() -> str:
    """The preset whose champion has the best ``test_accuracy`` tag, among those with a
    ``<preset>-serving@champion``."""
    client = _client()
    best, best_acc = None, -1.0
    with reachable():
        for rm in client.search_registered_models():
            if not rm.name.endswith(SUFFIX) or ALIAS not in (rm.aliases or {}):
                continue
            preset = rm.name[: -len(SUFFIX)]
            try:
                acc = float(client.get_model_version_by_alias(preset, ALIAS).tags["test_accuracy"])
            except (mlflow.exceptions.MlflowException, KeyError, ValueError):
                acc = 0.0
            if acc > best_acc:
                best, best_acc = preset, acc
    if best is None:
        raise ServingError(
            f"no <preset>{SUFFIX}@{ALIAS} in the store {tracking_uri()}: "
            "run `make repro` (train@ logs the serving models, plot promotes them)"
        )
    return best


def champion_version(name: str) -> str:
    """The version ``name@champion`` points at now."""
    client = _client()
    try:
        return str(client.get_model_version_by_alias(name, ALIAS).version)
    except mlflow.exceptions.MlflowException as exc:
        first = str(exc).strip().splitlines()[0]
        raise ServingError(f"{name}@{ALIAS}: not in the store {tracking_uri()} ({first})") from None


def load_serving(name: str, version: str):
    """Version ``version`` of serving model ``name`` as a pyfunc, its files checked by
    ``loading.local_model_folder`` against the digests recorded at logging. Loading it runs the
    model's logged code file, so that file must be this checkout's serve/flavor.py byte for
    byte (nothing else of the artifact runs: its ``code/pipeline`` is shadowed by the
    imported package); the network loads from its pickle-free file."""
    uri = f"models:/{name}/{version}"
    folder = loading.local_model_folder(uri)  # checks the sha256 digests when recorded
    conf = (folder / "MLmodel").read_text()
    code = folder / CODE_FILE.name
    if "model_code_path" not in conf or not code.is_file():
        raise ServingError(f"{uri}: not a serving model of this project (no {CODE_FILE.name})")
    if file_digest(code) != file_digest(CODE_FILE):
        raise ServingError(
            f"{uri}: its {CODE_FILE.name} differs from this checkout's; serve it from the "
            "commit that logged it, or retrain (train@ logs a new serving version)"
        )
    return mlflow.pyfunc.load_model(str(folder))


def scoring_app(model):
    """MLflow's FastAPI scoring app (/invocations, /ping, /health, /version) for ``model``."""
    from mlflow.pyfunc import scoring_server

    return scoring_server.init(model)


def publish(preset: str, model_dir: Path, classes, artifacts: Path | None = None) -> str:
    """Log and register the serving model of ``model_dir`` in a run of its own (experiment
    ``serving``, its artifacts under ``artifacts`` when it is new) and make it the champion;
    the version. For benchmarks and tests: train@ logs inside its training run instead."""
    client = _client()
    exp = client.get_experiment_by_name("serving")
    exp_id = (
        exp.experiment_id
        if exp is not None
        else client.create_experiment("serving", artifacts.as_uri() if artifacts else None)
    )
    with mlflow.start_run(experiment_id=exp_id, tags={"preset": preset}):
        version = log_serving_model(preset, Path(model_dir), classes)
    client.set_registered_model_alias(serving_name(preset), ALIAS, version)
    return version
