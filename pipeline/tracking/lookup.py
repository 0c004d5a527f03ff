"""Reading runs of the store: by id, preset or preset@<DVC experiment name>, their metrics,
params and artifacts, and the run behind a model URI. Used by the two-run comparison
(pipeline/compare/cli.py) and predict (pipeline/predict/cli.py); runs are read from whatever
store tracking_uri() names, so a report can be rebuilt from a tracking server alone."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

from pipeline.tracking.store import tracking_uri

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


def run_params_and_tags(run_id: str) -> tuple[dict[str, str], dict[str, str]]:
    run = mlflow.MlflowClient().get_run(run_id)
    return dict(run.data.params), dict(run.data.tags)


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
