"""The profile tool sets the profile's values in params.yaml and keeps everything else."""

from __future__ import annotations

import shlex
import shutil

import yaml

from pipeline.tools import profile

from .conftest import REPO


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
