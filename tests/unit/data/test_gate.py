"""The validation gate: prepare reads raw files only when validation passed on those very
files."""

from __future__ import annotations

import json

import pytest

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.data import gate
from pipeline.stages import prepare, validate
from tests.helpers import make_digits, params_spec, write_raw


def test_failed_validation_blocks_prepare(tmp_path):
    raw_params = params_spec("scratch_cnn")
    raw_params["validate"]["rows"] = {
        "train": {"min": 600, "max": 600},
        "test": {"min": 120, "max": 120},
    }
    p = params_mod.parse(raw_params)
    train, test = make_digits(60, seed=1), make_digits(12, seed=2)
    train[1][3] = 11  # the label the probe planted
    raw = write_raw(tmp_path / "raw", train, test)
    reports = tmp_path / "validation"
    with pytest.raises(validate.ValidationFailed):
        validate.run(p, raw, reports)
    summary = reports / config.SUMMARY_JSON
    assert json.loads(summary.read_text())["raw_sha256"] == gate.raw_hashes(raw)
    with pytest.raises(gate.NotValidated, match="failed"):
        prepare.run(p, "digits10", raw, tmp_path / "out", summary)
    assert not (tmp_path / "out").exists()

    # A passing report does not vouch for other files.
    train[1][3] = 3
    write_raw(raw, train, test)
    validate.run(p, raw, reports)
    prepare.run(p, "digits10", raw, tmp_path / "out", summary)
    write_raw(raw, make_digits(60, seed=5), test)
    with pytest.raises(gate.NotValidated, match="not the file validation checked"):
        prepare.run(p, "digits10", raw, tmp_path / "out", summary)
