"""The two-run comparison (`python -m pipeline.compare`, `make compare`).

Fast tests feed the report synthetic predictions. The slow ones work in a private copy of
the shared tiny project after its experiment (conftest.py's tiny_experiment: a second
dense_mlp run with another learning rate, `dvc exp run`), then the report's numbers are
recomputed from both runs' predictions.csv files, the page is opened in headless
Chromium, and bad input is refused with one line.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.compare import analysis, report
from pipeline.compare import cli as tool
from pipeline.compare.analysis import RunData
from pipeline.core import config
from pipeline.data.prepared import Split, save_split
from tests.helpers import CHROMIUM, EXP_LR, EXP_NAME, copy_tiny, headless_chromium, plain_env, sh

LR_B = EXP_LR


def compare_data(page: str) -> dict:
    found = re.search(r"<script type='application/json' id='compare-data'>(.*?)</script>", page)
    assert found, "no compare-data block in the page"
    return json.loads(found.group(1).replace("<\\/", "</"))


def recompute(actual: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, k: int) -> dict:
    """The report's numbers, recomputed with plain NumPy (no scikit-learn, no report code)."""

    def cm(pred):
        out = np.zeros((k, k), dtype=int)
        np.add.at(out, (actual, pred), 1)
        return out

    def f1(pred):
        out = []
        for c in range(k):
            tp = int(((pred == c) & (actual == c)).sum())
            p = tp / max(1, int((pred == c).sum()))
            r = tp / max(1, int((actual == c).sum()))
            out.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
        return out

    def wilson(correct: int, n: int, z: float = 1.959963984540054) -> list[float]:
        p = correct / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return [centre - half, centre + half]

    def mcnemar(fixed: int, broken: int) -> float:  # exact, two-sided, from the binomial
        d = fixed + broken
        tail = sum(math.comb(d, i) for i in range(max(fixed, broken), d + 1)) / 2**d
        return min(1.0, 2 * tail) if d else 1.0

    wrong_a, wrong_b = pred_a != actual, pred_b != actual
    n_fixed, n_broken = int((wrong_a & ~wrong_b).sum()), int((~wrong_a & wrong_b).sum())
    return {
        "accuracy_a_interval": wilson(int((~wrong_a).sum()), len(actual)),
        "accuracy_b_interval": wilson(int((~wrong_b).sum()), len(actual)),
        "p_two_sided": mcnemar(n_fixed, n_broken),
        "confusion_a": cm(pred_a).tolist(),
        "confusion_b": cm(pred_b).tolist(),
        "confusion_diff": (cm(pred_b) - cm(pred_a)).tolist(),
        "fixed_by_b": np.flatnonzero(wrong_a & ~wrong_b).tolist(),
        "broken_by_b": np.flatnonzero(~wrong_a & wrong_b).tolist(),
        "both_wrong": int((wrong_a & wrong_b).sum()),
        "accuracy_a": float((~wrong_a).mean()),
        "accuracy_b": float((~wrong_b).mean()),
        "f1_delta": [b - a for a, b in zip(f1(pred_a), f1(pred_b), strict=True)],
    }


def check_against(data: dict, actual, pred_a, pred_b, classes: list[str], digits=True) -> None:
    """``actual``/``pred_*`` as predictions.csv holds them, digits (0, 2, 5 for digits025),
    or class indices when not ``digits``."""
    if digits:
        index = {int(c): i for i, c in enumerate(classes)}
        actual, pred_a, pred_b = (
            np.array([index[int(d)] for d in v]) for v in (actual, pred_a, pred_b)
        )
    want = recompute(actual, pred_a, pred_b, len(classes))
    for key in ("confusion_a", "confusion_b", "confusion_diff", "fixed_by_b", "broken_by_b"):
        assert data[key] == want[key], key
    assert data["both_wrong"] == want["both_wrong"]
    assert data["accuracy_a"] == pytest.approx(want["accuracy_a"])
    assert data["accuracy_b"] == pytest.approx(want["accuracy_b"])
    for key in ("accuracy_a_interval", "accuracy_b_interval"):
        assert data[key] == pytest.approx(want[key], abs=1e-6), key
    assert data["mcnemar"]["p_two_sided"] == pytest.approx(want["p_two_sided"])
    assert data["mcnemar"]["significant"] == (want["p_two_sided"] < 0.05)
    deltas = {r["class"]: r["f1_delta"] for r in data["per_class"]}
    for name, delta in zip(classes, want["f1_delta"], strict=True):
        assert deltas[name] == pytest.approx(delta)
    sizes = [abs(r["f1_delta"]) for r in data["per_class"]]
    assert sizes == sorted(sizes, reverse=True)
    for i in data["fixed_by_b"]:
        assert pred_a[i] != actual[i] and pred_b[i] == actual[i]
    for i in data["broken_by_b"]:
        assert pred_a[i] == actual[i] and pred_b[i] != actual[i]


