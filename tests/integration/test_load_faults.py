"""Load and faults (#28), against real processes on copies of the tiny project: trainings
at once on a fresh sqlite store, a full disk under the artifact store, a rerun while other
processes load the CPU. The team server's share (8 trainings at once, PostgreSQL restarted
mid-run, queued experiments) is in test_server.py, beside its server fixture."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import copy_tiny, plain_env, sh, trainings_at_once, tree

pytestmark = pytest.mark.slow
MODEL = "dense_mlp"  # the fastest preset of the tiny profile
READY = 2  # MLflow's LoggedModelStatus.READY in the logged_models table


def _rows(db: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_four_trainings_at_once_on_a_fresh_sqlite_store(tiny_built, tmp_path):
    """Four train@ processes create a fresh store at once (tracking.setup under its lock):
    they agree on one experiment, and no run or version is lost (this test also holds the
    former test of four bare tracking.setup calls on a fresh store)."""
    project = copy_tiny(tiny_built, tmp_path / "p")
    db = tmp_path / "fresh" / "mlflow.db"  # no schema yet: the four create it at once
    env = plain_env(MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    run_ids = trainings_at_once(project, MODEL, 4, env, tmp_path / "out")
    assert len(set(run_ids)) == 4, run_ids
    marks = ",".join("?" * len(run_ids))
    experiments = _rows(db, f"SELECT DISTINCT experiment_id FROM runs WHERE run_uuid IN ({marks})",
                        *run_ids)  # fmt: skip
    assert len(experiments) == 1, experiments  # one experiment, the four agree on it
    statuses = _rows(db, f"SELECT status FROM runs WHERE run_uuid IN ({marks})", *run_ids)
    assert sorted(s for (s,) in statuses) == ["FINISHED"] * 4
    versions = _rows(db, "SELECT version, run_id FROM model_versions WHERE name = ?", MODEL)
    assert sorted(v for v, _ in versions) == [1, 2, 3, 4]  # one version each, none lost
    assert {r for _, r in versions} == set(run_ids)


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {proc.stderr.strip()}")


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` until about ``leave`` bytes are free."""
    with (folder / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        f.truncate(max(0, f.tell() - leave))


def test_full_disk_for_artifacts_fails_in_one_line_and_keeps_the_model(tiny_built, tmp_path):
    """The artifact store on a full file system: train@ fails in one line naming the path,
    the previous models/<m> stays as it was, and nothing half-logged is marked done."""
    project = copy_tiny(tiny_built, tmp_path / "p")
    before = tree(project / "models" / MODEL)
    artifacts = project / "mlartifacts"  # where a fresh sqlite store puts its artifacts
    db = tmp_path / "fresh" / "mlflow.db"
    _mount_tmpfs(artifacts, "2m")
    try:
        _fill(artifacts, 48 * 1024)  # room for history.csv, not for the model
        env = plain_env(MLFLOW_TRACKING_URI=f"sqlite:///{db}")
        out = sh(["bin/python", "-m", "pipeline.stages.train", MODEL], project, env, False)
    finally:
        subprocess.run(["umount", str(artifacts)], check=False)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"train@{MODEL}: error: "), out.stderr
    assert f"no space left on the device of {artifacts}/" in errors[0], errors[0]
    assert tree(project / "models" / MODEL) == before
    assert not list((project / "models").glob(".*.tmp"))
    statuses = [s for (s,) in _rows(db, "SELECT status FROM runs")]
    assert statuses and "FINISHED" not in statuses and "RUNNING" not in statuses, statuses
    ready = _rows(db, "SELECT name FROM logged_models WHERE status = ?", READY)
    assert ready == [], ready
    assert _rows(db, "SELECT name, version FROM model_versions") == []


def test_rerun_under_cpu_load_is_byte_identical(tiny_built, tmp_path):
    """train@ and evaluate@ of one model rerun while two busy processes load both cores:
    the metrics and the predictions are the tiny build's, byte for byte (what
    `make verify-repro` checks for the whole pipeline, on one model to stay short)."""
    project = copy_tiny(tiny_built, tmp_path / "p")
    env = plain_env()
    burn = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    try:
        time.sleep(1)
        for stage in ("train", "evaluate"):
            sh(["bin/python", "-m", f"pipeline.stages.{stage}", MODEL], project, env)
    finally:
        for b in burners:
            os.kill(b.pid, signal.SIGKILL)
            b.wait()
    for rel in (f"metrics/{MODEL}.json", f"plots/{MODEL}/predictions.csv"):
        assert (project / rel).read_bytes() == (tiny_built / rel).read_bytes(), rel
    assert json.loads((project / f"metrics/{MODEL}.json").read_text())["accuracy"] > 0
