"""A real `dvc repro` of the whole pipeline on the tiny profile, in a temporary copy.

Reads back the metrics files, the figures and the MLflow runs through the MLflow client;
checks that a second `dvc repro` does nothing and that a param change reruns only the
stages that depend on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import EXP_LR, EXP_NAME, copy_tiny, plain_env, run_queue, sh, stages_run

pytestmark = [pytest.mark.slow, pytest.mark.network]


def mlflow_store(root: Path):
    """The client of the copy's MLflow store and the id of the pipeline's experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    return client, client.get_experiment_by_name("mnist").experiment_id


def run_ids(client, exp_id: str) -> set[str]:
    return {r.info.run_id for r in client.search_runs([exp_id])}


def runs_since(client, exp_id: str, before: set[str]) -> list:
    return [r for r in client.search_runs([exp_id]) if r.info.run_id not in before]


@pytest.fixture(scope="module")
def project(tiny_built, tmp_path_factory):
    """A private copy of the shared tiny project (its `dvc repro` ran in a plain shell: no
    venv on PATH, stage commands found the project's Python through bin/python)."""
    root = copy_tiny(tiny_built, tmp_path_factory.mktemp("e2e") / "proj")
    return root, plain_env(), (root / ".repro.log").read_text()


def test_every_stage_ran_and_wrote_its_outputs(project):
    root, _, out = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    models = list(params["models"])
    expected = {"check_params", "fetch", "validate", "plot"}
    expected |= {f"prepare@{d}" for d in params["datasets"]}
    expected |= {f"{s}@{m}" for s in ("train", "evaluate") for m in models}
    assert stages_run(out) == expected
    raw = root / "data" / "raw" / "mnist"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ]
    )
    assert (root / "reports" / "validation" / "index.html").is_file()
    meta = json.loads((root / "data" / "prepared" / "digits10" / "meta.json").read_text())
    assert meta["sizes"]["train"] + meta["sizes"]["val"] == 1000
    assert meta["sizes"]["test"] == 10000
    for m in models:
        metrics = json.loads((root / "metrics" / f"{m}.json").read_text())
        assert set(metrics) >= {"accuracy", "loss", "macro_f1"}
        assert "per_class" not in metrics  # its own file: `dvc exp show` stays readable
        per_class = json.loads((root / "plots" / m / "tables" / "per_class.json").read_text())
        chance = 1 / len(per_class)
        assert 0.0 <= metrics["accuracy"] <= 1.0
        arch = params["models"][m].get("arch", [])  # an ensemble has members instead
        uses_bn = not arch or any(layer.get("batch_norm") for layer in arch)
        if not uses_bn:  # batch-norm moving statistics need more than one tiny epoch
            assert metrics["accuracy"] > chance + 0.1, (m, metrics["accuracy"])
        history = (root / "models" / m / "history.csv").read_text().splitlines()
        assert len(history) == params["models"][m].get("train", {"epochs": 1})["epochs"] + 1
        images = {p.name for p in (root / "plots" / m / "images").iterdir()}
        assert {"curves.png", "confusion_matrix.png", "predictions_grid.png"} <= images
        if arch and arch[0]["type"] == "conv":
            assert {"kernels.png", "feature_maps.png"} <= images
        assert (root / "plots" / m / "predictions.csv").read_text().startswith("actual,predicted")
    compare = {p.name for p in (root / "plots" / "compare").iterdir()}
    assert {"test_accuracy.png", "validation_curves.png"} <= compare
    digits025 = [m for m, spec in params["models"].items() if spec["dataset"] == "digits025"]
    for m in digits025:  # DVC's plots name the classes as the PNGs do
        pairs = (root / "plots" / m / "confusion.csv").read_text().splitlines()
        assert pairs[0] == "actual,predicted,count" and len(pairs) == 1 + 9
        assert {line.split(",")[0] for line in pairs[1:]} == {"0", "2", "5"}


def test_mlflow_has_one_run_per_model_with_the_contract(project):
    root, _, _ = project
    client, exp_id = mlflow_store(root)
    every = client.search_runs([exp_id])
    runs = [r for r in every if "preset" in r.data.tags]
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert sorted(r.data.tags["preset"] for r in runs) == sorted(params["models"])
    compare = [r for r in every if r.data.tags.get("run_kind") == "compare"]
    assert len(compare) == 1 and len(every) == len(runs) + 1  # one per pipeline execution
    assert len({r.data.tags["repro_id"] for r in every}) == 1
    assert {a.path for a in client.list_artifacts(compare[0].info.run_id, "compare")} >= {
        "compare/test_accuracy.png",
        "compare/validation_curves.png",
    }
    assert compare[0].data.params[f"run.{runs[0].data.tags['preset']}"] == runs[0].info.run_id
    for r in runs:
        name = r.data.tags["preset"]
        metrics = json.loads((root / "metrics" / f"{name}.json").read_text())
        assert r.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
        assert r.data.tags["mlflow.source.git.commit"] and "git_commit" not in r.data.tags
        assert r.data.tags["git_dirty"] == "false"  # dvc.lock and outs do not count
        assert r.data.tags["dataset_dvc_md5"].endswith(".dir")
        epochs = params["models"][name].get("train", {}).get("epochs")  # an ensemble: none
        assert r.data.params.get("model.train.epochs") == (epochs and str(epochs))
        assert "dataset.classes.0" in r.data.params
        epochs = client.get_metric_history(r.info.run_id, "val_accuracy")
        assert [m.step for m in epochs] == list(range(1, len(epochs) + 1))
        arts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"evaluation", "history.csv", "confusion_matrix.png"} <= arts
        assert "compare" not in arts  # cross-model figures never rewrite a training run
        evaluation = {a.path for a in client.list_artifacts(r.info.run_id, "evaluation")}
        assert "evaluation/images" in evaluation and "evaluation/tables" in evaluation
        logged = client.search_logged_models(
            [exp_id], filter_string=f"source_run_id = '{r.info.run_id}'"
        )
        assert sorted(m.name for m in logged) == sorted([name, "serving"])  # + the servable
        champion = client.get_model_version_by_alias(name, "champion")  # the registry, in sqlite
        assert champion.run_id == r.info.run_id
        assert float(champion.tags["test_accuracy"]) == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_logged_models_predict_like_the_stage(project):
    import mlflow
    import numpy as np

    root, _, _ = project
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    test = np.load(root / "data" / "prepared" / "digits10" / "test.npz")
    x, y = test["x"][:200], test["y"][:200]
    for name in ("scratch_cnn", "keras_small_cnn"):
        run_id = (root / "models" / name / "mlflow_run_id").read_text().strip()
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/{name}")  # named after the preset
        proba = np.asarray(model.predict(x))
        assert proba.shape == (200, 10)
        predictions = (root / "plots" / name / "predictions.csv").read_text().splitlines()[1:201]
        expected = np.array([int(line.split(",")[1]) for line in predictions])
        assert (proba.argmax(1) == expected).mean() >= 0.99
        assert (expected == y).mean() > 0.2


