"""The Model Registry and run-contract additions of pipeline/tracking/ on a real
embedded sqlite store: the champion alias moves only to a better version, git_dirty ignores
DVC's own outputs, an unreachable tracking server is one line naming it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline import tracking
from tests.helpers import empty_store


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A client of one sqlite store (tracking and registry) for the module: each test
    registers models of its own names."""
    import mlflow

    folder = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        empty_store(folder)
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
        client.exp_id = tracking.setup("registry-tests", root=folder)
        client.model_dir = folder / "model"
        client.model_dir.mkdir()
        yield client


N_TEST = 1000  # test images of the predictions files the helpers log


def log_predictions(
    client, run_id: str, right: int, tmp: Path, broken: int = 0, wrong_class: str | None = None
) -> int:
    """A real ``evaluation/predictions.csv`` (as evaluate@ logs it) on ``N_TEST`` images of
    classes ``i % 10``: right on the first ``right`` of them except ``broken`` images taken
    from the start, so versions with more right images fix images of the ones with fewer, and
    wrong on every image of ``wrong_class``; the number of right images."""
    actual = [str(i % 10) for i in range(N_TEST)]
    ok = [broken <= i < right + broken and a != wrong_class for i, a in enumerate(actual)]
    predicted = [a if good else str((int(a) + 1) % 10) for a, good in zip(actual, ok, strict=True)]
    folder = tmp / run_id
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["actual,predicted", *(f"{a},{p}" for a, p in zip(actual, predicted, strict=True))]
    (folder / "predictions.csv").write_text("\n".join(lines) + "\n")
    client.log_artifact(run_id, str(folder / "predictions.csv"), artifact_path="evaluation")
    return sum(ok)


def new_version(
    client,
    name: str,
    accuracy: float | None,
    *,
    split: str = "md5-a.dir",
    run_tags: dict | None = None,
    broken: int = 0,
    wrong_class: str | None = None,
) -> str:
    """A run of committed code and the version of ``name`` it registered, tagged as train@
    and evaluate@ tag them, with per-image predictions right on ``accuracy`` of the images."""
    tags = {"git_dirty": "false"} | (run_tags or {})
    run_id = client.create_run(client.exp_id, tags=tags).info.run_id
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    client.create_model_version(
        name, client.model_dir.as_uri(), run_id=run_id, tags={"dataset_dvc_md5": split}
    )
    if accuracy is not None:
        folder = client.model_dir.parent / "preds"
        right = log_predictions(
            client, run_id, round(accuracy * N_TEST), folder, broken, wrong_class
        )
        assert tracking.tag_test_accuracy(name, run_id, right / N_TEST)
    return run_id


def champion(client, name: str) -> str:
    return str(client.get_model_version_by_alias(name, tracking.CHAMPION).version)


@pytest.mark.slow
def test_champion_moves_only_to_a_better_version(client):
    first = new_version(client, "m", 0.80)
    line = tracking.promote(client, "m", first)
    assert champion(client, "m") == "1" and "champion -> v1" in line and "the first" in line

    better = new_version(client, "m", 0.90)
    line = tracking.promote(client, "m", better)
    assert champion(client, "m") == "2" and "v1 -> v2" in line and "beats 0.8000" in line

    worse = new_version(client, "m", 0.85)
    line = tracking.promote(client, "m", worse)
    assert champion(client, "m") == "2", "moved to a worse model"
    assert line == "m: champion stays v2 (test_accuracy 0.9000); v3 has 0.8500"

    tie = new_version(client, "m", 0.90)
    tracking.promote(client, "m", tie)
    assert champion(client, "m") == "2"  # a tie does not beat the champion

    again = tracking.promote(client, "m", better)
    assert champion(client, "m") == "2" and "stays v2" in again


@pytest.mark.slow
def test_champion_unchanged_without_a_test_accuracy_or_a_version(client):
    tracking.promote(client, "n", new_version(client, "n", 0.5))
    pending = new_version(client, "n", None)
    assert "no test_accuracy yet" in tracking.promote(client, "n", pending)
    stray = client.create_run(client.exp_id).info.run_id
    assert "registered no version" in tracking.promote(client, "n", stray)
    assert "registered no version" in tracking.promote(client, "never-registered", stray)
    assert champion(client, "n") == "1"


