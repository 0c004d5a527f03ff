"""Model cards on a real embedded sqlite store: each version the gate decides on gets
``model_card/model_card.md`` in its run, beside the thumbnails evaluate@ logs, and its
description links to it; promoting by hand rewrites the card with the new decision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import tracking
from pipeline.report import card
from pipeline.tracking import cards

CLASSES = ["0", "2", "5"]
N_TEST = 300


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    import mlflow

    folder = tmp_path_factory.mktemp("cards")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        client = mlflow.MlflowClient(tracking_uri=uri)
        client.exp_id = tracking.setup("card-tests", root=folder)
        client.folder = folder
        yield client


def trained_version(client, name: str, wrong: int) -> str:
    """A run logged as train@ and evaluate@ log it (params, env tags, epoch times, test
    metrics, predictions.csv, the card's thumbnails) and the version it registered; the
    model reads ``wrong`` of the first test images of class 5 as 0."""
    tags = {"git_dirty": "false", "dataset": "digits025", "family": "keras"}
    tags |= {"env.cpu_model": "Test CPU", "env.cpus": "2", "env.fingerprint": "f00d"}
    run_id = client.create_run(client.exp_id, tags=tags).info.run_id
    params = {"seed": "42", "model.arch": "flatten | dense(3, activation=softmax)"}
    params |= {"model.train.epochs": "2", "model.train.learning_rate": "0.01"}
    params |= {f"dataset.classes.{i}": c for i, c in enumerate(CLASSES)}
    params |= {"dataset.n_train": "900", "dataset.n_val": "100", "dataset.n_test": str(N_TEST)}
    for key, value in params.items():
        client.log_param(run_id, key, value)
    for epoch, seconds in ((1, 1.25), (2, 0.75)):
        client.log_metric(run_id, "epoch_seconds", seconds, step=epoch)
    actual = np.array([CLASSES[i % 3] for i in range(N_TEST)])
    predicted = actual.copy()
    predicted[np.flatnonzero(actual == "5")[:wrong]] = "0"
    accuracy = float((actual == predicted).mean())
    client.log_metric(run_id, "test_accuracy", accuracy)
    folder = client.folder / run_id
    folder.mkdir()
    lines = ["actual,predicted", *(f"{a},{p}" for a, p in zip(actual, predicted, strict=True))]
    (folder / "predictions.csv").write_text("\n".join(lines) + "\n")
    client.log_artifact(run_id, str(folder / "predictions.csv"), artifact_path="evaluation")
    x = np.random.default_rng(wrong).random((N_TEST, 28, 28, 1)).astype(np.float32)
    card.write_material(folder / "card", x, actual, predicted, {"source": "mnist"})
    client.log_artifacts(run_id, str(folder / "card"), artifact_path=card.CARD_DIR)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    client.create_model_version(
        name, folder.as_uri(), run_id=run_id, tags={"dataset_dvc_md5": "md5-a.dir"}
    )
    client.set_terminated(run_id)
    assert tracking.tag_test_accuracy(name, run_id, accuracy)
    return run_id


def card_text(client, run_id: str, tmp_path) -> str:
    path = client.download_artifacts(run_id, cards.CARD_ARTIFACT, str(tmp_path / run_id))
    return Path(path).read_text()


@pytest.mark.slow
def test_a_decided_version_has_its_card_linked_from_its_description(client, tmp_path):
    run_id = trained_version(client, "c", wrong=5)  # evaluate@'s tag writes the first card
    assert "Not decided: the gate" in card_text(client, run_id, tmp_path / "before")
    v1 = client.get_model_version("c", "1")
    assert v1.description.startswith("Model card: [model_card/model_card.md](#/experiments/")
    tracking.promote(client, "c", run_id)
    listed = {f.path for f in client.list_artifacts(run_id, card.CARD_DIR)}
    assert cards.CARD_ARTIFACT in listed and "model_card/confusion_5_as_0.png" in listed
    text = card_text(client, run_id, tmp_path)
    assert "# Model card: c version 1" in text and "Decision: **champion**." in text
    assert "| `5` | `0` | 5 | ![5 read as 0](confusion_5_as_0.png) |" in text
    assert "| source | `mnist` |" in text
    assert "| train / val / test images | 900 / 100 / 300 |" in text
    assert "| training time (sum of the epochs) | 2.0 s |" in text and "Test CPU" in text
    assert "`flatten | dense(3, activation=softmax)`" in text
    v1 = client.get_model_version("c", "1")
    link = f"#/experiments/{client.exp_id}/runs/{run_id}/artifactPath/model_card/model_card.md"
    assert v1.description.startswith("Gate: c: champion -> v1")
    assert f"]({link})" in v1.description and f"runs:/{run_id}/model_card/model_card.md" in (
        v1.description
    )


@pytest.mark.slow
def test_promoting_by_hand_rewrites_the_card(client, tmp_path):
    tracking.promote(client, "h", trained_version(client, "h", wrong=2))
    worse = trained_version(client, "h", wrong=8)
    tracking.promote(client, "h", worse)
    assert "Decision: **challenger**." in card_text(client, worse, tmp_path / "a")
    tracking.promote_by_hand("h", "2", client=client)
    text = card_text(client, worse, tmp_path / "b")
    assert "Decision: **champion** (promoted by hand)." in text
    assert "| compared with version | `1` |" in text
    description = client.get_model_version("h", "2").description
    assert "promoted by hand" in description and description.count("Model card: ") == 1