def thumbnails(page: str, section: str) -> list[dict]:
    """data-* of every thumbnail in the grid after <h3 id='section'>."""
    start = page.index(f"<h3 id='{section}'>")
    end = page.find("<h3 ", start + 1)
    end = page.find("<h2 ", start) if end < 0 else end
    part = page[start:end]
    found = re.findall(
        r"<figure class='thumb' data-index='(\d+)' data-true='([^']*)' data-a='([^']*)' "
        r"data-b='([^']*)'>",
        part,
    )
    return [{"index": int(i), "true": t, "a": a, "b": b} for i, t, a, b in found]


# --------------------------------------------------------------------------- fast


def synthetic_runs(seed: int = 0, n: int = 300, k: int = 3) -> tuple[RunData, RunData]:
    rng = np.random.default_rng(seed)
    actual = rng.integers(0, k, n)
    pred_a = np.where(rng.random(n) < 0.8, actual, rng.integers(0, k, n))
    pred_b = np.where(rng.random(n) < 0.85, actual, rng.integers(0, k, n))
    params = {f"dataset.classes.{i}": str(c) for i, c in enumerate((0, 2, 5)[:k])}

    def run(label, pred, lr, md5):
        return RunData(
            label=label,
            run_id=f"{label.lower()}" * 32,
            params=params | {"model.train.learning_rate": lr, "seed": "42"},
            tags={"preset": "dense_mlp", "dataset": "digits025", "dataset_dvc_md5": md5},
            metrics={"test_accuracy": float((pred == actual).mean()), "test_loss": 0.3},
            history={"val_accuracy": [(1, 0.7), (2, 0.8)], "val_loss": [(1, 0.9), (2, 0.5)]},
            actual=actual,
            predicted=pred,
        )

    return run("A", pred_a, "0.01", "abc.dir"), run("B", pred_b, "0.05", "abc.dir")


def test_numbers_match_a_recomputation_from_the_predictions():
    a, b = synthetic_runs()
    classes = analysis.classes_of(a.params)
    assert classes == ["0", "2", "5"]
    comparison = analysis.analyse(a, b, classes)
    check_against(comparison.data(), a.actual, a.predicted, b.predicted, classes, digits=False)
    assert comparison.params_diff == [("model.train.learning_rate", "0.01", "0.05")]
    both = (a.predicted != a.actual) & (b.predicted != b.actual)
    shared = Counter(zip(a.actual[both], a.predicted[both], b.predicted[both], strict=True))
    top = comparison.shared_confusions[0]
    assert top["count"] == max(shared.values())
    assert sum(s["count"] for s in comparison.shared_confusions) <= both.sum()


def test_page_is_self_contained_with_every_section():
    a, b = synthetic_runs()
    comparison = analysis.analyse(a, b, ["0", "2", "5"])
    comparison.images = np.random.default_rng(1).random((len(a.actual), 28, 28, 1))
    page = report.render(comparison)
    for ident in (
        "runs",
        "params",
        "metrics",
        "curves",
        "confusion",
        "per-class",
        "changed",
        "fixed",
        "broken",
        "both-wrong",
    ):
        assert f"id='{ident}'" in page, ident
    for ident in ("confusion-a", "confusion-b", "confusion-diff", "curves"):
        assert re.search(rf"<img id='{ident}' alt='[^']*' src='data:image/png;base64,", page)
    assert not re.search(r"(src|href)=['\"](https?:|//|file:)", page)  # nothing to fetch
    shown = thumbnails(page, "fixed")
    assert [t["index"] for t in shown] == comparison.fixed[: analysis.MAX_THUMBNAILS].tolist()
    assert "role='alert'" not in page  # same data hash, committed code: no warning


def test_warning_on_top_when_data_hashes_differ():
    a, b = synthetic_runs()
    b.tags["dataset_dvc_md5"] = "fff.dir"
    comparison = analysis.analyse(a, b, ["0", "2", "5"])
    comparison.images_note = "No thumbnails: the test images are not on this machine."
    page = report.render(comparison)
    assert comparison.images_note in page and "<figure class='thumb'" not in page
    listed = re.search(r"<h3 id='fixed'>.*?Test indices: ([\d, ]+)</p>", page)
    assert listed and listed.group(1) == ", ".join(map(str, comparison.fixed.tolist()))
    warning = page.index("role='alert'")
    assert "mixes datasets" in page[warning : warning + 400]
    assert warning < page.index("id='runs'")


