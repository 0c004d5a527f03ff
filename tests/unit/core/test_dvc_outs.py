"""dvc_outs: a stage's outputs put back after a failed run."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from pipeline.core import dvc_outs
from pipeline.devtools import workspace

BIN = Path(sys.executable).parent


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


def test_uncommitted_metrics_kept_in_dvcs_cache_come_back(tmp_path, monkeypatch):
    """evaluate@ keeps a copy of metrics git HEAD lacks in DVC's cache (keep_in_cache), so a
    failed later run puts back even metrics that were never committed."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=tmp_path, check=True)
    metrics = tmp_path / "metrics" / "m.json"
    metrics.parent.mkdir()
    committed, fresh = b'{"accuracy": 0.9}\n', b'{"accuracy": 0.95}\n'
    metrics.write_bytes(committed)
    workspace.commit_all(tmp_path, "metrics")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert dvc_outs.keep_in_cache([metrics]) == []  # git HEAD has these bytes
    metrics.write_bytes(fresh)  # a new evaluation, never committed
    (kept,) = dvc_outs.keep_in_cache([metrics, tmp_path / "metrics" / "absent.json"])
    assert kept.read_bytes() == fresh and kept.stat().st_mode & 0o777 == 0o444
    metrics.unlink()  # what DVC does before running the stage
    out = {"path": "metrics/m.json", "md5": hashlib.md5(fresh).hexdigest()}
    cache = dvc_outs.cache_files(tmp_path)
    assert dvc_outs.restore(tmp_path, out, cache) == "metrics/m.json: restored from DVC's cache"
    assert metrics.read_bytes() == fresh
