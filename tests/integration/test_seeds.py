"""``make seeds`` on a copy of the tiny project (pipeline/devtools/seeds.py): two seeds of
dense_mlp are two temporary DVC experiments of the real stages, two MLflow runs of the study;
the mean and std come from the experiments' metrics files; the workspace, dvc.lock and the
champion stay as they were."""

from __future__ import annotations

import json
import statistics
import subprocess

import pytest

from pipeline.devtools import seeds
from tests.helpers import copy_tiny, plain_env

pytestmark = pytest.mark.slow
PRESET = "dense_mlp"  # 2 epochs on 600 images in the tiny profile
KEPT = ("dvc.lock", "params.yaml", f"metrics/{PRESET}.json")


def test_two_seeds_are_two_runs_and_their_spread(tiny_built, tmp_path):
    from mlflow import MlflowClient

    root = copy_tiny(tiny_built, tmp_path / "proj")
    before = {p: (root / p).read_bytes() for p in KEPT}
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    champion = client.get_model_version_by_alias(PRESET, "champion").version
    out = subprocess.run(
        ["bin/python", "-m", "pipeline.devtools.seeds", PRESET, "--seeds", "1,2"],
        cwd=root, env=plain_env(), capture_output=True, text=True, timeout=1500, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert [ln for ln in lines if f"seeds: {PRESET} seed " in ln and "test accuracy" in ln]

    accuracy = []  # from each experiment's metrics/dense_mlp.json
    for s in summary["seeds"]:
        rev = seeds.experiment_rev(root, s["experiment"])
        metrics = seeds.experiment_metrics(root, rev, PRESET)
        assert s["accuracy"] == metrics["accuracy"]
        accuracy.append(metrics["accuracy"])
    assert summary["mean"] == pytest.approx(statistics.fmean(accuracy), abs=1e-6)
    assert summary["std"] == pytest.approx(statistics.stdev(accuracy), abs=1e-6)
    doc = (root / "docs" / "benchmarks.md").read_text()
    assert f"**{summary['mean']:.4f} ± {summary['std']:.4f}**" in doc

    exp = client.get_experiment_by_name("mnist").experiment_id
    runs = client.search_runs([exp], f"tags.repro_id = '{summary['study']}'")
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
    assert {r.info.run_id for r in runs} == {s["run_id"] for s in summary["seeds"]}
    assert sorted(r.data.metrics["test_accuracy"] for r in runs) == sorted(accuracy)
    assert all(r.data.tags["dvc_exp_name"].startswith(summary["study"]) for r in runs)

    assert {p: (root / p).read_bytes() for p in KEPT} == before  # the workspace as it was
    assert client.get_model_version_by_alias(PRESET, "champion").version == champion
    for r in runs:  # each version has its card (evaluate@), undecided: plot never ran
        (version,) = client.search_model_versions(
            f"name = '{PRESET}' and run_id = '{r.info.run_id}'"
        )
        assert "gate.decision" not in version.tags
        assert version.description.startswith("Model card: ")
        listed = {f.path for f in client.list_artifacts(r.info.run_id, "model_card")}
        assert "model_card/model_card.md" in listed
