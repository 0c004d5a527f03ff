"""core.io: atomic folders keep the previous output on failure and leave no temp debris."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.io import atomic_dir, atomic_save, stale_temps


def test_atomic_dir_replaces_the_folder_only_on_success(tmp_path):
    out = tmp_path / "models" / "m"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with atomic_dir(out) as tmp:
        assert not (out / "b.txt").exists()
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert stale_temps(out) == []


def test_atomic_dir_keeps_the_previous_folder_on_error(tmp_path):
    out = tmp_path / "m"
    with atomic_dir(out) as tmp:
        (tmp / "good.txt").write_text("good")
    with pytest.raises(KeyboardInterrupt), atomic_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["good.txt"]
    assert list(tmp_path.iterdir()) == [out]


def test_atomic_save_writes_through_a_temporary_file(tmp_path):
    path = tmp_path / "a.npz"
    atomic_save(path, lambda p: np.savez(p, x=np.arange(3)))

    def broken(p):
        p.write_bytes(b"half")
        raise ValueError("disk full")

    with pytest.raises(ValueError):
        atomic_save(path, broken)
    with np.load(path) as f:
        assert f["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_stale_temps_finds_what_a_killed_writer_left(tmp_path):
    out = tmp_path / "digits10"
    (tmp_path / ".digits10.abc123.tmp").mkdir()
    (tmp_path / ".other.x.tmp").mkdir()
    assert [p.name for p in stale_temps(out)] == [".digits10.abc123.tmp"]
