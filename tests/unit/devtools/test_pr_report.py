"""The pull-request report (pipeline/devtools/pr_report.py): its numeric-environment lines
(real ``metrics/<model>.env.json`` files committed in a scratch git repository, the base, and
rewritten in its working tree, this change); its metrics table and its line for a base whose
plots cannot be had (a scratch git + DVC repository, its cache and a local remote)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.core import numenv
from pipeline.devtools import pr_report

LINE = (
    "keras_cnn: base and this change ran on different kernel paths (blas_kernel, onednn): "
    "differences within seed noise are expected"
)


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def project(tmp_path) -> Path:
    """A git repository whose last commit has keras_cnn's and dense_mlp's environments."""
    root = tmp_path / "proj"
    (root / "metrics").mkdir(parents=True)
    env = numenv.probe()
    for model in ("keras_cnn", "dense_mlp"):
        numenv.write(root / "metrics" / f"{model}.env.json", env)
        (root / "metrics" / f"{model}.json").write_text('{"test_accuracy": 0.9}\n')
    git(root, "init", "-q")
    git(root, "add", "metrics")
    git(
        root,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.invalid",
        "commit",
        "-qm",
        "base",
    )
    return root


def other_kernels(root: Path, model: str) -> None:
    """This change's run of ``model`` as one with oneDNN off and another OpenBLAS kernel."""
    path = root / "metrics" / f"{model}.env.json"
    env = numenv.read(path)
    changed = dict(env, onednn="off" if env["onednn"] == "on" else "on")
    changed["blas_kernel"] = "SkylakeX" if env["blas_kernel"] != "SkylakeX" else "Haswell"
    numenv.write(path, changed | {"fingerprint": numenv.fingerprint(changed)})


def test_identical_environments_give_no_warning(project):
    warnings, section = pr_report.environment("HEAD", project)
    assert warnings == []
    assert any("same kernel path as the base" in s and "keras_cnn" in s for s in section)
    assert not any("different" in s for s in section)


def test_a_different_kernel_path_is_named_per_model(project):
    other_kernels(project, "keras_cnn")
    warnings, section = pr_report.environment("HEAD", project)
    assert warnings == [LINE]  # dense_mlp ran on the base's path: no line for it
    [detail] = [s for s in section if s.startswith("- keras_cnn:")]
    assert "onednn" in detail and "blas_kernel" in detail and "→" in detail


def test_only_a_cpu_model_change_is_the_same_kernel_path(project):
    path = project / "metrics" / "keras_cnn.env.json"
    numenv.write(path, dict(numenv.read(path), cpu_model="Another CPU"))
    assert pr_report.environment("HEAD", project)[0] == []


def test_a_base_without_environments_and_an_unknown_base(project):
    numenv.write(project / "metrics" / "cubic_mlp.env.json")
    warnings, section = pr_report.environment("HEAD", project)
    assert warnings == []
    assert any("the base records no numeric environment for cubic_mlp" in s for s in section)
    warnings, section = pr_report.environment("no-such-branch", project)
    assert warnings == [] and section[0].startswith("_`git ls-tree no-such-branch` failed: ")


@pytest.mark.slow  # runs dvc (seconds of CPU a call)
def test_the_line_tops_the_summary_and_the_plots_page(project, tmp_path):
    other_kernels(project, "keras_cnn")
    text = pr_report.summary("HEAD", tmp_path / "out", project)  # dvc parts: one line each
    head = text.split("### ", 1)[0]
    assert f"> **Numeric environment:** {LINE}" in head
    assert "### Numeric environment" in text
    page = tmp_path / "index.html"
    page.write_text("<html><head></head><body><h1>plots</h1></body></html>")
    pr_report.mark_page(page, [LINE])
    html = page.read_text()
    assert html.index("different kernel paths") < html.index("<h1>plots</h1>")
    pr_report.mark_page(page, [])  # nothing to say: page unchanged
    assert page.read_text() == html


# --------------------------------------------------------------------------- a DVC project
# A scratch git + DVC repository: params.yaml lists zeta_mlp before alpha_cnn (so that
# params.yaml's order is not the alphabet's), each model's metrics committed in git and a
# plot file per model tracked by DVC, as the base commit.

BASE_METRICS = {
    "zeta_mlp": {"accuracy": 0.90, "loss": 0.30, "errors": 100, "n_test": 1000},
    "alpha_cnn": {"accuracy": 0.95, "loss": 0.20, "errors": 50, "n_test": 1000},
}


