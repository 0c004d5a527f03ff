"""The promotion gate: alias ``champion`` of a registered model moves to a new version only
on evidence, else the new version gets alias ``challenger``.

A version replaces the champion when, on the same test split (equal ``dataset_dvc_md5``
version tags, the same images in the same order):

- McNemar's exact test (pipeline/report/stats.py) on the test images where the two disagree
  gives a one-sided p-value below ``registry.alpha`` in the new version's favour, and
- no class's recall drops by more than ``registry.max_class_drop`` points, and
- its training run ran committed code and params (run tag ``git_dirty`` false and no
  ``dvc_exp_name``): a ``dvc exp run`` is a challenger at most, until a person runs
  ``python -m pipeline.promote <preset> <version>``.

The first version of a model (or a champion without ``test_accuracy``) becomes champion when
its run is committed. Each decision is one line, logged, tagged on the version (``gate.*``) and
written to its description. The per-image predictions come from each run's
``evaluation/predictions.csv`` (logged by evaluate@<model>).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd

from pipeline.core import config
from pipeline.report.stats import mcnemar

CHAMPION = "champion"
CHALLENGER = "challenger"
PREDICTIONS_ARTIFACT = f"{config.EVALUATION_ARTIFACTS}/{config.PREDICTIONS_CSV}"


@dataclass(frozen=True)
class Settings:
    """``registry:`` of params.yaml: the significance level and the largest recall drop of any
    class (in percentage points) a new champion may have."""

    alpha: float = 0.05
    max_class_drop: float = 0.5


@dataclass
class Evidence:
    """The numbers of one challenger-vs-champion comparison on the same test images."""

    fixed: int  # right by the challenger only
    broken: int  # right by the champion only
    p_better: float  # McNemar one-sided: the challenger is better
    worst_class: str  # the class whose recall drops most (or rises least)
    worst_drop: float  # its drop in percentage points (negative: a gain)
    n: int

    def line(self) -> str:
        return (
            f"McNemar on {self.n} test images: fixed {self.fixed}, broken {self.broken}, "
            f"p={self.p_better:.4g}; largest class recall drop {self.worst_drop:+.2f} points "
            f"(class {self.worst_class})"
        )


@dataclass
class Decision:
    promote: bool
    line: str
    tags: dict[str, str] = field(default_factory=dict)


def predictions(client, run_id: str) -> pd.DataFrame | None:
    """The run's per-image ``actual``/``predicted`` labels (None: not logged)."""
    folder, _, name = PREDICTIONS_ARTIFACT.rpartition("/")
    try:
        listed = {Path(f.path).name for f in client.list_artifacts(run_id, folder)}
    except mlflow.exceptions.MlflowException:
        return None
    if name not in listed:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, tmp)
        frame = pd.read_csv(path, dtype=str)
    if not {"actual", "predicted"} <= set(frame.columns):
        return None
    return frame


def evidence(champ: pd.DataFrame, cand: pd.DataFrame) -> Evidence | None:
    """McNemar and per-class recall of ``cand`` against ``champ`` (None: other images)."""
    if len(champ) != len(cand) or not (champ["actual"].values == cand["actual"].values).all():
        return None
    actual = cand["actual"].to_numpy()
    right_champ = champ["predicted"].to_numpy() == actual
    right_cand = cand["predicted"].to_numpy() == actual
    test = mcnemar(int((right_cand & ~right_champ).sum()), int((right_champ & ~right_cand).sum()))
    drops = {}
    for cls in sorted(set(actual)):
        mask = actual == cls
        drops[cls] = 100.0 * (right_champ[mask].mean() - right_cand[mask].mean())
    worst = max(drops, key=drops.get)
    return Evidence(test.fixed, test.broken, test.p_better, worst, float(drops[worst]), len(actual))


def committed(run) -> str | None:
    """Why the run's code or params are not committed (None: they are)."""
    tags = run.data.tags
    if tags.get("dvc_exp_name"):
        return f"a DVC experiment ({tags['dvc_exp_name']})"
    if tags.get("git_dirty") != "false":
        return f"uncommitted code or params (git_dirty {tags.get('git_dirty', 'unknown')})"
    return None


def _split(version) -> str:
    return version.tags.get("dataset_dvc_md5") or "unknown"


