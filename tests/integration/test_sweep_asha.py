"""ASHA prunes trials mid-run, the sweep still ends, and each child run's ``pruned`` tag says
whether ASHA stopped it (pipeline/sweep/run.py, pipeline/tracking/sweeps.py).

The tag was always "false": Tune's stop result carries done=True like a last epoch's, so
the old test (``not done``) never saw a pruned trial (Ray 2.60); this test fails on that.
One trial runs at a time, so a trial that kept its slot of max_concurrent_trials after its
stop would hang the sweep (seen once on the default data with workers reused between
trials, hence ``reuse_actors`` off under ASHA). This small sweep does not reproduce that
hang: it passes with ``reuse_actors=True`` too (measured, 52 s), so it guards the tag and
ASHA's end-to-end path, not the reuse choice.
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tests.integration.sweep_project import make_project, runs, sweep

pytestmark = pytest.mark.slow


def test_asha_prunes_trials_and_tags_them_pruned(tmp_path):
    # val_loss (not accuracy, which ties at 1.0 on these synthetic digits) lets ASHA rank;
    # learning rates from 1e-5 to 0.05 (seed 3 draws 7.8e-4, 1.2e-4, 4.2e-3, 1.1e-3): the slow
    # learners fall behind at the first rung and ASHA stops them.
    root = make_project(
        tmp_path, trials=4, epochs=4, batch=16, images=6040, max_concurrent=1,
        space={"train.learning_rate": {"loguniform": [1e-5, 0.05]}},
        metric="val_loss", mode="min", asha={"grace_period": 1, "reduction_factor": 2},
    )  # fmt: skip
    done = sweep(root, timeout=420)
    assert done.returncode == 0, done.stderr[-4000:]
    _, kids = runs(root)
    assert len(kids) == 4 and {k.info.status for k in kids} == {"FINISHED"}, [
        (k.info.status, k.data.tags) for k in kids
    ]
    pruned = [k for k in kids if k.data.tags.get("pruned") == "true"]
    seen = [(k.data.params.get("train.learning_rate"), k.data.tags.get("pruned"),
             k.data.metrics.get("val_loss")) for k in kids]  # fmt: skip
    assert pruned, f"no trial was pruned (ASHA's stop not exercised): {seen}"
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    for kid in kids:
        epochs = len(client.get_metric_history(kid.info.run_id, "val_loss"))
        assert (kid.data.tags["pruned"] == "true") == (epochs < 4), (epochs, seen)
    assert "ERROR" not in done.stderr.replace("errored", ""), done.stderr[-3000:]
