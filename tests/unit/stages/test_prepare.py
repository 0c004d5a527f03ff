"""prepare@<dataset> on small real IDX files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from pipeline.core import config, params
from pipeline.data import gate
from pipeline.data.prepared import load_meta, load_split
from pipeline.stages import prepare
from tests.conftest import REPO


@pytest.fixture(scope="module")
def p() -> params.Params:
    return params.parse(yaml.safe_load(config.params_path(REPO).read_text()))


@pytest.fixture(autouse=True)
def vouched(synthetic_raw, tmp_path, monkeypatch):
    """A passing validation summary for ``synthetic_raw`` (prepare refuses raw files that
    validation did not pass; tests/unit/data/test_gate.py covers the refusal)."""
    folder = tmp_path / "validation"
    folder.mkdir()
    summary = {"success": True, "raw_sha256": gate.raw_hashes(synthetic_raw)}
    (folder / config.SUMMARY_JSON).write_text(json.dumps(summary))
    monkeypatch.setattr(config, "validation_dir", lambda root=None: folder)
    return folder


def _with_dataset(p, name, **changes):
    datasets = dict(p.datasets)
    datasets[name] = params.DatasetParams(**{**params.to_dict(datasets[name]), **changes})
    return p.model_copy(update={"datasets": datasets})


def test_digits10_splits_shapes_and_meta(p, synthetic_raw, tmp_path):
    out = tmp_path / "prepared" / "digits10"
    meta = prepare.run(p, "digits10", synthetic_raw, out)
    train, val, test = (load_split(out, s) for s in ("train", "val", "test"))
    assert meta["sizes"] == {"train": 540, "val": 60, "test": 120}
    for split in (train, val, test):
        assert split.x.dtype == np.float32 and split.x.shape[1:] == (28, 28, 1)
        assert split.y.dtype == np.int64
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
    # stratified: every class keeps its share in the validation split
    assert np.bincount(val.y).tolist() == [6] * 10
    assert load_meta(out) == json.loads((out / "meta.json").read_text()) == meta
    assert meta["source_sha256"].keys() == set(config.RAW_FILES)
    # validation and training images are disjoint subsets of the raw training split
    rows = {t.tobytes() for t in train.x}
    assert not any(v.tobytes() in rows for v in val.x)


def test_classes_are_mapped_in_listed_order(p, synthetic_raw, tmp_path):
    out = tmp_path / "d025"
    meta = prepare.run(p, "digits025", synthetic_raw, out)
    assert meta["class_map"] == {"0": 0, "2": 1, "5": 2}
    test = load_split(out, "test")
    assert sorted(set(test.y.tolist())) == [0, 1, 2]
    assert meta["sizes"]["test"] == 36  # the whole test set of the three classes
    assert meta["counts"]["val"] == {"0": 12, "2": 12, "5": 12}


def test_train_size_takes_a_stratified_subset(p, synthetic_raw, tmp_path):
    p2 = _with_dataset(p, "digits10", train_size=200)
    meta = prepare.run(p2, "digits10", synthetic_raw, tmp_path / "o")
    assert meta["sizes"]["train"] + meta["sizes"]["val"] == 200
    assert meta["sizes"]["test"] == 120
    assert set(meta["counts"]["train"].values()) == {18}


def test_same_seed_same_bytes_other_seed_other_split(p, synthetic_raw, tmp_path):
    a = prepare.run(p, "digits10", synthetic_raw, tmp_path / "a")
    b = prepare.run(p, "digits10", synthetic_raw, tmp_path / "b")
    assert a == b
    for s in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{s}.npz").read_bytes() == (
            tmp_path / "b" / f"{s}.npz"
        ).read_bytes()
    p3 = p.model_copy(update={"seed": 7})
    prepare.run(p3, "digits10", synthetic_raw, tmp_path / "c")
    assert not np.array_equal(
        load_split(tmp_path / "a", "val").y, load_split(tmp_path / "c", "val").y
    )


def test_too_large_train_size_fails_and_keeps_previous_output(p, synthetic_raw, tmp_path):
    out = tmp_path / "o"
    prepare.run(p, "digits10", synthetic_raw, out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    with pytest.raises(ValueError, match="train_size 5000 exceeds the 600 training images"):
        prepare.run(_with_dataset(p, "digits10", train_size=5000), "digits10", synthetic_raw, out)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []


def test_missing_raw_file_is_a_clear_error(p, synthetic_raw, tmp_path):
    (synthetic_raw / config.RAW_FILES[1]).unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        prepare.run(p, "digits10", synthetic_raw, tmp_path / "o")
    assert not (tmp_path / "o").exists()