def decide(client, preset: str, candidate, champ, settings: Settings) -> Decision:
    """Whether ``candidate`` replaces ``champ`` (None: no champion yet); the reason in one
    line and the numbers as ``gate.*`` tags. Both versions carry ``test_accuracy``."""
    acc = float(candidate.tags["test_accuracy"])
    run = client.get_run(candidate.run_id)
    dirty = committed(run)
    champ_acc = None if champ is None else _float(champ.tags.get("test_accuracy"))
    base = {"gate.alpha": str(settings.alpha), "gate.max_class_drop": str(settings.max_class_drop)}
    if champ is None or champ_acc is None:
        if dirty:
            return Decision(
                False, f"{preset}: v{candidate.version} stays challenger: {dirty}", base
            )
        if champ is None:
            line = (
                f"{preset}: champion -> v{candidate.version} (test_accuracy {acc:.4f}, the first)"
            )
        else:
            line = (
                f"{preset}: champion v{champ.version} -> v{candidate.version} "
                f"(test_accuracy {acc:.4f} beats no test_accuracy)"
            )
        return Decision(True, line, base)
    tags = base | {"gate.champion": str(champ.version)}
    stays = f"{preset}: champion stays v{champ.version} (test_accuracy {champ_acc:.4f})"
    if _split(candidate) == "unknown" or _split(candidate) != _split(champ):
        return Decision(
            False,
            f"{stays}; v{candidate.version} ({acc:.4f}) was tested on another split "
            f"(dataset_dvc_md5 {_split(candidate)} vs {_split(champ)}): challenger",
            tags,
        )
    if acc <= champ_acc:
        return Decision(False, f"{stays}; v{candidate.version} has {acc:.4f}", tags)
    ours, theirs = predictions(client, candidate.run_id), predictions(client, champ.run_id)
    if ours is None or theirs is None:
        which = f"v{candidate.version}" if ours is None else f"v{champ.version}"
        return Decision(
            False,
            f"{stays}; v{candidate.version} ({acc:.4f}) cannot be compared: {which} has no "
            f"{PREDICTIONS_ARTIFACT}: challenger",
            tags,
        )
    ev = evidence(theirs, ours)
    if ev is None:
        return Decision(
            False,
            f"{stays}; v{candidate.version} ({acc:.4f}) was scored on other test images: "
            "challenger",
            tags,
        )
    tags |= {
        "gate.fixed": str(ev.fixed),
        "gate.broken": str(ev.broken),
        "gate.p_value": f"{ev.p_better:.6g}",
        "gate.worst_class": ev.worst_class,
        "gate.worst_class_drop": f"{ev.worst_drop:.4f}",
    }
    reasons = []
    if ev.p_better >= settings.alpha:
        reasons.append(f"not significant (p={ev.p_better:.4g} >= alpha {settings.alpha})")
    if ev.worst_drop > settings.max_class_drop:
        reasons.append(
            f"class {ev.worst_class} recall drops {ev.worst_drop:.2f} points "
            f"> {settings.max_class_drop}"
        )
    if dirty:
        reasons.append(dirty)
    if reasons:
        return Decision(
            False,
            f"{stays}; v{candidate.version} ({acc:.4f}) stays challenger: "
            f"{'; '.join(reasons)}. {ev.line()}",
            tags,
        )
    return Decision(
        True,
        f"{preset}: champion v{champ.version} -> v{candidate.version} "
        f"(test_accuracy {acc:.4f} beats {champ_acc:.4f}). {ev.line()}",
        tags,
    )


def _float(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def record(client, preset: str, version, decision: Decision, alias: str) -> None:
    """Move ``alias`` to ``version``; tag it with the decision and write it to its
    description."""
    client.set_registered_model_alias(preset, alias, version.version)
    if alias == CHAMPION:
        try:
            if client.get_model_version_by_alias(preset, CHALLENGER).version == version.version:
                client.delete_registered_model_alias(preset, CHALLENGER)
        except mlflow.exceptions.MlflowException:
            pass
    tags = decision.tags | {"gate.decision": alias, "gate.line": decision.line[:5000]}
    for key, value in tags.items():
        client.set_model_version_tag(preset, version.version, key, value)
    client.update_model_version(preset, version.version, description=f"Gate: {decision.line}")


def champion_version(client, preset: str):
    """The version alias ``champion`` names (None: none)."""
    try:
        return client.get_model_version_by_alias(preset, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
