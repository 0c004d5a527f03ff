"""The validate stage: the GX suite passes on good data and each expectation catches its break.

Synthetic IDX data (200 train / 50 test noisy digit-like images, balanced labels), with the
row-count thresholds of params.validate adapted through model_copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.core.params import RowBounds, ShareBounds, ValidateParams
from pipeline.data import table as tables
from pipeline.data.idx import IdxError, encode_idx
from pipeline.stages import validate

N_TRAIN, N_TEST = 200, 50


def _images(rng: np.random.Generator, n: int, size: int = 28) -> np.ndarray:
    ink = rng.random((n, size, size)) < 0.2
    return (rng.integers(1, 256, (n, size, size)) * ink).astype(np.uint8)  # (N, H, W)


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % 10).astype(np.uint8)  # (N,)


@pytest.fixture(scope="module")
def good() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "train": (_images(rng, N_TRAIN), _labels(rng, N_TRAIN)),
        "test": (_images(rng, N_TEST), _labels(rng, N_TEST)),
    }


@pytest.fixture(scope="module")
def params() -> params_mod.Params:
    """The project's params with thresholds spelled out here, row counts for the small data."""
    v = ValidateParams(
        rows={
            "train": RowBounds(min=N_TRAIN, max=N_TRAIN),
            "test": RowBounds(min=N_TEST, max=N_TEST),
        },
        labels=tuple(range(10)),
        pixel_min=0,
        pixel_max=255,
        class_share=ShareBounds(min=0.05, max=0.15),
        min_nonzero_pixels=1,
        max_train_test_overlap=0.001,
        image_shape=(28, 28),
    )
    return params_mod.load().model_copy(update={"validate": v})


def _write_raw(folder: Path, splits) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (splits["train"][0], splits["train"][1], splits["test"][0], splits["test"][1])
    for name, arr in zip(config.RAW_FILES, arrays, strict=True):
        (folder / name).write_bytes(encode_idx(arr))
    return folder


def _copy(splits):
    return {s: (x.copy(), y.copy()) for s, (x, y) in splits.items()}


def _failed(summary: dict) -> set[tuple[str, str, str | None]]:
    return {(f["table"], f["expectation"], f["column"]) for f in summary["failures"]}


def _report(out: Path) -> dict:
    assert (out / "index.html").is_file()
    return json.loads((out / config.SUMMARY_JSON).read_text())


def test_passes_on_good_data(tmp_path, good, params):
    out = tmp_path / "reports"
    summary = validate.run(params, _write_raw(tmp_path / "raw", good), out)
    assert summary["success"] and summary["expectations"] == {"run": 16, "failed": 0}
    assert _report(out) == summary
    train = summary["splits"]["train"]
    assert train["rows"] == N_TRAIN and train["class_counts"] == {str(c): 20 for c in range(10)}
    assert train["shapes"] == ["28x28"] and train["dtypes"] == ["uint8"]
    assert summary["splits"]["test"]["class_shares"] == {str(c): 0.1 for c in range(10)}
    html = (out / "index.html").read_text()
    assert all(name in html for name in ("train", "test", "class_share"))


def test_table_columns(good):
    table = tables.image_table(good)
    assert len(table) == N_TRAIN + N_TEST
    x, y = good["train"]
    row = table.iloc[3]
    assert row["split"] == "train" and row["index"] == 3 and row["label"] == y[3]
    assert row["pixel_min"] == x[3].min() and row["pixel_max"] == x[3].max()
    assert row["nonzero"] == np.count_nonzero(x[3]) and row["pixel_mean"] == pytest.approx(
        x[3].mean()
    )
    assert table["hash"].nunique() == len(table) and not table["shared"].any()


def _break_rows(s, p):
    s["train"] = (s["train"][0][:-10], s["train"][1][:-10])
    return s, p


def _break_labels(s, p):
    s["train"][1][[3, 4]] = [11, 12]
    return s, p


def _break_pixel_max(s, p):  # uint8 cannot exceed 255: lower the bound instead
    return s, p.model_copy(update={"validate": p.validate.model_copy(update={"pixel_max": 200})})


def _break_pixel_min(s, p):
    return s, p.model_copy(update={"validate": p.validate.model_copy(update={"pixel_min": 1})})


def _break_class_share(s, p):
    y = s["train"][1]
    y[y == 1] = 0  # class 0: 20% of train, class 1: none
    return s, p


def _break_blank(s, p):
    s["test"][0][7] = 0
    return s, p


def _break_overlap(s, p):
    s["test"][0][:3] = s["train"][0][10:13]
    return s, p


def _break_shape(s, p):
    x, y = s["test"]
    s["test"] = (np.pad(x, ((0, 0), (2, 2), (2, 2))), y)  # (N, 32, 32)
    return s, p


