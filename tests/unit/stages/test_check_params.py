"""check_params (#28 item 3): no infinity or NaN anywhere in params; each dataset's
train_size against the training images of its classes, before any stage runs."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.data.idx import encode_idx
from pipeline.stages.check_params import check_train_sizes
from tests.helpers import params_spec


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_infinite_or_nan_floats_are_refused(value):
    raw = params_spec("dense_mlp")
    raw["models"]["dense_mlp"]["train"]["learning_rate"] = value
    with pytest.raises(params_mod.ParamsError, match=r"models\.dense_mlp.train.learning_rate"):
        params_mod.parse(raw)
    raw = params_spec("dense_mlp")
    raw["validate"] = {"max_train_test_overlap": value}  # a bounded float too
    with pytest.raises(params_mod.ParamsError, match=r"validate\.max_train_test_overlap"):
        params_mod.parse(raw)


def _with_train_size(size: int) -> tuple[params_mod.Params, str]:
    raw = params_spec("dense_mlp")
    name = raw["models"]["dense_mlp"]["dataset"]
    raw["datasets"][name]["train_size"] = size
    return params_mod.parse(raw), name


def test_train_size_against_the_fetched_labels(tmp_path):
    params, name = _with_train_size(500)
    classes = params.datasets[name].classes
    labels = np.repeat(np.arange(10, dtype=np.uint8), 40)  # 40 images a class: < 500
    raw_dir = config.raw_dir(params.data.source, tmp_path)
    raw_dir.mkdir(parents=True)
    (raw_dir / config.RAW_FILES[1]).write_bytes(encode_idx(labels))
    have = 40 * len(classes)
    with pytest.raises(params_mod.ParamsError) as err:
        check_train_sizes(params, tmp_path)
    assert str(err.value).startswith(f"datasets.{name}.train_size: 500 exceeds the {have}")
    params, _ = _with_train_size(have)
    assert "raw labels" in check_train_sizes(params, tmp_path)


def test_train_size_without_data_is_checked_against_validate_rows(tmp_path):
    params, name = _with_train_size(1_000_000)
    with pytest.raises(params_mod.ParamsError, match=rf"datasets.{name}.train_size: 1000000"):
        check_train_sizes(params, tmp_path)
    params, _ = _with_train_size(100)
    assert "data not fetched yet" in check_train_sizes(params, tmp_path)
