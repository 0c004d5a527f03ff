"""The profile tool sets the profile's values in params.yaml and keeps everything else."""

from __future__ import annotations

import shlex
import shutil

import pytest
import yaml

from pipeline.core import params
from pipeline.devtools import profile
from tests.helpers import REPO


def project(tmp_path):
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "profiles").mkdir()
    shutil.copy2(REPO / "profiles" / "tiny.yaml", tmp_path / "profiles" / "tiny.yaml")
    return tmp_path


def test_tiny_keeps_comments_and_changes_only_its_values(tmp_path):
    root = project(tmp_path)
    before = (root / "params.yaml").read_text()
    merged = profile.apply("tiny", root=root)
    after = (root / "params.yaml").read_text()
    assert yaml.safe_load(after) == merged
    assert merged["datasets"]["digits10"]["train_size"] == 1000
    assert merged["models"]["dense_mlp"]["train"]["epochs"] == 2
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new)  # same layout: each changed line is the same line
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    overlay = yaml.safe_load((root / "profiles" / "tiny.yaml").read_text())
    leaves = len(profile.set_flags(overlay)) // 2
    assert 0 < len(changed) <= leaves
    comments = [line for line in old if "#" in line]
    assert comments and all(any(c.split("#", 1)[1] in n for n in new) for c in comments)


def test_set_prints_dvc_exp_run_flags(tmp_path, capsys):
    root = project(tmp_path)
    overlay = yaml.safe_load((root / "profiles" / "tiny.yaml").read_text())
    flags = profile.set_flags(overlay)
    assert flags[:2] == ["-S", "datasets.digits10.train_size=1000"]
    assert shlex.split(shlex.join(flags)) == flags


def test_unknown_profile_is_one_line(capsys):
    assert profile.main(["nosuch"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("profile: error: ") and "\n" not in err and "tiny" in err


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "profiles").glob("*.yaml")))
def test_every_profile_applies_and_reads_back_the_same(tmp_path, name):
    """Each shipped profile writes a params.yaml that PyYAML (the stages) and the schema read
    back as the merged values: full.yaml's ``min_lr: 0.00001`` once came back from the
    round trip as ``1e-05``, a string to YAML 1.1, and the profile refused to apply."""
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    merged = profile.apply(name, root=tmp_path)
    written = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert written == merged
    params.parse(written)  # the schema accepts what was written


def test_small_floats_stay_floats(tmp_path):
    (tmp_path / "profiles").mkdir()
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "profiles" / "p.yaml").write_text(
        "models:\n  keras_cnn:\n    train:\n      lr_schedule: null\n"
        "      reduce_lr: {factor: 0.2, patience: 3, min_lr: 0.00001}\n"
    )
    profile.apply("p", root=tmp_path)
    text = (tmp_path / "params.yaml").read_text()
    assert "reduce_lr: {factor: 0.2, patience: 3, min_lr: 1.0e-05}" in text
    reduce_lr = yaml.safe_load(text)["models"]["keras_cnn"]["train"]["reduce_lr"]
    assert reduce_lr["min_lr"] == 1e-5 and isinstance(reduce_lr["min_lr"], float)
