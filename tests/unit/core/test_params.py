"""params.yaml parsing: every error names its key path and stops before any work."""

from __future__ import annotations

import copy
import subprocess
import sys

import pydantic
import pytest
import yaml

from pipeline.core import config, params
from tests.helpers import REPO, params_spec


@pytest.fixture
def raw() -> dict:
    """The params the tests change key by key: built here, not read from params.yaml."""
    return params_spec()


def test_repo_params_parse():
    """The shipped params.yaml parses, with the presets the README describes."""
    p = params.load(config.params_path(REPO))
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
        "ensemble",
    }
    assert p.models["ensemble"].members == tuple(list(p.models)[:5])  # the digits10 presets
    assert p.models["keras_small_cnn"].arch == p.models["scratch_dropout_cnn"].arch
    assert isinstance(p.models["cubic_mlp"].arch[3], params.CubicSpec)


def test_params_are_frozen(raw):
    p = params.parse(raw)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        p.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.datasets["new"] = p.datasets["digits10"]  # type: ignore[index]
    with pytest.raises(TypeError):
        p.validate.rows["val"] = p.validate.rows["test"]  # type: ignore[index]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        p.models["keras_cnn"].arch[0].filters = 1  # type: ignore[misc]


def test_lists_are_tuples_and_specs_hashable(raw):
    """Frozen all the way down: list params are tuples, layer specs and train params hash
    by value (equal specs from two parses are equal and hash alike)."""
    p, q = params.parse(raw), params.parse(raw)
    m = p.models["keras_cnn"]
    assert type(m.arch) is tuple and type(p.datasets["digits10"].classes) is tuple
    assert p.validate.image_shape == (28, 28) and p.plot.compare_curves == (
        "cubic_mlp",
        "dense_mlp",
    )
    assert hash(m.arch) == hash(q.models["keras_cnn"].arch) and m.arch == q.models["keras_cnn"].arch
    assert hash(m.train) == hash(q.models["keras_cnn"].train)
    assert len({p.models[n].arch for n in p.models}) == 6  # two presets share *small_cnn


def test_numbers_become_floats_where_the_schema_says_float(raw):
    p = params.parse(raw)
    assert repr(p.data.fetch.timeout) == "30.0"  # written as 30 in params.yaml
    assert repr(p.models["custom_cnn"].train.augment.rotation) == "10.0"
    assert type(p.seed) is int and type(p.models["custom_cnn"].arch[0].filters) is int


