"""DVC remote round trip: push the tiny project with its run cache, clone it fresh, pull,
and rerun only what a param change touches; against a real S3 endpoint (moto's standalone
server on 127.0.0.1) and against a local-directory remote.

The clone has the git files only: no DVC cache, no MLflow store. A stage that meets a
training run its store lacks (evaluate@ of a pulled model) logs to a run of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipeline.devtools import workspace
from tests.helpers import copy_tiny, free_port, plain_env, sh, stages_run

pytestmark = [pytest.mark.slow, pytest.mark.network]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
BUCKET = "pipeline-remote"


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory):
    """moto's standalone S3 server on 127.0.0.1 with one bucket; stopped by its pid."""
    server = BIN / "moto_server"
    if not server.is_file():
        pytest.skip("moto_server not installed: run `make setup` (moto[server] is pinned)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        creds = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(log.parent / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(log.parent / "no-aws-credentials"),
        }
        import boto3

        boto3.client("s3", endpoint_url=endpoint, **_boto_kwargs(creds)).create_bucket(
            Bucket=BUCKET
        )
        yield endpoint, creds
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _boto_kwargs(creds: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
        "region_name": creds["AWS_DEFAULT_REGION"],
    }


def use_remote(root: Path, url: str, env: dict, endpoint: str | None = None) -> None:
    """Point a checkout at the remote the way a user does: in .dvc/config.local (never in
    the committed config, whose default is the machine-wide directory remote)."""
    sh([DVC, "remote", "add", "--local", "--force", "--default", "rt", url], root, env)
    if endpoint:
        sh([DVC, "remote", "modify", "--local", "rt", "endpointurl", endpoint], root, env)


@pytest.mark.parametrize("kind", ["s3", "directory"])
def test_push_clone_pull_then_rerun_one_model(kind, tiny_built, tmp_path, request):
    if kind == "s3":
        endpoint, creds = request.getfixturevalue("moto_s3")
        url = f"s3://{BUCKET}/{tmp_path.name}"
        env = plain_env(**creds)
    else:
        endpoint, url, env = None, str(tmp_path / "remote"), plain_env()

    src = copy_tiny(tiny_built, tmp_path / "src")
    workspace.commit_all(src, "tiny pipeline outputs")  # dvc.lock and metrics, as CI does
    use_remote(src, url, env, endpoint)
    pushed = sh([DVC, "push", "--run-cache"], src, env)
    assert re.search(r"\d+ files? pushed", pushed.stdout), pushed.stdout

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(src), str(clone)], tmp_path, env)
    (clone / ".venv").symlink_to(Path(sys.prefix).resolve(), target_is_directory=True)
    assert not (clone / "models" / "dense_mlp").exists() and not (clone / "mlflow.db").exists()
    use_remote(clone, url, env, endpoint)
    sh([DVC, "pull", "--run-cache"], clone, env)
    status = sh([DVC, "status"], clone, env)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    assert list((clone / ".dvc" / "cache" / "runs").rglob("*")), "no run cache pulled"
    if kind == "directory":
        return  # what follows does not depend on the remote's kind: checked once, on S3

    params_file = clone / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["models"]["dense_mlp"]["train"]["learning_rate"] = 0.02
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh([DVC, "repro"], clone, env)
    # and check_params, the one-second gate that reads every param
    # (tests/integration/test_stage_failures.py)
    assert stages_run(out.stdout) == {
        "check_params",
        "train@dense_mlp",
        "evaluate@dense_mlp",
        "plot",
    }
    assert "Traceback" not in out.stdout + out.stderr

    # A stage that meets a pulled model's run, absent from this fresh store: one line, a
    # run of its own tagged with the original id and where it came from.
    original = (clone / "models" / "cubic_mlp" / "mlflow_run_id").read_text().strip()
    forced = sh([DVC, "repro", "--force", "--single-item", "evaluate@cubic_mlp"], clone, env)
    said = [line for line in forced.stderr.splitlines() if original in line]
    assert len(said) == 1 and "not in this store" in said[0], forced.stderr
    assert "Traceback" not in forced.stdout + forced.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{clone}/mlflow.db")
    exp = client.get_experiment_by_name("mnist")
    continued = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.source_run_id = '{original}'"
    )
    assert len(continued) == 1
    run = continued[0]
    assert run.data.tags["source"].startswith("models/cubic_mlp/mlflow_run_id")
    assert run.data.tags["preset"] == "cubic_mlp"
    assert run.data.metrics["test_accuracy"] > 0.5
    assert run.info.status == "FINISHED"
    assert sh([DVC, "remote", "default"], clone, env).stdout.strip() == "rt"
