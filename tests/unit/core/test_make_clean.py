"""`make clean` removes only what git does not track, and names what it removed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline.devtools import workspace
from tests.helpers import REPO


def test_make_clean_keeps_every_file_git_tracks(tmp_path: Path):
    shutil.copyfile(REPO / "Makefile", tmp_path / "Makefile")
    tracked = {
        "metrics/dense_mlp.json": '{"accuracy": 0.9}\n',
        "data/raw/.gitignore": "/mnist\n",
        "models/.gitignore": "/dense_mlp\n",
        "plots/dense_mlp/.gitignore": "/images\n",
        "reports/.gitignore": "/validation\n",
    }
    untracked = [
        "data/raw/mnist/train-images-idx3-ubyte",
        "models/dense_mlp/model.keras",
        "models/.dense_mlp.k2j4.tmp/model.keras",
        "metrics/dense_mlp.env.json",
        "plots/dense_mlp/images/0.png",
        "reports/validation/summary.json",
        "mlflow.db",  # the store stays
    ]
    for rel, text in tracked.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    workspace.commit_all(tmp_path, "tracked outputs")
    (tmp_path / "metrics/dense_mlp.json").write_text('{"accuracy": 0.95}\n')  # changed: kept
    for rel in untracked:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")

    out = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, text=True)

    assert out.returncode == 0, out.stderr
    for rel, text in tracked.items():
        expected = '{"accuracy": 0.95}\n' if rel.startswith("metrics/") else text
        assert (tmp_path / rel).read_text() == expected, rel
    assert (tmp_path / "mlflow.db").is_file()
    assert not [rel for rel in untracked[:-1] if (tmp_path / rel).exists()]
    shown = ["data/raw/mnist/", "models/dense_mlp/", "models/.dense_mlp.k2j4.tmp/"]
    shown += ["metrics/dense_mlp.env.json", "plots/dense_mlp/images/", "reports/validation/"]
    for path in shown:
        assert f"removed {path}\n" in out.stdout, out.stdout
    assert "metrics/dense_mlp.json" not in out.stdout


def test_make_clean_outside_git_removes_nothing(tmp_path: Path):
    shutil.copyfile(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "m.json").write_text("{}")
    out = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert "not a git checkout" in out.stderr
    assert (tmp_path / "metrics" / "m.json").is_file()