def test_defaults_fill_optional_sections():
    """Only seed, data, datasets and models are required; the rest has defaults, and the
    layer specs and bounds can be built by keyword (``type`` defaults to the spec's tag)."""
    p = params.parse(
        {
            "seed": 1,
            "data": {},
            "datasets": {"d": {"classes": [3, 4]}},
            "models": {
                "m": {
                    "family": "keras",
                    "dataset": "d",
                    "arch": [
                        {"type": "flatten"},
                        {"type": "dense", "units": 2, "activation": "softmax"},
                    ],
                    "train": {"epochs": 1, "batch_size": 8},
                }
            },
            "plot": {"compare_curves": []},
        }
    )
    assert p.data == params.DataParams(source="mnist", idx_dir=None, fetch=params.FetchParams())
    assert p.validate == params.ValidateParams()
    assert dict(p.validate.rows) == {
        "train": params.RowBounds(min=60000, max=60000),
        "test": params.RowBounds(min=10000, max=10000),
    }
    assert p.validate.labels == tuple(range(10)) and p.mlflow.experiment == "mnist"
    assert p.models["m"].arch == (
        params.FlattenSpec(),
        params.DenseSpec(units=2, activation="softmax"),
    )
    assert p.models["m"].train.optimizer == "adam" and p.models["m"].train.augment is None
    assert p.dataset_of("m").val_fraction == 0.1
    assert set(params.LAYER_TYPES) == {"conv", "pool", "flatten", "dense", "dropout", "cubic"}


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
        ("seed", None, "seed: must not be null"),
        ("seed", _DELETE, "seed: missing required key"),
        ("data", "mnist", "data: expected a mapping, got 'mnist'"),
        ("data.fetch.timeout", "30", "data.fetch.timeout: expected a number, got '30'"),
        ("data.idx_dir", 5, "data.idx_dir: expected a string, got 5"),
        ("datasets", {}, "datasets: define at least one dataset"),
        ("datasets.digits10.classes", [1.0, 2.0], "datasets.digits10.classes[0]: expected an int"),
        ("models.keras_cnn.train", None, "models.keras_cnn.train: must not be null"),
        ("models.keras_cnn.train.shuffle", "yes", "models.keras_cnn.train.shuffle: expected true"),
        (
            "models.keras_cnn.train.learning_rate",
            "0.1",
            "models.keras_cnn.train.learning_rate: exp",
        ),
        ("models.keras_cnn.train.learning_rate", True, "models.keras_cnn.train.learning_rate: exp"),
        ("models.keras_cnn.train.weight_decay", -1, "models.keras_cnn.train.weight_decay: must be"),
        (
            "models.keras_cnn.train.momentum",
            1,
            "models.keras_cnn.train.momentum: must be in [0, 1)",
        ),
        ("models.keras_cnn.train.augment", 3, "models.keras_cnn.train.augment: expected a mapping"),
        ("models.keras_cnn.train.augment", {"rotation": 200}, "models.keras_cnn.train.augment.rot"),
        ("models.keras_cnn.train.reduce_lr", {"factor": 1}, "models.keras_cnn.train.reduce_lr.fac"),
        ("models.keras_cnn.arch", [], "models.keras_cnn.arch: must list at least one layer"),
        ("models.keras_cnn.arch", "x", "models.keras_cnn.arch: expected a list, got 'x'"),
        ("models.keras_cnn.arch.0", "conv", "models.keras_cnn.arch[0]: expected a mapping"),
        (
            "models.keras_cnn.arch.0",
            {"filters": 3},
            "models.keras_cnn.arch[0]: a layer is a mapping",
        ),
        ("models.keras_cnn.arch.0.l2", -0.1, "models.keras_cnn.arch[0].l2: must be >= 0"),
        ("models.keras_cnn.arch.0.padding", "full", "models.keras_cnn.arch[0].padding: 'full' is"),
        (
            "models.keras_cnn.arch.2.stride",
            0,
            "models.keras_cnn.arch[2].stride: must be > 0, got 0",
        ),
        ("models.dense_mlp.arch.3.activation", "relu", "models.dense_mlp.arch[3]: the last layer"),
        ("validate.image_shape", [28], "validate.image_shape[1]: missing item"),
        ("validate.image_shape", [28, 28, 1], "validate.image_shape: expected at most 2 items"),
        ("validate.labels", [0, "1"], "validate.labels[1]: expected an integer, got '1'"),
        ("validate.rows.val", {"min": 1, "max": 2}, "validate.rows.val: 'val' is not one of"),
        ("validate.rows.train", {"min": 5, "max": 2}, "validate.rows.train: need 0 <= min <= max"),
        ("validate.class_share", {"min": 0.1}, "validate.class_share.max: missing required key"),
        (
            "validate.max_train_test_overlap",
            2,
            "validate.max_train_test_overlap: must be in [0, 1]",
        ),
        ("mlflow.experiment", 3, "mlflow.experiment: expected a string, got 3"),
        ("plot.compare_curves", "cubic_mlp", "plot.compare_curves: expected a list"),
        ("plot.compare_curves", ["cubic_mlp", "x"], "plot.compare_curves[1]: 'x' is not a model"),
    ],
)
def test_bad_params_name_the_key(raw, path, value, message):
    with pytest.raises(params.ParamsError) as info:
        params.parse(_set(raw, path, value))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)  # one line, however many problems pydantic found


def test_top_level_must_be_a_mapping():
    with pytest.raises(params.ParamsError, match=r"^params: the file must hold a mapping"):
        params.parse([1, 2])


