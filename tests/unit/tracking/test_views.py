"""The saved view "Figures" (pipeline/tracking/views.py): its tag value has the shape MLflow
3.17's UI reads, evaluate@'s ``log_images`` gives a real sqlite store's experiment the view
once, keeping a view a user saved over it, and ``make ui`` (pipeline/devtools/ui.py, which
cannot import it) finds it and prints its address."""

from __future__ import annotations

import json

import mlflow
from PIL import Image

from pipeline import tracking
from pipeline.devtools import ui
from pipeline.tracking import views


def test_the_view_is_an_envelope_of_image_cards_without_the_run_params():
    value = json.loads(views.envelope(("confusion_matrix", "curves"), now_ms=1700000000000))
    # savedViewEnvelope.ts: a string name, a number createdAt, a string state
    assert value["name"] == "Figures" and value["createdAt"] == 1700000000000
    state = json.loads(value["state"])
    cards = state["compareRunCharts"]
    assert [c["imageKeys"] for c in cards] == [["confusion_matrix"], ["curves"]]
    assert all(c["type"] == "IMAGE" and c["showRunParams"] is False for c in cards)
    assert all(c["step"] == 0 and c["metricSectionId"] == views.SECTION for c in cards)
    (section,) = state["compareRunSections"]
    assert section["uuid"] == views.SECTION and section["columns"] == 1
    assert views.image_keys(views.envelope(("confusion_matrix",))) == ("confusion_matrix",)
    # a view saved over from the UI (its state deflate-compressed), or no view at all
    assert views.image_keys(json.dumps({"name": "x", "createdAt": 1, "state": "eJzz"})) == ()
    assert views.image_keys("not json") == ()
    assert views.query("7") == (
        "experiments/7/runs?viewStateShareKey=figures"
        "&workflowType=machine_learning&compareRunsMode=CHART"
    )
    # make ui's copy of the view's id and address
    assert (ui.FIGURES_VIEW, ui.FIGURES_TAG) == (views.VIEW_ID, views.VIEW_TAG)
    assert ui.figures_url("http://h:1", "7") == "http://h:1/#/" + views.query("7")


def test_log_images_gives_the_experiment_the_view_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = tracking.setup("views", root=tmp_path)
    figures = tmp_path / "figures"
    figures.mkdir()
    Image.new("RGB", (32, 32), "navy").save(figures / "confusion_matrix.png")
    client = mlflow.MlflowClient()
    uri = tracking.tracking_uri(tmp_path)
    assert not ui.has_figures_view(uri, exp_id)

    with tracking.execution_run("evaluate", {}):
        tracking.log_images(figures)
    value = client.get_experiment(exp_id).tags[views.VIEW_TAG]
    assert views.image_keys(value) == tracking.runs.IMAGE_KEYS
    assert ui.has_figures_view(uri, exp_id)
    assert not ui.has_figures_view(uri, "999")
    assert not ui.has_figures_view("http://127.0.0.1:5000", exp_id)  # a server: not read

    client.set_experiment_tag(exp_id, views.VIEW_TAG, '{"name": "mine"}')  # saved over
    with tracking.execution_run("evaluate", {}):
        tracking.log_images(figures)
    assert client.get_experiment(exp_id).tags[views.VIEW_TAG] == '{"name": "mine"}'
