"""The pull-request report's numeric-environment lines (pipeline/devtools/pr_report.py): real
``metrics/<model>.env.json`` files committed in a scratch git repository (the base) and
rewritten in its working tree (this change)."""

from __future__ import annotations

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