def test_second_repro_does_nothing(project):
    root, env, _ = project
    again = sh(["bin/dvc", "repro"], root, env)
    assert stages_run(again.stdout) == set()
    assert "Data and pipelines are up to date" in again.stdout


def test_param_change_reruns_only_the_affected_stages(tiny_experiment, tmp_path):
    """`dvc exp run -S` of one model's learning rate (run once for the session by
    conftest.py's tiny_experiment: the compare tests read its run too)."""
    out = (tiny_experiment / ".exp.log").read_text()
    # check_params reads all of params.yaml: it reruns (a second) and its stamp is unchanged
    assert stages_run(out) == {"check_params", "train@dense_mlp", "evaluate@dense_mlp", "plot"}
    root, env = copy_tiny(tiny_experiment, tmp_path / "proj"), plain_env()
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["models"]["dense_mlp"]["train"]["learning_rate"] == float(EXP_LR)  # in place
    again = sh(["bin/dvc", "repro"], root, env)
    assert stages_run(again.stdout) == set()
    proc = sh(["bin/dvc", "exp", "show", "--json"], root, env)
    assert "dense_mlp" in proc.stdout and EXP_NAME in proc.stdout
    shown = sh(["bin/dvc", "metrics", "show", "--json"], root, env).stdout
    assert "metrics/dense_mlp.json" in shown


def test_dataset_change_invalidates_only_its_own_branch(project):
    root, env, _ = project
    params_file = root / "params.yaml"
    before = params_file.read_text()
    params = yaml.safe_load(before)
    params["datasets"]["digits025"]["val_fraction"] = 0.25
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(sh(["bin/dvc", "status", "--json"], root, env).stdout)
    finally:
        params_file.write_text(before)
    on_digits025 = [m for m, spec in params["models"].items() if spec["dataset"] == "digits025"]
    # `dvc status` lists the stages whose own deps or params changed: evaluate@ follows
    # once train@ has rewritten the model.
    expected = {"prepare@digits025"} | {f"train@{m}" for m in on_digits025}
    changed = {name.split(":")[-1] for name in status}
    assert expected <= changed
    assert "prepare@digits10" not in changed and "fetch" not in changed
    assert not any(s.endswith("@keras_cnn") for s in changed)


def test_temp_experiment_lands_in_the_same_store(project):
    """`dvc exp run --temp` runs in a copy under .dvc/tmp/exps: its run must reach the
    workspace's store, not a store inside the copy that DVC deletes afterwards."""
    root, env, _ = project
    client, exp_id = mlflow_store(root)
    before = run_ids(client, exp_id)
    sh(
        [
            "bin/dvc",
            "exp",
            "run",
            "--temp",
            "-S",
            "models.cubic_mlp.train.learning_rate=0.02",
        ],
        root,
        env,
    )
    new = runs_since(client, exp_id, before)
    assert sorted(r.data.tags.get("run_kind", "") for r in new if "preset" not in r.data.tags) == [
        "compare"
    ]
    new = [r for r in new if "preset" in r.data.tags]
    assert [r.data.tags["preset"] for r in new] == ["cubic_mlp"]
    assert new[0].data.params["model.train.learning_rate"] == "0.02"
    assert new[0].data.tags.get("dvc_exp_name")
    assert new[0].info.status == "FINISHED"


def test_queued_experiments_land_in_the_same_store(project):
    root, env, _ = project
    client, exp_id = mlflow_store(root)
    before = run_ids(client, exp_id)
    dvc = "bin/dvc"
    for lr in ("0.03", "0.04"):
        sh(
            [dvc, "exp", "run", "--queue", "-S", f"models.dense_mlp.train.learning_rate={lr}"],
            root,
            env,
        )
    status = run_queue(dvc, root, env, jobs=2, timeout=900)
    assert "Failed" not in status, status
    new = [r for r in runs_since(client, exp_id, before) if "preset" in r.data.tags]
    assert sorted(r.data.params["model.train.learning_rate"] for r in new) == ["0.03", "0.04"]
    assert all(r.data.tags.get("dvc_exp_name") for r in new)
    assert all(r.info.status == "FINISHED" for r in new)