def test_different_test_sets_are_refused():
    a, b = synthetic_runs()
    b.actual = b.actual[:-1]
    b.predicted = b.predicted[:-1]
    with pytest.raises(analysis.CompareError, match="different test sets"):
        analysis.analyse(a, b, ["0", "2", "5"])


def test_thumbnails_only_from_the_runs_test_set(tmp_path):
    a, _ = synthetic_runs()
    folder = config.prepared_dir("digits025", tmp_path)
    images, note = tool.local_images("digits025", ["0", "2", "5"], a.actual, tmp_path)
    assert images is None and "not on this machine" in note
    folder.mkdir(parents=True)
    (folder / config.META_JSON).write_text(json.dumps({"classes": [0, 2, 5]}))
    x = np.zeros((len(a.actual), 28, 28, 1), dtype=np.float32)
    save_split(config.split_file(folder, "test"), Split(x, (a.actual + 1) % 3))
    images, note = tool.local_images("digits025", ["0", "2", "5"], a.actual, tmp_path)
    assert images is None and "not the test set" in note
    save_split(config.split_file(folder, "test"), Split(x, a.actual))
    images, note = tool.local_images("digits025", ["0", "2", "5"], a.actual, tmp_path)
    assert images is not None and images.shape == x.shape and note == ""


# --------------------------------------------------------------------------- tiny project


@pytest.fixture(scope="module")
def two_runs(tiny_built, tiny_experiment, tmp_path_factory):
    """A copy of the tiny project after its second dense_mlp run (learning rate LR_B, DVC
    experiment EXP_NAME); A's run and predictions are those of the project before it."""
    root = copy_tiny(tiny_experiment, tmp_path_factory.mktemp("compare") / "proj")
    run_a = (config.model_dir("dense_mlp", tiny_built) / config.RUN_ID_FILE).read_text().strip()
    pred_a = pd.read_csv(config.plots_dir("dense_mlp", tiny_built) / config.PREDICTIONS_CSV)
    run_b = (config.model_dir("dense_mlp", root) / config.RUN_ID_FILE).read_text().strip()
    assert run_b != run_a
    pred_b = pd.read_csv(config.plots_dir("dense_mlp", root) / config.PREDICTIONS_CSV)
    return root, plain_env(), run_a, run_b, pred_a, pred_b