BREAKS = {
    "rows": (_break_rows, {("train", "expect_table_row_count_to_be_between", None)}),
    "labels": (_break_labels, {("train", "expect_column_values_to_be_in_set", "label")}),
    "pixel_max": (
        _break_pixel_max,
        {(s, "expect_column_values_to_be_between", "pixel_max") for s in ("train", "test")},
    ),
    "pixel_min": (
        _break_pixel_min,
        {(s, "expect_column_values_to_be_between", "pixel_min") for s in ("train", "test")},
    ),
    "class_share": (
        _break_class_share,
        {("class_share", "expect_column_values_to_be_between", "share")},
    ),
    "blank": (_break_blank, {("test", "expect_column_values_to_be_between", "nonzero")}),
    "overlap": (_break_overlap, {("test", "expect_column_mean_to_be_between", "shared")}),
    "shape": (_break_shape, {("test", "expect_column_values_to_be_in_set", "shape")}),
}


@pytest.mark.parametrize("name", BREAKS)
def test_each_expectation_fails_on_broken_data(tmp_path, good, params, name):
    breaker, expected = BREAKS[name]
    splits, p = breaker(_copy(good), params)
    out = tmp_path / "reports"
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(p, _write_raw(tmp_path / "raw", splits), out)
    summary = _report(out)
    assert not summary["success"]
    assert _failed(summary) == expected
    assert summary["expectations"] == {"run": 16, "failed": len(expected)}
    header, *lines = str(err.value).splitlines()
    assert header == f"{len(expected)} expectation(s) failed (report in {out}):"
    assert lines == [f["message"] for f in summary["failures"]]


def test_messages_name_the_offending_values(tmp_path, good, params):
    splits, p = _break_labels(_copy(good), params)
    splits, p = _break_overlap(*_break_blank(splits, p))
    with pytest.raises(validate.ValidationFailed) as err:
        validate.check(splits, p.validate, tmp_path / "out")
    lines = str(err.value).splitlines()[1:]
    assert lines == [
        "train: expected label in {0..9}: 2 images are not, e.g. 11 (index 3), 12 (index 4)",
        "test: expected not blank: >= 1 ink pixels: 1 images are not, e.g. 0 (index 7)",
        "test: expected share of test images also in train <= 0.001: observed 0.06",
    ]
    splits, p = _break_class_share(_copy(good), params)
    rows = {**p.validate.rows, "train": RowBounds(min=300, max=400)}
    with pytest.raises(validate.ValidationFailed) as err:
        validate.check(splits, p.validate.model_copy(update={"rows": rows}), tmp_path / "out")
    assert str(err.value).splitlines()[1:] == [
        "train: expected row count in [300, 400]: observed 200",
        "class_share: expected each class's share of its split in [0.05, 0.15]: 2 classes are not, "
        "e.g. 0.2 (split train, label 0), 0.0 (split train, label 1)",
    ]


def test_dtype(tmp_path, good, params):
    splits = _copy(good)
    x, y = splits["train"]
    splits["train"] = (x.astype(np.uint16), y)  # IDX files are always uint8: check the arrays
    with pytest.raises(validate.ValidationFailed, match=r"train: .*dtype.* e\.g\. uint16"):
        validate.check(splits, params.validate, tmp_path / "out")
    expected = {("train", "expect_column_values_to_be_in_set", "dtype")}
    assert _failed(_report(tmp_path / "out")) == expected


def test_main_exit_codes(tmp_path, monkeypatch, capsys, good, params):
    raw, out = tmp_path / "raw", tmp_path / "reports"
    monkeypatch.setattr(params_mod, "load", lambda: params)
    monkeypatch.setattr(config, "raw_dir", lambda source: raw)
    monkeypatch.setattr(config, "validation_dir", lambda: out)

    assert validate.main([]) == 1  # no raw data yet
    assert "validate: error:" in capsys.readouterr().err

    _write_raw(raw, good)
    assert validate.main([]) == 0
    assert "16 expectations passed" in capsys.readouterr().out

    _write_raw(raw, _break_labels(_copy(good), params)[0])
    assert validate.main([]) == 1
    err = capsys.readouterr().err
    assert "1 expectation(s) failed" in err and "11 (index 3)" in err
    assert "Traceback" not in err
    assert _report(out)["expectations"]["failed"] == 1


def test_images_and_labels_must_match(tmp_path, good, params):
    splits = _copy(good)
    splits["test"] = (splits["test"][0], splits["test"][1][:-1])
    with pytest.raises(IdxError, match="test: images"):
        validate.run(params, _write_raw(tmp_path / "raw", splits), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_passes_on_mnist(tmp_path):
    """The real thing, when the fetch stage has put MNIST in data/raw/mnist/."""
    raw = config.raw_dir("mnist")
    if not all((raw / f).is_file() for f in config.RAW_FILES):
        pytest.skip(f"no MNIST in {raw} (run the fetch stage)")
    summary = validate.check(tables.load_splits(raw), params_mod.load().validate, tmp_path / "out")
    assert summary["success"] and summary["splits"]["train"]["rows"] == 60000
