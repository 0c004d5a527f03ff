"""dvc.yaml's top-level plots: every model of params.yaml has its two plots, titled
"<model>: ..." (tools/vega/template.html turns the prefix into a heading), on files its
evaluate stage writes; the comparison comes first. DVC cannot loop over models there, so
this is what catches a model added to params.yaml without its plots."""

from __future__ import annotations

import yaml

from tests.helpers import REPO


def _load() -> tuple[dict, dict]:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return dvc, params


def test_every_model_has_its_plots_titled_by_model():
    dvc, params = _load()
    plots = [next(iter(p.items())) for p in dvc["plots"]]
    ids = [pid for pid, _ in plots]
    assert len(ids) == len(set(ids))
    assert ids[0] == "compare: test accuracy"
    expected = ["compare: test accuracy"]
    for m in params["models"]:
        expected += [f"{m}: accuracy per epoch", f"{m}: confusion matrix"]
    assert ids == expected  # grouped per model, in params.yaml's order
    for pid, spec in plots:
        group = pid.split(": ")[0]
        assert spec["title"].startswith(f"{group}: "), (pid, spec["title"])
        if pid.endswith("accuracy per epoch"):
            assert spec["x"] == "epoch"
            assert spec["y"] == {f"plots/{group}/history.csv": ["accuracy", "val_accuracy"]}
        elif pid.endswith("confusion matrix"):
            assert spec["template"] == "confusion_counts" and spec["x"] == "predicted"
            assert spec["y"] == {f"plots/{group}/confusion.csv": "actual"}


def test_plotted_files_are_stage_outputs():
    dvc, _ = _load()
    stages = dvc["stages"]
    evaluate = {
        str(next(iter(o)) if isinstance(o, dict) else o) for o in stages["evaluate"]["do"]["outs"]
    }
    assert {"plots/${key}/history.csv", "plots/${key}/confusion.csv"} <= evaluate
    assert "plots/compare/accuracy.csv" in stages["plot"]["outs"]
    # the top-level section draws them; no stage draws them a second time
    assert not any("plots" in s.get("do", s) for s in stages.values())
