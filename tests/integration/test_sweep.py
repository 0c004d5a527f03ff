"""Sweeps on a real Ray (pipeline/sweep/): a 4-trial sweep of a tiny preset on a local Ray,
a two-node Ray cluster on this machine, a worker killed mid-trial, and resume after Ctrl-C.

Each test builds a small project of its own (synthetic digits in data/prepared/, a sqlite
MLflow store) and runs `python -m pipeline.sweep` in a subprocess, as a user would; Ray's
session files go under the test's folder, Ray's token under it too.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import config
from pipeline.data.prepared import Split, save_split
from tests.helpers import make_digits, params_spec, plain_env, write_params

pytestmark = pytest.mark.slow
PY = sys.executable
SWEEP = "tiny"


def make_project(root: Path, trials: int = 4, epochs: int = 3, **sweep) -> Path:
    """params.yaml with dense_mlp (3 classes) and sweep ``tiny``; prepared synthetic data."""
    raw = params_spec("dense_mlp")
    raw["models"]["dense_mlp"]["train"] |= {"epochs": epochs, "batch_size": 32}
    raw["sweeps"] = {
        SWEEP: {
            "model": "dense_mlp",
            "trials": trials,
            "cpus_per_trial": 1,
            "seed": 3,
            "space": {
                "train.learning_rate": {"loguniform": [0.005, 0.2]},
                "arch.1.units": {"choice": [16, 32]},
            },
        }
        | sweep
    }
    write_params(root, raw)
    x, y = make_digits(60, seed=0, classes=(0, 2, 5))
    y = np.searchsorted([0, 2, 5], y).astype(np.int64)
    x = (x[..., None] / 255.0).astype(np.float32)
    out = config.prepared_dir("digits025", root)
    out.mkdir(parents=True)
    save_split(config.split_file(out, "train"), Split(x[:140], y[:140]))
    save_split(config.split_file(out, "val"), Split(x[140:], y[140:]))
    return root


def env_for(root: Path, **extra: str) -> dict[str, str]:
    token = root / "ray_token"
    if not token.exists():
        token.write_text(secrets.token_hex(16))
    return plain_env(
        PIPELINE_ROOT=str(root),
        MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_TMPDIR=tempfile.mkdtemp(prefix="ray", dir="/tmp"),  # short: unix socket paths
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        **extra,
    )


def sweep(root: Path, *args: str, env: dict | None = None, timeout: float = 600):
    return subprocess.run(
        [PY, "-m", "pipeline.sweep", SWEEP, *args],
        cwd=root,
        env=env or env_for(root),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def runs(root: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("mnist")
    parents = client.search_runs([exp.experiment_id], "tags.run_kind = 'sweep'")
    kids = client.search_runs([exp.experiment_id], "tags.run_kind = 'sweep_trial'")
    return parents, kids


def best_json(root: Path) -> dict:
    return json.loads((root / "data/cache/sweeps" / f"{SWEEP}.best.json").read_text())


def test_local_sweep_four_trials(tmp_path):
    root = make_project(tmp_path)
    out = sweep(root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    parents, kids = runs(root)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 4
    assert {k.data.tags["mlflow.parentRunId"] for k in kids} == {parents[0].info.run_id}
    assert {k.info.status for k in kids} == {"FINISHED"}
    assert all(
        k.data.tags.get("pruned") in ("true", "false") and k.data.tags.get("node_id") for k in kids
    )
    best = best_json(root)
    assert set(best["config"]) == {"train.learning_rate", "arch.1.units"}
    assert best["dvc_command"].startswith("bin/dvc exp run -S models.dense_mlp.")
    assert best["dvc_command"] in out.stdout
    assert out.stdout.count("FINISHED") >= 4  # one progress line per finished trial
