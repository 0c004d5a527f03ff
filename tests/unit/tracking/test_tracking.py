"""MLflow store resolution and run tags, against a real sqlite store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.core import numenv


def test_store_root_maps_dvc_temp_copies_to_the_repo(tmp_path):
    repo = tmp_path / "proj"
    assert tracking.store_root(repo) == repo.resolve()
    tmp_copy = repo / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    assert tracking.store_root(tmp_copy) == repo.resolve()


def test_tracking_uri_default_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "x"
    assert tracking.tracking_uri(copy) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri(copy) == "http://127.0.0.1:5999"


def test_setup_creates_store_and_experiment_once(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = tracking.setup("exp-a", root=tmp_path)
    assert tracking.setup("exp-a", root=tmp_path) == first
    assert (tmp_path / "mlflow.db").is_file()
    exp = mlflow.get_experiment(first)
    assert exp.artifact_location == (tmp_path / "mlartifacts").as_uri()


def test_run_tags_carry_git_and_dvc_info(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "i",
        ],
        check=True,
    )
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  prepare@d:\n    outs:\n    - path: data/prepared/d\n"
        "      md5: abc123.dir\n"
    )
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-lads")
    monkeypatch.setenv("PIPELINE_REPRO_ID", "rep-1")
    tags = tracking.run_tags("m", "keras", "d", root=tmp_path)
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head and "git_commit" not in tags
    assert tags["git_dirty"] == "false"
    (tmp_path / "f").write_text("changed")
    assert tracking.run_tags("m", "keras", "d", root=tmp_path)["git_dirty"] == "true"
    assert tags["dataset_dvc_md5"] == "abc123.dir"
    assert tags["dvc_exp_name"] == "bushy-lads"
    assert tags["repro_id"] == "rep-1"
    assert tags["family"] == "keras" and tags["preset"] == "m"


@pytest.mark.slow  # four Python processes that import MLflow
def test_repro_id_is_shared_by_children_of_one_dvc_process(tmp_path):
    """Two stage processes started by the same parent named dvc get the same id."""
    fake_dvc = tmp_path / "dvc"
    child = "from pipeline import tracking; print(tracking.repro_id())"
    fake_dvc.write_text(
        f"#!{sys.executable}\nimport subprocess, sys\n"
        f"for _ in range(2):\n"
        f"    subprocess.run(['/bin/sh', '-c', '{sys.executable} -c \"{child}\"'], check=True)\n"
    )
    fake_dvc.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_REPRO_ID"}
    out1 = subprocess.run([str(fake_dvc)], capture_output=True, text=True, check=True, env=env)
    out2 = subprocess.run([str(fake_dvc)], capture_output=True, text=True, check=True, env=env)
    ids1, ids2 = out1.stdout.split(), out2.stdout.split()
    assert len(ids1) == 2 and ids1[0] == ids1[1] and ids1[0] != "None"
    assert ids2[0] == ids2[1] and ids2[0] != ids1[0]


@pytest.mark.parametrize("exc", ["database is locked", "other"])
def test_with_retry_retries_only_lock_errors(exc):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(exc)
        return "ok"

    if exc == "other":
        with pytest.raises(RuntimeError, match="other"):
            tracking.with_retry(flaky, delay=0)
        assert len(calls) == 1
    else:
        assert tracking.with_retry(flaky, delay=0) == "ok"
        assert len(calls) == 3


def test_run_id_file_round_trip(tmp_path):
    tracking.save_run_id(tmp_path, "abc")
    assert tracking.load_run_id(tmp_path) == "abc"
    with pytest.raises(FileNotFoundError, match="no MLflow run id"):
        tracking.load_run_id(Path(tmp_path / "nope"))


def test_a_run_no_model_owns_is_tagged_with_its_kind(tmp_path, monkeypatch):
    """plot's cross-model run: the same provenance tags as a model's run, its kind instead
    of preset, family and dataset."""
    monkeypatch.setenv("PIPELINE_REPRO_ID", "rep-2")
    monkeypatch.setenv("DVC_STAGE", "plot")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    tags = tracking.run_tags("compare", root=tmp_path)  # not a git checkout
    env = {k: v for k, v in tags.items() if k.startswith("env.")}
    assert env == numenv.as_tags(numenv.probe())  # every run: the numeric environment
    assert {k: v for k, v in tags.items() if k not in env} == {
        "run_kind": "compare",
        "mlflow.source.git.commit": "unknown",
        "git_dirty": "unknown",
        "dvc_stage": "plot",
        "mlflow.runName": "compare · rep-2",
        "repro_id": "rep-2",
    }
    with pytest.raises(TypeError, match="both family and dataset"):
        tracking.run_tags("m", "keras", root=tmp_path)