def dvc(root: Path, *args: str) -> None:
    proc = subprocess.run([pr_report.DVC, *args], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def dvc_base(tmp_path_factory) -> Path:
    """The base commit, built once for the module (git + dvc init, dvc add: seconds of CPU)."""
    root = tmp_path_factory.mktemp("pr") / "dvcproj"
    (root / "metrics").mkdir(parents=True)
    (root / "plots").mkdir()
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    (root / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    (root / "params.yaml").write_text("models:\n  zeta_mlp: {lr: 0.1}\n  alpha_cnn: {lr: 0.01}\n")
    for model, metrics in BASE_METRICS.items():
        (root / "metrics" / f"{model}.json").write_text(json.dumps(metrics) + "\n")
        rows = "".join(f"{e},{0.5 + e / 10}\n" for e in range(1, 4))
        (root / "plots" / f"{model}.csv").write_text("epoch,accuracy\n" + rows)
    (root / "dvc.yaml").write_text(
        "metrics:\n  - metrics/zeta_mlp.json\n  - metrics/alpha_cnn.json\n"
        "plots:\n  - plots/zeta_mlp.csv:\n      x: epoch\n      y: accuracy\n"
        "  - plots/alpha_cnn.csv:\n      x: epoch\n      y: accuracy\n"
    )
    dvc(root, "add", "-q", "plots/zeta_mlp.csv", "plots/alpha_cnn.csv")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "base")
    return root


@pytest.fixture
def dvc_project(dvc_base, tmp_path) -> Path:
    """A private copy of ``dvc_base`` (its git repository and DVC cache) that a test may change."""
    return shutil.copytree(dvc_base, tmp_path / "dvcproj", symlinks=True)


def write_metrics(root: Path, model: str, **changed: object) -> None:
    (root / "metrics" / f"{model}.json").write_text(
        json.dumps(BASE_METRICS[model] | changed) + "\n"
    )


@pytest.mark.slow  # runs dvc (seconds of CPU a call)
def test_metrics_rows_follow_params_order_and_say_better_or_worse(dvc_project):
    write_metrics(dvc_project, "alpha_cnn", accuracy=0.96, errors=40, loss=0.25)
    write_metrics(dvc_project, "zeta_mlp", loss=0.28, n_test=1200, macro_f1=0.9)
    table = pr_report.metrics_table("HEAD", dvc_project)
    assert table == pr_report.metrics_table("HEAD", dvc_project)  # same order every call
    assert table[:2] == [
        "| Model | Metric | `HEAD` | this change | Change |",
        "|---|---|--:|--:|---|",
    ]
    rows = [r for r in table[2:] if r.startswith("| ")]
    assert rows == [  # params.yaml's order (zeta_mlp first), then metric names
        "| zeta_mlp | loss | 0.3000 | 0.2800 | ▼ -0.0200 better |",
        "| zeta_mlp | macro_f1 | – | 0.9000 | new |",
        "| zeta_mlp | n_test | 1000 | 1200 | ▲ +200 |",  # a count: neither better nor worse
        "| alpha_cnn | accuracy | 0.9500 | 0.9600 | ▲ +0.0100 better |",
        "| alpha_cnn | errors | 50 | 40 | ▼ -10 better |",
        "| alpha_cnn | loss | 0.2000 | 0.2500 | ▲ +0.0500 worse |",  # for loss lower is better
    ]
    assert "lower is better" in table[-1]
    write_metrics(dvc_project, "alpha_cnn")
    write_metrics(dvc_project, "zeta_mlp")
    assert pr_report.metrics_table("HEAD", dvc_project) == ["_no metric changed_"]


def test_a_tiny_delta_keeps_its_sign_and_direction():
    assert pr_report.change("accuracy", 0.99, 0.99001) == "▲ +1.0e-05 better"
    assert pr_report.change("val.loss", 0.1, 0.1) == "="
    assert pr_report.change("errors", 3, None) == "removed"


@pytest.mark.slow  # runs dvc (seconds of CPU a call)
def test_base_plots_from_the_remote_and_missing_from_both(dvc_project, tmp_path):
    remote = tmp_path / "remote"
    dvc(dvc_project, "remote", "add", "--local", "-d", "store", str(remote))
    dvc(dvc_project, "push", "-q")
    shutil.rmtree(dvc_project / ".dvc" / "cache")
    assert pr_report.base_missing("HEAD", dvc_project) is None  # DVC streams from the remote

    shutil.rmtree(remote)  # now in neither the cache nor the remote
    line = pr_report.base_missing("HEAD", dvc_project)
    assert line == (
        "2 plot file(s) of `HEAD` could be read from neither DVC's cache nor its remote (first: "
        "`plots/zeta_mlp.csv`): the page shows this change only for them; the metrics "
        "compare with those committed at `HEAD`."
    )
    write_metrics(dvc_project, "zeta_mlp", accuracy=0.91)
    text, comment = pr_report.report("HEAD", tmp_path / "out", dvc_project)
    heading, first, *_ = [ln for ln in text.splitlines() if ln]
    assert heading == "## Pipeline report (against `HEAD`)"
    assert first == f"> **Base missing:** {line}"  # the summary's first line says so
    assert "figures of this change (the base's are missing: see the top)" in text
    assert comment.startswith(f"{pr_report.MARKER}\n## Pipeline report: this change against")
    assert f"> **Base missing:** {line}" in comment
    assert "| zeta_mlp | accuracy | 0.9000 | 0.9100 | ▲ +0.0100 better |" in comment
    page = (tmp_path / "out" / "index.html").read_text()
    body = page.index("<body")
    note = page.index("Base missing:")
    assert body < note < page.index("zeta_mlp.csv", note)  # at the top, before any plot


@pytest.mark.slow  # runs dvc (seconds of CPU a call)
def test_a_base_that_is_not_a_commit(dvc_project, tmp_path):
    line = pr_report.base_missing("origin/no-such-branch", dvc_project)
    assert line == (
        "`origin/no-such-branch` is not a commit in this checkout: the page shows this change only."
    )
    text = pr_report.summary("origin/no-such-branch", tmp_path / "out", dvc_project)
    assert f"> **Base missing:** {line}" in text.split("### ", 1)[0]
    assert "_`dvc metrics diff` failed: " in text
