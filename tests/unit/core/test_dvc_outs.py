"""dvc_outs: a stage's outputs put back after a failed run."""

from __future__ import annotations

import hashlib
import subprocess

from pipeline.core import dvc_outs
from pipeline.devtools import workspace


def test_an_output_dvc_does_not_cache_comes_back_from_git_head(tmp_path):
    """`cache: false` outputs (metrics/*.json) are kept in git: restored from HEAD when its
    md5 is the one dvc.lock records, and named, never guessed, when it is not."""
    (tmp_path / "metrics").mkdir()
    good = b'{"accuracy": 0.99}\n'
    (tmp_path / "metrics" / "m.json").write_bytes(good)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    workspace.commit_all(tmp_path, "metrics")
    (tmp_path / "metrics" / "m.json").unlink()  # what DVC does before running the stage
    cache = tmp_path / "cache"
    cache.mkdir()
    out = {"path": "metrics/m.json", "md5": hashlib.md5(good).hexdigest()}
    assert dvc_outs.restore(tmp_path, out, cache) == "metrics/m.json: restored from git (HEAD)"
    assert (tmp_path / "metrics" / "m.json").read_bytes() == good
    (tmp_path / "metrics" / "m.json").unlink()
    other = {"path": "metrics/m.json", "md5": "0" * 32}  # HEAD has another version
    assert "not restored" in dvc_outs.restore(tmp_path, other, cache)
    assert not (tmp_path / "metrics" / "m.json").exists()
