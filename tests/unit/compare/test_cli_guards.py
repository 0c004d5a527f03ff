"""make compare's guards (#27), against a real sqlite store."""

from __future__ import annotations

import mlflow

from pipeline import tracking
from pipeline.compare import analysis, cli
from pipeline.core import config
from tests.helpers import empty_store


def test_the_commit_row_reads_the_tag_runs_carry():
    keys = dict(analysis.PROVENANCE_TAGS)
    assert keys["mlflow.source.git.commit"] == "git commit"
    assert "git_commit" not in keys


def test_a_run_compared_with_itself_is_refused_before_logging(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(config, "ROOT", tmp_path)
    empty_store(tmp_path)
    tracking.setup("self", root=tmp_path)
    csv = tmp_path / config.PREDICTIONS_CSV
    csv.write_text("index,actual,predicted\n0,1,1\n1,2,0\n")
    with mlflow.start_run(tags={"preset": "dense_mlp"}) as run:
        mlflow.log_artifact(str(csv), config.EVALUATION_ARTIFACTS)
        mlflow.log_param("dataset.classes", "[1, 2]")
    run_id = run.info.run_id
    assert cli.main([run_id, run_id, "-o", str(tmp_path / "r.html")]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("compare:")]
    assert len(err) == 1 and "same run" in err[0] and run_id in err[0]
    assert not (tmp_path / "r.html").exists()
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id)]
    assert artifacts == [config.EVALUATION_ARTIFACTS]