@pytest.mark.slow
def test_promote_champions_logs_one_line_a_model(client, caplog):
    runs = {"a": new_version(client, "a", 0.7), "b": new_version(client, "b", 0.6)}
    with caplog.at_level("INFO", logger="pipeline.tracking.registry"):
        lines = tracking.promote_champions(runs)
    assert len(lines) == 2 and [r.getMessage() for r in caplog.records] == lines
    assert champion(client, "a") == "1" and champion(client, "b") == "1"


def version_of(client, name: str, run_id: str):
    return tracking.registry.run_version(client, name, run_id)


def alias(client, name: str, which: str) -> str | None:
    import mlflow

    try:
        return str(client.get_model_version_by_alias(name, which).version)
    except mlflow.exceptions.MlflowException:
        return None


@pytest.mark.slow
def test_gate_needs_evidence_not_any_margin(client):
    """Better by a handful of images (3 fixed, 0 broken: p = 0.125) -> challenger; better by
    50 images -> champion; the decision and its numbers on the version and its description."""
    tracking.promote(client, "g", new_version(client, "g", 0.900))
    handful = new_version(client, "g", 0.903)
    line = tracking.promote(client, "g", handful)
    assert champion(client, "g") == "1" and alias(client, "g", "challenger") == "2", line
    assert "not significant (p=0.125 >= alpha 0.05)" in line and "fixed 3, broken 0" in line
    v2 = version_of(client, "g", handful)
    assert v2.tags["gate.decision"] == "challenger" and v2.tags["gate.p_value"] == "0.125"
    assert v2.tags["gate.fixed"] == "3" and v2.tags["gate.champion"] == "1"
    assert v2.description.startswith(f"Gate: {line}\n\nModel card: ")  # + its card link

    clearly = new_version(client, "g", 0.950)
    line = tracking.promote(client, "g", clearly)
    assert champion(client, "g") == "3" and "champion v1 -> v3" in line, line
    assert "fixed 50, broken 0" in line and alias(client, "g", "challenger") == "2"
    v3 = version_of(client, "g", clearly)
    assert v3.tags["gate.decision"] == "champion" and float(v3.tags["gate.p_value"]) < 1e-10

    # settings from params: alpha 0.2 lets the handful through
    loose = tracking.registry.gate.Settings(alpha=0.2)
    tracking.promote(client, "g2", new_version(client, "g2", 0.900))
    line = tracking.promote(client, "g2", new_version(client, "g2", 0.903), loose)
    assert champion(client, "g2") == "2", line


@pytest.mark.slow
def test_gate_blocks_a_class_recall_drop_and_another_split(client):
    tracking.promote(client, "h", new_version(client, "h", 0.80))
    dropped = new_version(client, "h", 1.0, wrong_class="3")  # 0.90, class 3 at 0%
    line = tracking.promote(client, "h", dropped)
    assert champion(client, "h") == "1", line
    assert "class 3 recall drops 80.00 points > 0.5" in line

    other = new_version(client, "h", 0.99, split="md5-b.dir")  # clearly better, other split
    line = tracking.promote(client, "h", other)
    assert champion(client, "h") == "1" and alias(client, "h", "challenger") == "3", line
    assert "another split (dataset_dvc_md5 md5-b.dir vs md5-a.dir)" in line
    unknown = new_version(client, "h", 0.99, split="unknown")
    assert "another split" in tracking.promote(client, "h", unknown)
    assert champion(client, "h") == "1"