def run_compare(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return sh([str(root / ".venv" / "bin" / "python"), "-m", "pipeline.compare", *args], root, env)


@pytest.fixture(scope="module")
def dense_report(two_runs):
    root, env, run_a, *_ = two_runs
    out = root / "two_dense.html"
    proc = run_compare(root, env, run_a, f"dense_mlp@{EXP_NAME}", "-o", str(out))
    return out, proc


@pytest.mark.slow
def test_two_learning_rates_report_matches_both_runs_predictions(two_runs, dense_report):
    from mlflow.tracking import MlflowClient

    root, _, run_a, run_b, pred_a, pred_b = two_runs
    out, proc = dense_report
    assert "B fixes" in proc.stdout and str(out) in proc.stdout
    page = out.read_text()
    data = compare_data(page)
    assert f"compare: {data['verdict']}" in proc.stdout  # the headline, in the terminal too
    assert "McNemar p = " in data["verdict"]
    assert (data["a"]["run_id"], data["b"]["run_id"]) == (run_a, run_b)
    actual = pred_a["actual"].to_numpy()
    assert np.array_equal(actual, pred_b["actual"].to_numpy())
    a, b = pred_a["predicted"].to_numpy(), pred_b["predicted"].to_numpy()
    check_against(data, actual, a, b, ["0", "2", "5"])
    assert ["model.train.learning_rate", "0.01", LR_B] in data["params_diff"]
    assert data["warnings"] == []  # same prepared data, committed code
    assert EXP_NAME in page  # the provenance table names B's DVC experiment
    classes = data["classes"]
    for section, wrong_in, right_in in (("fixed", a, b), ("broken", b, a)):
        shown = thumbnails(page, section)
        assert len(shown) == min(len(data[f"{section}_by_b"]), analysis.MAX_THUMBNAILS)
        for t in shown:
            i = t["index"]
            assert wrong_in[i] != actual[i] and right_in[i] == actual[i]
            assert (t["true"], t["a"], t["b"]) == (str(actual[i]), str(a[i]), str(b[i]))
            assert t["true"] in classes
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    for run_id in (run_a, run_b):  # the report, logged to both runs under compare/
        logged = [f.path for f in client.list_artifacts(run_id, "compare")]
        reports = [p for p in logged if p.endswith(".html")]
        assert reports == [f"compare/dense_mlp-{run_a[:8]}_vs_dense_mlp-{run_b[:8]}.html"]


@pytest.mark.slow
def test_report_rebuilt_from_the_store_alone(two_runs, dense_report, tmp_path):
    """Another machine: no checkout data, only the tracking store. Same numbers; the page
    says why there are no thumbnails instead of failing."""
    root, env, run_a, run_b, *_ = two_runs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "from_store.html"
    env = env | {
        "PIPELINE_ROOT": str(elsewhere),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
    }
    run_compare(root, env, run_a, run_b, "-o", str(out), "--no-log")
    page = out.read_text()
    data = compare_data(page)
    full = compare_data(dense_report[0].read_text())
    assert data == full
    assert "not on this machine" in page and "<figure class='thumb'" not in page


@pytest.mark.slow
def test_make_compare_across_presets(two_runs):
    root, env, *_ = two_runs
    out = root / "dense_vs_cubic.html"
    # -o: never let this make remake the venv stamp (the copy's .venv is the real one)
    proc = sh(
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed",
            "compare",
            "A=dense_mlp",
            "B=cubic_mlp",
            f"O={out}",
        ],
        root,
        env,
    )
    assert "cubic_mlp" in proc.stdout
    data = compare_data(out.read_text())
    assert (data["a"]["name"], data["b"]["name"]) == ("dense_mlp", "cubic_mlp")
    assert data["classes"] == ["0", "2", "5"]
    cubic = pd.read_csv(config.plots_dir("cubic_mlp", root) / config.PREDICTIONS_CSV)
    dense = pd.read_csv(config.plots_dir("dense_mlp", root) / config.PREDICTIONS_CSV)
    check_against(
        data,
        dense["actual"].to_numpy(),
        dense["predicted"].to_numpy(),
        cubic["predicted"].to_numpy(),
        ["0", "2", "5"],
    )


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_report_renders_in_headless_chromium(dense_report, tmp_path):
    from matplotlib.image import imread

    out, _ = dense_report
    flags = headless_chromium(tmp_path / "profile", "--hide-scrollbars")
    shot = tmp_path / "shot.png"
    url = out.resolve().as_uri()
    subprocess.run(
        [*flags, "--window-size=1200,2000", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = imread(shot)[..., :3]  # (H, W, 3) in [0, 1]
    assert pixels.shape[:2] == (2000, 1200)
    ink = (pixels < 0.9).any(axis=-1).mean()
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert ink > 0.05 and colours > 50, (ink, colours)
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    diff = re.search(r"<img id=\"confusion-diff\"[^>]*>", dom)
    assert diff, "no confusion-diff image in the rendered page"
    assert 'src="data:image/png;base64,' in diff.group(0)
    decoded = re.search(r'data-decoded="(\d+)"', diff.group(0))
    assert decoded and int(decoded.group(1)) > 100, diff.group(0)[:200]


@pytest.mark.slow
def test_bad_input_one_line_and_nothing_written(two_runs, tmp_path):
    from mlflow.tracking import MlflowClient

    root, env, run_a, *_ = two_runs
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    exp_id = client.get_experiment_by_name("mnist").experiment_id
    # a run whose evaluate stage never ran (a preset of its own: dense_mlp stays B's)
    bare = client.create_run(exp_id, tags={"preset": "unevaluated"}).info.run_id
    client.log_param(bare, "dataset.classes.0", "0")
    client.set_terminated(bare)
    before = {r: client.list_artifacts(r, "compare") for r in (run_a, bare)}
    unknown = "0123456789abcdef0123456789abcdef"
    cases = {
        "unknown": ([unknown, run_a], f"{unknown}: no such run"),
        "classes": (["keras_small_cnn", run_a], "different class sets"),
        "no predictions": ([bare, run_a], "has no per-image predictions"),
    }
    python = str(root / ".venv" / "bin" / "python")
    procs = {  # the three at once: each one spends most of its time importing
        case: subprocess.Popen(
            [python, "-m", "pipeline.compare", *args, "-o", str(tmp_path / f"{case}.html")],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, (args, _) in cases.items()
    }
    for case, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        lines = stderr.strip().splitlines()
        assert proc.returncode == 1, (case, stderr)
        assert len(lines) == 1 and cases[case][1] in lines[0], (case, stderr)
        assert lines[0].startswith("compare: error: ")
        assert not (tmp_path / f"{case}.html").exists()
    after = {r: client.list_artifacts(r, "compare") for r in (run_a, bare)}
    assert [f.path for f in after[run_a]] == [f.path for f in before[run_a]]
    assert after[bare] == []
