"""Shared fixtures: small synthetic IDX data built through the real writer."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import config
from pipeline.data.idx import encode_idx

REPO = Path(__file__).resolve().parent.parent


def make_digits(n_per_class: int, seed: int, classes=range(10)) -> tuple[np.ndarray, np.ndarray]:
    """Digit-like uint8 images: a class-specific stroke pattern plus noise, labels shuffled."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in classes:
        base = np.zeros((28, 28), dtype=np.float32)
        base[4 + c : 24 - c // 2, 6 + (c % 5) * 3 : 10 + (c % 5) * 3] = 200
        base[10 + c % 4, 4:24] = 255
        noise = rng.integers(0, 40, size=(n_per_class, 28, 28))
        images.append(np.clip(base[None] + noise, 0, 255).astype(np.uint8))
        labels.append(np.full(n_per_class, c, dtype=np.uint8))
    x, y = np.concatenate(images), np.concatenate(labels)
    order = rng.permutation(len(y))
    return x[order], y[order]


def write_raw(folder: Path, train, test) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (train[0], train[1], test[0], test[1])
    for name, arr in zip(config.RAW_FILES, arrays, strict=True):
        (folder / name).write_bytes(encode_idx(arr))
    return folder


@pytest.fixture
def synthetic_raw(tmp_path) -> Path:
    """data/raw-like folder: 60 train and 12 test images per digit."""
    return write_raw(tmp_path / "raw", make_digits(60, seed=1), make_digits(12, seed=2))


# --------------------------------------------------------------------------- tiny project
# One real `dvc repro` of the whole pipeline on the tiny profile, in a copy of the project,
# built once per test session and shared by the pytest-xdist workers (the first to ask builds
# it under a file lock, the others wait). Tests that change things work on their own copy.

PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"  # what a shell that activated nothing has


def plain_env(**extra: str) -> dict[str, str]:
    """The environment of a user's plain shell: no venv on PATH, no MLflow/DVC/pipeline vars."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PIPELINE_", "DVC_", "VIRTUAL_ENV"))
    }
    env["PATH"] = PLAIN_PATH
    env["GX_ANALYTICS_ENABLED"] = "False"
    env["PYTHONHASHSEED"] = "0"
    return env | extra


def sh(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}"
            f"\n{proc.stderr[-4000:]}"
        )
    return proc


def build_tiny(dest: Path) -> Path:
    """Copy the project to ``dest``, apply the tiny profile, commit, `dvc repro`; the log of
    the repro is kept in ``dest/.repro.log``."""
    from pipeline.tools import workspace

    workspace.copy_project(dest, REPO)
    env = plain_env()
    sh(["bin/python", "-m", "pipeline.profile", "tiny"], dest, env)
    workspace.commit_all(dest, "tiny profile")
    out = sh([".venv/bin/dvc", "repro"], dest, env)
    (dest / ".repro.log").write_text(out.stdout + out.stderr)
    return dest


@pytest.fixture(scope="session")
def tiny_built(tmp_path_factory) -> Path:
    """The shared tiny project, after its `dvc repro`: read it, never change it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    # this session's own folder, common to its xdist workers (each has base/../popen-gwN)
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    dest = shared / "tiny-built"
    with FileLock(str(shared / "tiny-built.lock")):
        if not (dest / ".repro.log").is_file():
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            build_tiny(dest)
    return dest


def copy_tiny(built: Path, dest: Path) -> Path:
    """A private copy of the built tiny project (git, DVC cache, MLflow store and all); the
    copy's MLflow store points at the copy's own artifact folder."""
    import sqlite3

    shutil.copytree(built, dest, symlinks=True)
    db = sqlite3.connect(dest / "mlflow.db")
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for col in db.execute(f"PRAGMA table_info({table})").fetchall():
                if col[2].upper().startswith(("VARCHAR", "TEXT")):
                    db.execute(
                        f"UPDATE {table} SET {col[1]} = replace({col[1]}, ?, ?) "
                        f"WHERE {col[1]} LIKE ?",
                        (str(built), str(dest), f"%{built}%"),
                    )
        db.commit()
    finally:
        db.close()
    return dest
