"""make exps against a real DVC project: a scratch git + DVC repo with a trivial stage per
model (no TensorFlow), one `dvc exp run -S` changing one model's learning rate; the table
fits 120 columns and shows the changed param and that model's metrics, not the others'."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.devtools import exps

DVC = str(Path(sys.executable).parent / "dvc")
MODELS = ("a_rather_long_model_name", "b_model")

SCORE = """\
import json, sys, yaml
name = sys.argv[1]
spec = yaml.safe_load(open("params.yaml"))["models"][name]
lr = spec["train"]["learning_rate"]
acc = round(0.99 - lr, 6)
metrics = {"accuracy": acc, "errors": round((1 - acc) * 1000), "loss": round(lr * 3, 6),
           "macro_f1": round(acc - 0.001, 6), "macro_precision": acc, "macro_recall": acc,
           "n_test": 1000}
json.dump(metrics, open(f"metrics/{name}.json", "w"), indent=2)
"""


def _run(cmd: list[str], cwd: Path) -> str:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(cwd.parent),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "DVC_NO_ANALYTICS": "1",
    }
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exps") / "proj"
    root.mkdir()
    (root / "metrics").mkdir()
    (root / "score.py").write_text(SCORE)
    models = {
        m: {"dataset": "digits10", "train": {"epochs": 2, "learning_rate": 0.01, "batch_size": 32}}
        for m in MODELS
    }
    params = {"seed": 42, "datasets": {"digits10": {"train_size": 100}}, "models": models}
    (root / "params.yaml").write_text(json.dumps(params, indent=2))  # JSON is YAML
    (root / "dvc.yaml").write_text(
        textwrap.dedent(f"""\
        stages:
          train:
            foreach: ${{models}}
            do:
              cmd: {sys.executable} score.py ${{key}}
              deps:
                - score.py
              params:
                - models.${{key}}
              metrics:
                - metrics/${{key}}.json:
                    cache: false
        """)
    )
    _run(["git", "init", "-q", "-b", "main"], root)
    _run([DVC, "init", "-q"], root)
    _run([DVC, "repro", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-q", "-m", "baseline"], root)
    key = f"models.{MODELS[0]}.train.learning_rate"
    _run([DVC, "exp", "run", "-q", "-n", "lr-high", "-S", f"{key}=0.05"], root)
    return root


@pytest.mark.slow  # the module's DVC project: git, dvc init, dvc exp run
def test_table_fits_and_shows_the_change(project, capsys):
    assert exps.main(["--root", str(project)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120, out
    assert "learning_rate" in out and "lr-high" in out and "main" in out
    row = next(line for line in lines if "lr-high" in line)
    assert "0.05" in row and "0.9400" in row  # the changed param, the changed model's accuracy
    base = next(line for line in lines if line.startswith("main"))
    assert "0.01" in base and "0.9800" in base
    assert MODELS[0] in out and MODELS[1] not in out  # the other model did not change
    assert "n_test" not in out and "epochs" not in out  # unchanged columns are left out


@pytest.mark.slow  # the module's DVC project: git, dvc init, dvc exp run
def test_narrow_width_splits_the_table(project, capsys):
    assert exps.main(["--root", str(project), "--width", "60"]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 60, out
    assert out.count("Experiment") >= 2  # the columns that did not fit went to a second part
    assert "accuracy" in out and "macro_recall" in out


def test_not_a_dvc_project_is_one_line(tmp_path, capsys):
    assert exps.main(["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("exps: error: `dvc exp show --json ` failed")
