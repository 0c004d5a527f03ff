"""The default ensemble (params.yaml, family: ensemble) in the tiny project: train@ and
evaluate@ ran under DVC, its run is registered, ``predict --model`` answers from its folder
and from the registry (verified, pickle-free), and its own params rerun only its stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import copy_tiny, plain_env, sh, stages_run

pytestmark = pytest.mark.slow
NAME = "ensemble"


@pytest.fixture(scope="module")
def root(tiny_built, tmp_path_factory) -> Path:
    return copy_tiny(tiny_built, tmp_path_factory.mktemp("ensemble") / "p")


@pytest.fixture(scope="module")
def picture(root) -> tuple[Path, int]:
    from PIL import Image

    test = np.load(root / "data" / "prepared" / "digits10" / "test.npz")
    path = root.parent / "digit.png"
    Image.fromarray((test["x"][0, :, :, 0] * 255).astype(np.uint8)).save(path)
    return path, int(test["y"][0])


def predict(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"PIPELINE_ROOT": str(root), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pipeline.predict", *args]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_ensemble_ran_under_dvc_and_is_registered(root):
    assert {f"train@{NAME}", f"evaluate@{NAME}"} <= stages_run((root / ".repro.log").read_text())
    spec = json.loads((root / "models" / NAME / "model" / "ensemble.json").read_text())
    members = yaml.safe_load((root / "params.yaml").read_text())["models"][NAME]["members"]
    assert spec["members"] == members and sum(spec["weights"]) == pytest.approx(1)
    metrics = json.loads((root / "metrics" / f"{NAME}.json").read_text())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    version = client.get_model_version_by_alias(NAME, "champion")
    assert version.run_id == (root / "models" / NAME / "mlflow_run_id").read_text().strip()
    assert float(version.tags["test_accuracy"]) == pytest.approx(metrics["accuracy"], abs=1e-6)


@pytest.mark.parametrize("spec", [NAME, f"models:/{NAME}@champion"])
def test_predict_answers_with_the_ensemble(root, picture, spec):
    path, _ = picture
    r = predict(root, "--model", spec, "--json", str(path))
    assert r.returncode == 0, r.stderr
    (item,) = json.loads(r.stdout)
    assert set(item["probabilities"]) == {str(d) for d in range(10)}
    assert item["probability"] == max(item["probabilities"].values())


def test_its_own_params_rerun_only_its_train(root):
    params = root / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["models"][NAME]["weights"] = "mean"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = sh(["bin/dvc", "status", "--json"], root, plain_env()).stdout
    changed = {s for s in json.loads(out) if s.startswith(("train@", "evaluate@"))}
    assert changed == {f"train@{NAME}"}  # evaluate@ follows when train@'s output changes
