"""A 4-trial run of a shipped sweep on a local Ray in the tiny project, then ``--apply``:
the winner goes through the real stages as a DVC experiment, is registered, and the
promotion gate makes it ``challenger``.

Its own file: it needs the tiny project (conftest.py runs such files after the build), while
tests/integration/test_sweep.py's synthetic projects run beside the build.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import tempfile

import pytest

from pipeline.core import config
from tests.helpers import copy_tiny, plain_env

pytestmark = pytest.mark.slow
SWEEP, PRESET = "keras_small_cnn_lr", "keras_small_cnn"


def test_shipped_sweep_four_trials_then_apply(tiny_built, tmp_path):
    root = copy_tiny(tiny_built, tmp_path / "proj")
    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(16))
    env = plain_env(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_TMPDIR=tempfile.mkdtemp(prefix="ray", dir="/tmp"),  # short: unix socket paths
        RAY_worker_niceness="0",  # Ray's default (15) starves the trials in a busy test suite
    )
    out = subprocess.run(
        ["bin/python", "-m", "pipeline.sweep", SWEEP, "--trials", "4", "--apply"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("mnist").experiment_id
    (parent,) = client.search_runs([exp], "tags.run_kind = 'sweep'")
    kids = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED" and len(kids) == 4
    assert {k.info.status for k in kids} == {"FINISHED"}
    assert all(k.data.tags.get("pruned") in ("true", "false") for k in kids)
    assert all(k.data.tags.get("node_id") and k.data.tags.get("pid") for k in kids)
    assert len(re.findall(r"\] trial \d+ +FINISHED", out.stdout)) == 4  # a line per trial
    best = json.loads((config.cache_dir(root) / "sweeps" / f"{SWEEP}.best.json").read_text())
    assert set(best["config"]) == {"train.learning_rate", "train.batch_size", "arch.6.rate"}
    assert f"$ {best['dvc_command']}" in out.stdout  # --apply ran the printed line

    # the DVC experiment trained the winner: its run carries the config and is registered
    version = client.get_model_version_by_alias(PRESET, "challenger")
    run = client.get_run(version.run_id)
    assert run.data.tags.get("dvc_exp_name"), run.data.tags
    logged = run.data.params
    assert float(logged["model.train.learning_rate"]) == best["config"]["train.learning_rate"]
    assert int(logged["model.train.batch_size"]) == best["config"]["train.batch_size"]
    assert "test_accuracy" in run.data.metrics  # evaluated on the test set
    assert version.tags.get("gate.decision") == "challenger"
    exps = subprocess.run(
        ["bin/dvc", "exp", "list", "--name-only"], cwd=root, env=plain_env(), text=True,
        capture_output=True, check=True,
    )  # fmt: skip
    assert run.data.tags["dvc_exp_name"] in exps.stdout.split()
