"""A quiet terminal (#27): the tiny profile's `dvc repro` and `dvc exp run` print the stages'
own lines only (no TensorFlow, MLflow, Keras or Great Expectations chatter), one line an
epoch for every family in a log, and at the end of plot every model's test accuracy and
`make ui`. Both run without the Makefile's environment, as DVC runs them for a user."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

# DVC's own lines around the stages' ones
DVC_LINE = re.compile(
    r"^(|Running stage '.+':|> bin/python -m pipeline\.stages\..*|Updating lock file 'dvc\.lock'"
    r"|Use `dvc push` to send your updates to remote storage\.|Stage '.+' didn't change, skipping"
    r"|Ran experiment\(s\): .*|Experiment results have been applied to your workspace\.|"
    r"To promote an experiment to a Git branch run:|\s+dvc exp branch <exp> <branch>|"
    r"Reproducing experiment '.+'|Applied experiment .*|Verifying data sources in .*)$"
)
CHATTER = (
    "I0000", "E0000", "W0000", "absl::InitializeLog", "oneDNN", "cpu_feature_guard",
    "INFO mlflow", "Downloading artifacts", "Successfully registered model",
    "Registered model", "Created version", "━", "Epoch 1/", "Loading 'datasources'",
    "Restoring model weights",
)  # fmt: skip


def _check(log: str, root: Path) -> dict[str, list[str]]:
    """The stage lines of ``log`` by label; asserts there is nothing else."""
    by_label: dict[str, list[str]] = {}
    stray = []
    for line in log.splitlines():
        found = [c for c in CHATTER if c in line]
        assert not found, f"chatter {found}: {line!r}"
        assert line.strip() != "[]", "Great Expectations' []"
        m = re.match(r"^([a-z_]+(?:@[a-z0-9_]+)?): ", line)
        if m:
            by_label.setdefault(m.group(1), []).append(line)
        elif not DVC_LINE.match(line):
            stray.append(line)
    assert not stray, "lines from neither a stage nor DVC:\n" + "\n".join(stray)
    return by_label


def _models(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text())["models"]


@pytest.mark.slow
def test_dvc_repro_prints_only_stage_lines_one_an_epoch_and_the_accuracy_table(tiny_built):
    log = (tiny_built / ".repro.log").read_text()
    lines = _check(log, tiny_built)
    models = _models(tiny_built)
    for name in models:  # every family, the NumPy ones included
        epochs = len(pd.read_csv(tiny_built / "models" / name / "history.csv"))
        epoch_lines = [x for x in lines[f"train@{name}"] if re.match(rf"train@{name}: epoch ", x)]
        assert len(epoch_lines) == epochs, lines[f"train@{name}"]
        assert len(lines[f"train@{name}"]) == epochs + 1  # and its result
        assert len(lines[f"evaluate@{name}"]) == 1
    plot = lines["plot"]  # the log holds DVC's stdout, then its stderr (the champions)
    hint = plot.index("plot: the runs, figures and registry in MLflow's UI: make ui")
    table = plot[plot.index(next(x for x in plot if "test accuracy" in x)) + 1 : hint]
    assert sorted(x.split()[1] for x in table) == sorted(models)
    total = sum(len(v) for v in lines.values())
    # a stage line each, fetch's and the champion decisions aside, plus the epochs
    assert total < 3 * len(models) + 2 * len(models) + len(models) + 20 + 8, total


@pytest.mark.slow
def test_dvc_exp_run_is_as_quiet(tiny_experiment):
    log = (tiny_experiment / ".exp.log").read_text()
    lines = _check(log, tiny_experiment)
    assert [x for x in lines["train@dense_mlp"] if "epoch " in x]
