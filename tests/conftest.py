"""Shared fixtures: small synthetic IDX data built through the real writer."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
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
# built once per test session and shared by the pytest-xdist workers. It takes minutes, so it
# runs in the background: as soon as a worker has collected tests that need it, the first
# such worker starts the build (under a file lock) and the test files that do not need it
# are run first; `tiny_built` waits for the build. Tests that change things work on their
# own copy.

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
    from pipeline.devtools import workspace

    workspace.copy_project(dest, REPO)
    env = plain_env()
    sh(["bin/python", "-m", "pipeline.profile", "tiny"], dest, env)
    workspace.commit_all(dest, "tiny profile")
    out = sh([".venv/bin/dvc", "repro"], dest, env)
    (dest / ".repro.log").write_text(out.stdout + out.stderr)
    return dest


def _shared_dir(config: pytest.Config) -> Path:
    """This session's own temp folder, common to its xdist workers (each has base/../gwN)."""
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


_BUILD = (
    "import sys; from pathlib import Path; from tests.conftest import build_tiny; "
    "build_tiny(Path(sys.argv[1]))"
)
_builder: subprocess.Popen | None = None  # the build this process started, if any


def _start_tiny_build(shared: Path) -> None:
    """Start the tiny build in the background unless it is built or being built."""
    global _builder
    from filelock import FileLock

    dest = shared / "tiny-built"
    with FileLock(str(shared / "tiny-built.lock")):
        if (shared / "tiny-built.rc").exists() or (shared / "tiny-built.pid").exists():
            return
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        rc = shared / "tiny-built.rc"
        wrapper = '"$0" -c "$1" "$2"; echo $? > "$3"'  # the exit code, once it is known
        with (shared / "tiny-built.log").open("w") as log:  # the child keeps its own copy
            _builder = subprocess.Popen(
                ["bash", "-c", wrapper, sys.executable, _BUILD, str(dest), str(rc)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one
            )
        (shared / "tiny-built.pid").write_text(str(_builder.pid))


def _needs_tiny(item: pytest.Item) -> bool:
    return "tiny_built" in getattr(item, "fixturenames", ())


# Files that need the tiny project, longest first (measured with --durations), so that the
# last file a worker takes is a short one.
_TINY_ORDER = ("test_e2e_dvc.py", "test_remote.py", "test_compare.py", "test_hardening.py",
               "test_workflow.py")  # fmt: skip
# Long files that do not need it: first of all, beside the build (the server tests build a
# one-model project of their own: about 3 minutes on one worker).
_FIRST = ("test_server.py",)


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: only the tests that run
def pytest_collection_modifyitems(session: pytest.Session, config, items) -> None:
    """Start the tiny build when a collected test needs it, and run the test files that do
    not need it first, the longest of them first of all (with --dist loadfile and
    --no-loadscope-reorder, xdist hands out files in this order)."""
    tiny_files = {item.path.name for item in items if _needs_tiny(item)}
    if not tiny_files:
        return
    _start_tiny_build(_shared_dir(config))

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        if name not in tiny_files:
            return (0, 0) if name in _FIRST else (1, 0)
        return (2, _TINY_ORDER.index(name) if name in _TINY_ORDER else len(_TINY_ORDER))

    items.sort(key=rank)  # stable: the order inside a file is kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A build this process started ends with the session: waited for when other workers
    may still need it, stopped (its whole process group) when the session was interrupted."""
    if _builder is None or _builder.poll() is not None:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        os.killpg(_builder.pid, signal.SIGTERM)
    try:
        _builder.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(_builder.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def tiny_built(request: pytest.FixtureRequest) -> Path:
    """The shared tiny project, after its `dvc repro`: read it, never change it."""
    shared = _shared_dir(request.config)
    _start_tiny_build(shared)  # no-op when collection started it
    rc_file, deadline = shared / "tiny-built.rc", time.monotonic() + 1800
    while not rc_file.exists() or not rc_file.read_text().strip():
        if time.monotonic() > deadline:
            raise AssertionError(f"the tiny build did not finish in 30 minutes: {shared}")
        time.sleep(1)
    if rc_file.read_text().strip() != "0":
        log = (shared / "tiny-built.log").read_text()
        code = rc_file.read_text().strip()
        raise AssertionError(f"the tiny build failed (exit {code}):\n{log[-4000:]}")
    return shared / "tiny-built"


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
