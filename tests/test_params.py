"""params.yaml parsing: every error names its key path and stops before any work."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core import config, params

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(config.params_path(REPO).read_text())


def test_repo_params_parse(raw):
    p = params.parse(raw)
    assert p.seed == 42
    assert p.datasets["digits10"].classes == tuple(range(10))
    assert p.datasets["digits025"].classes == (0, 2, 5)
    assert set(p.models) == {
        "scratch_cnn",
        "scratch_dropout_cnn",
        "keras_small_cnn",
        "keras_cnn",
        "custom_cnn",
        "cubic_mlp",
        "dense_mlp",
    }
    assert p.models["keras_small_cnn"].arch == p.models["scratch_dropout_cnn"].arch
    assert isinstance(p.models["cubic_mlp"].arch[3], params.CubicSpec)


def test_params_are_frozen(raw):
    p = params.parse(raw)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.datasets["new"] = p.datasets["digits10"]  # type: ignore[index]


def _set(tree: dict, path: str, value) -> dict:
    tree = copy.deepcopy(tree)
    *parents, last = path.split(".")
    node = tree
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return tree


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("datasets.digits10.trian_size", 100, "datasets.digits10.trian_size: unknown key"),
        ("seed", "42", "seed: expected an integer"),
        ("seed", True, "seed: expected an integer"),
        ("datasets.digits10.train_size", 1.5, "datasets.digits10.train_size: expected"),
        ("datasets.digits10.train_size", 0, "datasets.digits10.train_size: must be > 0"),
        ("datasets.digits10.classes", [], "datasets.digits10.classes: must list at least two"),
        ("datasets.digits10.classes", [0, 10], "datasets.digits10.classes: [10] out of range"),
        ("datasets.digits10.classes", [-1, 3], "datasets.digits10.classes: [-1] out of range"),
        ("datasets.digits10.classes", [3, 3], "datasets.digits10.classes: duplicate"),
        ("datasets.digits10.classes", "0-9", "datasets.digits10.classes: expected a list"),
        ("datasets.digits10.val_fraction", 0, "datasets.digits10.val_fraction: must be in (0, 1)"),
        ("datasets.digits10.val_fraction", 1.0, "datasets.digits10.val_fraction: must be in"),
        ("datasets.digits025.val_fraction", -0.2, "datasets.digits025.val_fraction: must be in"),
        ("models.keras_cnn.dataset", "digits11", "models.keras_cnn.dataset: 'digits11' is not a"),
        ("models.keras_cnn.family", "torch", "models.keras_cnn.family: 'torch' is not one of"),
        ("models.keras_cnn.train.epochs", "ten", "models.keras_cnn.train.epochs: expected an int"),
        ("models.keras_cnn.train.learning_rate", -1, "models.keras_cnn.train.learning_rate: must"),
        ("models.keras_cnn.train.optimizr", "sgd", "models.keras_cnn.train.optimizr: unknown key"),
        ("models.keras_cnn.train.epochs", _DELETE, "models.keras_cnn.train.epochs: missing"),
        ("models.keras_cnn.arch.0.filters", 0, "models.keras_cnn.arch[0].filters: must be > 0"),
        ("models.keras_cnn.arch.0.type", "lstm", "models.keras_cnn.arch[0].type: 'lstm' is not"),
        ("models.keras_cnn.arch.0.kernal", 3, "models.keras_cnn.arch[0].kernal: unknown key"),
        ("models.keras_cnn.arch.3.rate", 1.0, "models.keras_cnn.arch[3].rate: must be in [0, 1)"),
        ("models.dense_mlp.arch.3.units", 10, "models.dense_mlp.arch[3].units: 10 units but"),
        ("models.dense_mlp.arch.1.activation", "softmax", "models.dense_mlp.arch[1]: softmax"),
        ("data.source", "cifar", "data.source: 'cifar' is not one of"),
        ("data.source", "idx_dir", "data.idx_dir: required when data.source is idx_dir"),
        ("validate.class_share.min", 0.5, "validate.class_share: need 0 <= min <= max <= 1"),
        ("mlflow.experimnt", "x", "mlflow.experimnt: unknown key"),
        ("extra", 1, "extra: unknown key"),
    ],
)
def test_bad_params_name_the_key(raw, path, value, message):
    with pytest.raises(params.ParamsError) as info:
        params.parse(_set(raw, path, value))
    assert str(info.value).startswith(message), str(info.value)


def test_cubic_layer_needs_custom_family(raw):
    bad = _set(raw, "models.cubic_mlp.family", "keras")
    with pytest.raises(params.ParamsError, match=r"models.cubic_mlp.arch\[3\]: cubic"):
        params.parse(bad)


def test_load_reports_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(params.ParamsError, match="params file not found"):
        params.load(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(params.ParamsError, match="not valid YAML"):
        params.load(bad)


def test_flatten_gives_dotted_keys(raw):
    flat = params.flatten(params.parse(raw).models["keras_cnn"])
    assert flat["train.learning_rate"] == 0.003
    assert flat["arch.0.filters"] == 64
    assert flat["train.lr_schedule.kind"] == "warmup_cosine"


def test_stage_stops_before_any_work(raw, tmp_path):
    """A bad key makes the stage exit 1 with one line naming it, and write nothing."""
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(_set(raw, "datasets.digits10.trian_size", 5))
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.prepare", "digits10"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PIPELINE_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 1
    assert "datasets.digits10.trian_size: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
