"""The model card of a registered version (pipeline/report/card.py): what the version, its
run and evaluate@'s artifacts hold, rendered and logged to the run as
``model_card/model_card.md`` beside the confusion thumbnails evaluate@ logged there, and
linked from the version's description. registry.py writes it when evaluate@ tags the
version with its test accuracy, and again each time the promotion gate records a decision
(plot's gate and ``python -m pipeline.promote``), so the card carries the decision with its
numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import mlflow

from pipeline.report import card
from pipeline.tracking import gate
from pipeline.tracking.store import with_retry

CARD_ARTIFACT = f"{card.CARD_DIR}/{card.CARD_FILE}"
PER_CLASS_ARTIFACT = "evaluation/tables/per_class.json"  # evaluate@'s per-class figures
LINK_LABEL = "Model card: "
DESCRIPTION_MARK = f"\n\n{LINK_LABEL}"
METRICS = (
    "accuracy",
    "accuracy_ci95_low",
    "accuracy_ci95_high",
    "loss",
    "macro_f1",
    "macro_precision",
    "macro_recall",
    "errors",
)


def card_uri(run_id: str) -> str:
    return f"runs:/{run_id}/{CARD_ARTIFACT}"


def ui_link(experiment_id: str, run_id: str) -> str:
    """The card in MLflow's UI (the run's artifact view), relative to the UI's address."""
    return f"#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{CARD_ARTIFACT}"


def _listed(client, run_id: str, folder: str) -> set[str]:
    try:
        return {Path(f.path).name for f in client.list_artifacts(run_id, folder)}
    except mlflow.exceptions.MlflowException:
        return set()


def _json_artifact(client, run_id: str, artifact: str):
    folder, _, name = artifact.rpartition("/")
    if name not in _listed(client, run_id, folder):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(Path(client.download_artifacts(run_id, artifact, tmp)).read_text())
        except (OSError, ValueError):
            return None


def _int(text) -> int | None:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return None


def _per_class(client, run_id: str, metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """evaluate@'s per_class.json, else the run's ``test_<figure>_class_<c>`` metrics."""
    logged = _json_artifact(client, run_id, PER_CLASS_ARTIFACT)
    if isinstance(logged, dict) and logged:
        return logged
    found: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        for fig in ("precision", "recall", "f1"):
            prefix = f"test_{fig}_class_"
            if key.startswith(prefix):
                found.setdefault(key[len(prefix) :], {})[fig] = value
    return dict(sorted(found.items()))


def collect(client, version) -> card.CardData:
    """The card's data for registered ``version`` (an MLflow ModelVersion)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # small files
    run = client.get_run(version.run_id)
    run_id = run.info.run_id
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    classes = [
        params[k]
        for k in sorted(
            (k for k in params if k.startswith("dataset.classes.")),
            key=lambda k: int(k.rsplit(".", 1)[1]),
        )
    ]
    history = client.get_metric_history(run_id, "epoch_seconds")
    test = {k: metrics[f"test_{k}"] for k in METRICS if f"test_{k}" in metrics}
    if params.get("dataset.n_test"):
        test["n_test"] = int(params["dataset.n_test"])
    confusions = []
    preds = gate.predictions(client, run_id)
    pictures = sorted(_listed(client, run_id, card.CARD_DIR))
    if preds is not None:
        for c in card.top_confusions(preds["actual"].tolist(), preds["predicted"].tolist()):
            name = card.thumbnail_name(c.actual, c.predicted)
            confusions.append(
                card.Confusion(c.actual, c.predicted, c.count, name if name in pictures else None)
            )
    data = _json_artifact(client, run_id, f"{card.CARD_DIR}/{card.DATA_FILE}") or {}
    seen = metrics.get(card.PICTURES_METRIC)
    started = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC)
    vtags = version.tags or {}
    return card.CardData(
        preset=version.name,
        version=str(version.version),
        run_id=run_id,
        dataset=tags.get("dataset") or params.get("model.dataset", "unknown"),
        source=data.get("source"),
        dataset_md5=vtags.get("dataset_dvc_md5") or tags.get("dataset_dvc_md5", "unknown"),
        sizes={s: _int(params.get(f"dataset.n_{s}")) for s in card.SPLITS},
        classes=classes,
        family=tags.get("family") or params.get("model.family", "unknown"),
        arch=params.get("model.arch", ""),
        train={
            k[len("model.train.") :]: v for k, v in params.items() if k.startswith("model.train.")
        },
        seed=params.get("seed"),
        epochs=len({m.step for m in history}) or None,
        training_seconds=sum(m.value for m in history) if history else None,
        started=started.strftime("%Y-%m-%d %H:%M:%S"),
        machine={k[len("env.") :]: v for k, v in (tags | vtags).items() if k.startswith("env.")},
        code={
            k: v
            for k, v in {
                "git_commit": tags.get("mlflow.source.git.commit") or vtags.get("git_commit"),
                "git_dirty": tags.get("git_dirty"),
                "dvc_exp_name": tags.get("dvc_exp_name"),
            }.items()
            if v
        },
        metrics=test,
        per_class=_per_class(client, run_id, metrics),
        confusions=confusions,
        pictures=None if seen is None else (seen, _int(metrics.get(card.PICTURES_N_METRIC))),
        gate={k[len("gate.") :]: v for k, v in vtags.items() if k.startswith("gate.")},
    )


def write_card(client, preset: str, version: str) -> str:
    """Render the card of ``preset`` version ``version``, log it to its run and link it from
    the version's description (replacing an earlier link); the card's ``runs:/`` URI."""
    mv = client.get_model_version(preset, str(version))
    text = card.render(collect(client, mv))
    with_retry(lambda: client.log_text(mv.run_id, text, CARD_ARTIFACT))
    experiment = client.get_run(mv.run_id).info.experiment_id
    before = (mv.description or "").split(DESCRIPTION_MARK)[0]
    if before.startswith(LINK_LABEL):  # only the link, written before the gate decided
        before = ""
    link = f"[{CARD_ARTIFACT}]({ui_link(experiment, mv.run_id)}) (`{card_uri(mv.run_id)}`)"
    text = f"{before}\n\n{LINK_LABEL}{link}" if before else f"{LINK_LABEL}{link}"
    client.update_model_version(preset, mv.version, description=text)
    return card_uri(mv.run_id)
