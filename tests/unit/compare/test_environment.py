"""The compare report's numeric-environment rows and headline (pipeline/compare/), on the
tiny reference run's dense_mlp predictions (reference/tiny/) and its recorded environment."""

from __future__ import annotations

import re

import numpy as np

from pipeline.compare import analysis, report
from pipeline.compare.analysis import RunData
from pipeline.core import config, numenv
from pipeline.devtools.verify_metrics import Outputs

REFERENCE = Outputs(config.ROOT / "reference" / "tiny")
CLASSES = ["0", "2", "5"]


def run(label: str, env: dict[str, str]) -> RunData:
    frame = REFERENCE.predictions("dense_mlp")
    index = {c: i for i, c in enumerate(CLASSES)}
    actual = frame["actual"].map(index).to_numpy()
    predicted = frame["predicted"].map(index).to_numpy()
    tags = {"preset": "dense_mlp", "dataset": "digits025", "dataset_dvc_md5": "abc.dir"}
    return RunData(
        label=label,
        run_id=label.lower() * 32,
        params={f"dataset.classes.{i}": c for i, c in enumerate(CLASSES)},
        tags=tags | numenv.as_tags(env),
        metrics={"test_accuracy": float((predicted == actual).mean())},
        history={},
        actual=actual,
        predicted=predicted,
    )


def test_same_environment_rows_and_no_headline():
    env = REFERENCE.env("dense_mlp")
    comparison = analysis.analyse(run("A", env), run("B", env), CLASSES)
    page = report.render(comparison)
    assert "id='environment'" in page and "role='alert'" not in page
    rows = {k: (a, b) for k, a, b in comparison.data()["environment"]}
    assert rows["fingerprint"] == (env["fingerprint"], env["fingerprint"])
    assert rows["blas_kernel"] == (env["blas_kernel"], env["blas_kernel"])


def test_different_kernel_path_is_in_the_headline():
    env = REFERENCE.env("dense_mlp")
    other = dict(env, onednn="off", blas_kernel="Haswell")
    other["fingerprint"] = numenv.fingerprint(other)
    b = run("B", other)
    b.predicted = np.where(np.arange(len(b.predicted)) < 3, b.actual, b.predicted)
    page = report.render(analysis.analyse(run("A", env), b, CLASSES))
    alert = re.search(r"<div class='warn' role='alert'>(.*?)</div>", page)
    assert alert and "numeric environments differ" in alert.group(1)
    assert f"blas_kernel {env['blas_kernel']} / Haswell" in alert.group(1)
    assert "onednn on / off" in alert.group(1)
    assert page.index("role='alert'") < page.index("id='environment'")
