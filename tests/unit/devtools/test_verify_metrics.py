"""The cross-machine check (pipeline/devtools/verify_metrics.py) on real test predictions:
the tiny profile's committed reference (reference/tiny/), altered as another kernel path or
a real change would alter it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core import config, numenv
from pipeline.devtools import verify_metrics as vm

REFERENCE = config.ROOT / "reference" / "tiny"
PRESET = "keras_cnn"


@pytest.fixture
def reference() -> vm.Outputs:
    out = vm.Outputs(REFERENCE)
    assert PRESET in out.models(), "reference/tiny/ lacks keras_cnn"
    return out


def arrays(reference: vm.Outputs) -> tuple[np.ndarray, np.ndarray]:
    frame = reference.predictions(PRESET)
    return frame["actual"].to_numpy(), frame["predicted"].to_numpy()


def other_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` as the same machine with oneDNN off and one BLAS/OpenMP thread would record."""
    changed = dict(env, onednn="off", blas_threads="1", threads="OMP_NUM_THREADS=1")
    return changed | {"fingerprint": numenv.fingerprint(changed)}


def flip(actual, predicted, to_wrong: int, to_right: int, classes) -> np.ndarray:
    """``predicted`` with ``to_wrong`` right images made wrong and ``to_right`` wrong ones
    made right (the first ones of each)."""
    out = predicted.copy()
    right, wrong = np.flatnonzero(predicted == actual), np.flatnonzero(predicted != actual)
    assert len(right) >= to_wrong and len(wrong) >= to_right
    for i in right[:to_wrong]:
        out[i] = next(c for c in classes if c != actual[i])
    out[wrong[:to_right]] = actual[wrong[:to_right]]
    return out


def test_identical_predictions_on_the_same_path_pass(reference):
    actual, predicted = arrays(reference)
    env = reference.env(PRESET)
    assert env.get("fingerprint"), "the reference records its numeric environment"
    check = vm.check_preset(PRESET, actual, predicted, predicted.copy(), env, dict(env))
    assert check.ok and check.verdict == "identical" and check.env_diff == []


def test_another_kernel_path_with_a_few_flips_passes_and_names_the_fields(reference):
    actual, predicted = arrays(reference)
    env = reference.env(PRESET)
    new = flip(actual, predicted, 4, 3, sorted(set(actual)))
    check = vm.check_preset(PRESET, actual, predicted, new, env, other_path(env))
    assert check.ok and check.verdict == "within noise"
    assert check.flipped == 7 and check.new_errors == check.ref_errors + 1
    assert check.env_diff == ["blas_threads", "onednn", "threads"]
    # the same flips on the same kernel path are a failure: those runs must be identical
    same = vm.check_preset(PRESET, actual, predicted, new, env, dict(env))
    assert not same.ok and "same kernel path" in same.verdict


def test_three_hundred_extra_errors_fail(reference):
    actual, predicted = arrays(reference)
    env = reference.env(PRESET)
    new = flip(actual, predicted, 300, 0, sorted(set(actual)))
    check = vm.check_preset(PRESET, actual, predicted, new, env, other_path(env))
    assert not check.ok and check.verdict.startswith("REAL DIFFERENCE (McNemar")
    assert check.test.p_two_sided < 1e-50


def test_command_compares_a_finished_run_and_exits_1_on_a_real_change(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(REFERENCE, run)
    assert vm.main(["--run", str(run), "--reference", str(REFERENCE)]) == 0
    out = capsys.readouterr().out
    assert "numeric environment: the same" in out and out.count("identical") >= 7

    env = numenv.read(run / "metrics" / f"{PRESET}.env.json")
    numenv.write(run / "metrics" / f"{PRESET}.env.json", other_path(env))
    path = run / "plots" / PRESET / config.PREDICTIONS_CSV
    frame = pd.read_csv(path, dtype=str)
    actual, predicted = frame["actual"].to_numpy(), frame["predicted"].to_numpy()
    frame["predicted"] = flip(actual, predicted, 2, 2, sorted(set(actual)))
    frame.to_csv(path, index=False)
    assert vm.main(["--run", str(run), "--reference", str(REFERENCE)]) == 0
    out = capsys.readouterr().out
    assert "onednn: on -> off  (keras_cnn)" in out and "within noise" in out

    frame["predicted"] = flip(actual, predicted, 300, 0, sorted(set(actual)))
    frame.to_csv(path, index=False)
    assert vm.main(["--run", str(run), "--reference", str(REFERENCE)]) == 1
    captured = capsys.readouterr()
    assert "REAL DIFFERENCE" in captured.out and "FAILED: keras_cnn" in captured.err


def test_missing_predictions_are_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(REFERENCE, run)
    (run / "plots" / PRESET / config.PREDICTIONS_CSV).unlink()
    assert vm.main(["--run", str(run), "--reference", str(REFERENCE)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"plots/{PRESET}/predictions.csv" in err


def test_reference_is_small(reference):
    size = sum(f.stat().st_size for f in Path(REFERENCE).rglob("*") if f.is_file())
    assert size < 400_000, f"reference/tiny/ holds {size} bytes"