@pytest.mark.slow
def test_dvc_experiment_is_challenger_until_promoted_by_hand(client, capsys):
    from pipeline.promote.cli import main

    first = new_version(client, "e", 0.90, run_tags={"dvc_exp_name": "sunny-dogs"})
    line = tracking.promote(client, "e", first)
    assert alias(client, "e", "champion") is None and "a DVC experiment (sunny-dogs)" in line
    tracking.promote(client, "e", new_version(client, "e", 0.90))
    assert champion(client, "e") == "2"
    exp = new_version(client, "e", 0.99, run_tags={"dvc_exp_name": "sunny-cats"})
    line = tracking.promote(client, "e", exp)
    assert champion(client, "e") == "2" and alias(client, "e", "challenger") == "3", line
    assert "stays challenger: a DVC experiment (sunny-cats)" in line and "fixed 90" in line
    dirty = new_version(client, "e", 0.99, run_tags={"git_dirty": "true"})
    assert "uncommitted code or params (git_dirty true)" in tracking.promote(client, "e", dirty)

    assert main(["e", "3"]) == 0  # the store of MLFLOW_TRACKING_URI, set by the fixture
    out = capsys.readouterr().out
    assert "promote: gate: e: champion stays v2" in out and "fixed 90, broken 0" in out
    assert "promote: e: champion v2 -> v3 (promoted by hand)" in out
    assert champion(client, "e") == "3" and alias(client, "e", "challenger") == "4"
    assert version_of(client, "e", exp).tags["gate.decision"] == "champion"
    assert main(["e", "3"]) == 0 and "already the champion" in capsys.readouterr().out
    assert main(["e", "42"]) == 1
    assert capsys.readouterr().err.strip() == "promote: error: e: no version 42 in the registry"


@pytest.mark.slow
def test_concurrent_promotions_end_on_the_best_version(client):
    """Six plot stages promoting six versions of one model at the same instant, as `dvc queue
    start -j 2` does: each reads the champion, compares and sets the alias. Without the
    registry lock this ended on a worse version in 2 of 5 rounds (and one promotion died on
    the alias' UNIQUE constraint); with it the best version must win every round."""
    import threading

    import mlflow

    errors: list[BaseException] = []
    for round_ in range(3):
        name = f"race{round_}"
        runs = [new_version(client, name, acc) for acc in (0.90, 0.91, 0.92, 0.93, 0.94, 0.95)]
        start = threading.Barrier(len(runs))

        def promote(run_id: str, name: str = name, start: threading.Barrier = start) -> None:
            own = mlflow.MlflowClient(tracking_uri=client.tracking_uri)  # a process's own
            start.wait()
            try:
                tracking.promote(own, name, run_id)
            except BaseException as exc:  # reported by the assert below
                errors.append(exc)

        threads = [threading.Thread(target=promote, args=(r,)) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert champion(client, name) == "6", f"round {round_}: champion on a worse version"


def _git(root: Path, *args: str) -> None:
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", *ident, *args], cwd=root, check=True, capture_output=True)


def test_git_dirty_ignores_dvc_outputs(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "metrics" / "m.json").write_text("{}")
    (tmp_path / "models" / ".gitignore").write_text("/m\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train@m:\n    outs:\n    - path: models/m\n"
        "  evaluate@m:\n    outs:\n    - path: metrics/m.json\n"
    )
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "i")
    assert tracking.run_tags("m", "keras", "d", root=tmp_path)["git_dirty"] == "false"
    # what a `dvc repro` rewrites: the lock file, a metrics out kept in git, a .gitignore
    (tmp_path / "dvc.lock").write_text((tmp_path / "dvc.lock").read_text() + "# changed\n")
    (tmp_path / "metrics" / "m.json").write_text('{"accuracy": 1}')
    (tmp_path / "models" / ".gitignore").write_text("/m\n/n\n")
    assert tracking.git_status(tmp_path) == ""
    assert tracking.run_tags("m", "keras", "d", root=tmp_path)["git_dirty"] == "false"
    (tmp_path / "params.yaml").write_text("seed: 2\n")  # a change of the user's
    assert tracking.run_tags("m", "keras", "d", root=tmp_path)["git_dirty"] == "true"


def test_unreachable_server_is_one_line_naming_it(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(tracking.TrackingError) as err:
        tracking.setup("x", root=tmp_path)
    assert str(err.value).startswith(f"MLflow tracking server {uri} is unreachable (")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "mlartifacts").exists()  # no local artifact folder for a server
