"""A small sweep project of its own (synthetic digits, a sqlite MLflow store), and running
`python -m pipeline.sweep` on it as a user would: shared by the sweep tests
(test_sweep.py, test_sweep_asha.py, and the two-node test in test_server.py)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.core import config
from pipeline.data.prepared import Split, save_split
from tests.helpers import make_digits, params_spec, plain_env, write_params

PY = sys.executable
SWEEP = "tiny"


def make_project(
    root: Path, trials: int = 4, epochs: int = 3, batch: int = 32, images: int = 180, **sweep
) -> Path:
    """params.yaml with dense_mlp (3 classes) and sweep ``tiny``; prepared synthetic data
    (``images`` of them, the last 40 for validation)."""
    raw = params_spec("dense_mlp")
    raw["models"]["dense_mlp"]["train"] |= {"epochs": epochs, "batch_size": batch}
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
    x, y = make_digits(-(-images // 3), seed=0, classes=(0, 2, 5))
    y = np.searchsorted([0, 2, 5], y).astype(np.int64)[:images]
    x = (x[:images, ..., None] / 255.0).astype(np.float32)
    out = config.prepared_dir("digits025", root)
    out.mkdir(parents=True)
    save_split(config.split_file(out, "train"), Split(x[:-40], y[:-40]))
    save_split(config.split_file(out, "val"), Split(x[-40:], y[-40:]))
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
        RAY_worker_niceness="0",  # Ray's default (15) starves the trials in a busy test suite
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


def runs(root: Path, uri: str | None = None):
    from mlflow import MlflowClient

    client = MlflowClient(uri or f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("mnist")
    parents = client.search_runs([exp.experiment_id], "tags.run_kind = 'sweep'")
    kids = client.search_runs([exp.experiment_id], "tags.run_kind = 'sweep_trial'")
    return parents, kids