def test_cubic_layer_needs_custom_family(raw):
    bad = _set(raw, "models.cubic_mlp.family", "keras")
    with pytest.raises(params.ParamsError, match=r"models.cubic_mlp.arch\[3\]: cubic"):
        params.parse(bad)


def test_kernel_larger_than_its_input_is_refused_naming_the_key(raw):
    arch = raw["models"]["scratch_cnn"]["arch"]
    first_conv = next(i for i, layer in enumerate(arch) if layer["type"] == "conv")
    arch[first_conv]["kernel"] = 29
    with pytest.raises(params.ParamsError) as err:
        params.parse(raw)
    assert str(err.value).startswith(f"models.scratch_cnn.arch[{first_conv}].kernel: 29 is larger")


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


def test_flatten_and_to_dict_are_pinned(raw):
    """MLflow params and meta.json are built from these: same keys, order, values, types."""
    p = params.parse(raw)
    flat = params.flatten(p.models["custom_cnn"])
    assert len(flat) == 58
    pinned = {
        "family": "custom",
        "dataset": "digits10",
        "arch.0.type": "conv",
        "arch.0.filters": 32,
        "arch.0.kernel": 3,
        "arch.0.stride": 1,
        "arch.0.padding": "valid",
        "arch.0.batch_norm": True,
        "arch.0.activation": "relu",
        "arch.0.l2": 0.0001,
        "arch.0.activation_before_bn": False,
        "arch.1.type": "pool",
        "arch.1.size": 2,
        "arch.1.stride": None,
        "arch.1.padding": "valid",
    }
    assert list(flat.items())[: len(pinned)] == list(pinned.items())
    train = {k: v for k, v in flat.items() if k.startswith("train.")}
    assert repr(train) == repr(
        {
            "train.epochs": 5,
            "train.batch_size": 128,
            "train.optimizer": "adam",
            "train.learning_rate": 0.003,
            "train.momentum": 0.9,
            "train.weight_decay": 0.0,
            "train.shuffle": True,
            "train.augment.rotation": 10.0,
            "train.augment.shift": 0.1,
            "train.early_stopping.patience": 3,
            "train.early_stopping.min_delta": 0.0,
            "train.reduce_lr": None,
            "train.checkpoint": False,
            "train.lr_schedule.kind": "warmup_cosine",
            "train.lr_schedule.warmup_epochs": 0.5,
            "train.lr_schedule.final_lr": 0.0,
            "train.lr_schedule.decay_rate": 0.5,
            "train.label_smoothing": 0.0,
            "train.ema": None,
        }
    )
    assert params.flatten(p.models["dense_mlp"])["train.augment"] is None
    assert repr(params.to_dict(p.data)) == repr(
        {"source": "mnist", "idx_dir": None, "fetch": {"timeout": 30.0, "retries": 2}}
    )
    assert params.to_dict(p.datasets["digits025"]) == {
        "classes": [0, 2, 5],
        "train_size": None,
        "val_fraction": 0.2,
    }
    rows = params.to_dict(p.validate)["rows"]
    assert rows == {"train": {"min": 60000, "max": 60000}, "test": {"min": 10000, "max": 10000}}


def test_layer_specs_round_trip_through_to_dict(raw):
    """The scratch family saves its arch as to_dict JSON and rebuilds it via LAYER_TYPES."""
    for m in params.parse(raw).models.values():
        back = tuple(params.LAYER_TYPES[d["type"]](**d) for d in params.to_dict(list(m.arch)))
        assert back == m.arch


def test_model_copy_replaces_fields(raw):
    """What the bench tools and tests use in place of dataclasses.replace."""
    m = params.parse(raw).models["keras_cnn"]
    tp = m.train.model_copy(update={"lr_schedule": None, "checkpoint": False})
    assert tp.lr_schedule is None and not tp.checkpoint and tp.epochs == m.train.epochs
    assert m.train.lr_schedule is not None and m.train.checkpoint  # the original is untouched


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
