"""Sweeps on a real Ray (pipeline/sweep/): a worker killed mid-trial, then interrupt and
resume after Ctrl-C (one sweep). The two-node cluster test is in test_server.py (against the
team server), ASHA's pruning in test_sweep_asha.py, and the 4-trial sweep of a shipped sweep
with --apply in test_sweep_apply.py (it needs the tiny DVC project).

The test builds a small project of its own (tests/integration/sweep_project.py: synthetic
digits in data/prepared/, a sqlite MLflow store) and runs `python -m pipeline.sweep` in a
subprocess, as a user would; Ray's session files and token go under the test's folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.sweep_project import PY, SWEEP, env_for, make_project, runs, sweep

pytestmark = pytest.mark.slow


def best_json(root: Path) -> dict:
    return json.loads((root / "data/cache/sweeps" / f"{SWEEP}.best.json").read_text())


def slow_project(root: Path, trials: int) -> Path:
    """Trials long enough to be caught mid-training (40 epochs of 2,000 images, batch 16:
    several seconds each even on idle cores), without ASHA (it could stop them first)."""
    return make_project(root, trials=trials, epochs=40, batch=16, images=2040, asha=None)


def kids_now(root: Path) -> list:
    try:
        return runs(root)[1]
    except Exception:  # the store does not exist yet, or the driver holds sqlite's lock
        return []


def training_now(kids: list) -> list:
    """Child runs RUNNING whose trial has reported an epoch (tag ``pid``: its Ray worker)."""
    return [k for k in kids if k.info.status == "RUNNING" and k.data.tags.get("pid")]


def start_sweep(root: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    """``python -m pipeline.sweep tiny`` in the background; its output goes to a file."""
    log = root / "sweep.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [PY, "-m", "pipeline.sweep", SWEEP], cwd=root, env=env, stdout=out, stderr=out
        )
    return proc, log


def wait_for(what, timeout: float = 600, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        found = what()
        if found:
            return found
        time.sleep(0.2)
    return None


def test_killed_worker_is_retried_then_interrupt_and_resume(tmp_path):
    """One sweep for two behaviours (one Ray start and one set of trials instead of two):
    a Ray worker killed mid-trial is retried in a new worker; then Ctrl-C once a trial has
    finished and the third is training, and --resume runs only the trials not finished."""
    root = slow_project(tmp_path, trials=3)  # 2 at a time: the third starts after one ends
    env = env_for(root)
    proc, log = start_sweep(root, env)

    def one_done_one_training() -> bool:
        """Trial 0 or 1 finished and trial 2 mid-training (2 at a time)."""
        kids = kids_now(root)
        later = [k for k in training_now(kids) if int(k.data.params["trial_index"]) >= 2]
        return bool(later) and any(k.info.status == "FINISHED" for k in kids)

    try:
        running = wait_for(lambda: training_now(kids_now(root)), proc=proc)
        assert running, "no trial started training: " + log.read_text()[-3000:]
        victim = running[0]
        os.kill(int(victim.data.tags["pid"]), signal.SIGKILL)  # its Ray worker, mid-training
        assert wait_for(one_done_one_training, proc=proc), log.read_text()[-3000:]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert proc.returncode == 130, output[-4000:]
    assert "--resume" in output
    parents, kids = runs(root)
    assert parents[0].info.status == "KILLED"
    assert "RUNNING" not in {k.info.status for k in kids}
    done = {k.info.run_id: k for k in kids if k.info.status == "FINISHED"}
    assert 1 <= len(done) < 3

    out = sweep(root, "--resume", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    parents, kids = runs(root)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 3 and {k.info.status for k in kids} == {"FINISHED"}
    assert sorted(k.data.params["trial_index"] for k in kids) == ["0", "1", "2"]
    for k in kids:  # the trials finished before Ctrl-C were not run again
        if k.info.run_id in done:
            assert k.info.end_time == done[k.info.run_id].info.end_time
            assert k.data.tags["pid"] == done[k.info.run_id].data.tags["pid"]
    assert len(re.findall(r"\] trial \d+ +FINISHED", out.stdout)) == 3 - len(done)  # rerun ones
    assert f"[{len(done) + 1}/3] trial" in out.stdout  # the count goes on
    assert best_json(root)["trials"] == 3
    again = {k.info.run_id: k for k in kids}[victim.info.run_id]
    assert again.data.tags.get("retried") == "true"  # FailureConfig ran it again
    assert again.data.tags["pid"] != victim.data.tags["pid"]  # in a new worker
    assert again.data.metrics["val_accuracy"] > 0.5
