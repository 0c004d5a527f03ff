"""The quiet stage process (pipeline/stages/__init__.py): the libraries' environment set
before they load, and TensorFlow's native log lines dropped from fd 2; PIPELINE_VERBOSE=1
leaves everything as it was."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO

# what a stage process does first (the package's own code, then native writes to fd 2)
CHILD = """
import os, sys
import pipeline.stages as s
s.quiet()
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written "
            b"to STDERR\\n")
os.write(2, b"I0000 00:00:1796321177.478416    2766 port.cc:153] oneDNN custom operations "
            b"are on.\\n")
os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations, rebuild "
            b"TensorFlow with the appropriate compiler flags.\\n")
os.write(2, b"\\repoch 1/2:  50%|#####     | 1/2")
print("train@m: epoch 1/2 loss 0.5", file=sys.stderr)
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"), os.environ.get("MLFLOW_LOGGING_LEVEL"),
      os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"))
"""


def _child(code: str = CHILD, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "MLFLOW_", "MPL"))}
    clean.pop("PIPELINE_VERBOSE", None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=clean | env, capture_output=True,
        timeout=60, check=True,
    )  # fmt: skip


def test_a_stage_drops_tensorflows_native_lines_and_keeps_its_own():
    out = _child()
    assert out.stderr == b"\repoch 1/2:  50%|#####     | 1/2train@m: epoch 1/2 loss 0.5\n"
    assert out.stdout.split() == [b"3", b"WARNING", b"false"]


def test_pipeline_verbose_leaves_the_libraries_as_they_are():
    out = _child(PIPELINE_VERBOSE="1")
    assert out.stderr.count(b"\n") == 4 and b"oneDNN" in out.stderr
    assert out.stdout.split() == [b"None", b"None", b"None"]


def test_matplotlibs_first_import_in_a_fresh_home_says_nothing(tmp_path):
    # A user's first `make repro` (or CI's) builds matplotlib's font cache: its INFO line
    # "generated new fontManager" came out in the middle of train@'s lines.
    child = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)  # the stage runner's\n"
        "import pipeline.stages as s\n"
        "s.quiet()\n"
        "import matplotlib.pyplot\n"
        "logging.getLogger('pipeline').info('train@m: done')\n"
    )
    out = _child(child, HOME=str(tmp_path))
    assert (tmp_path / ".cache" / "matplotlib").is_dir()  # the cache was built here
    assert out.stderr.decode().splitlines() == ["INFO:pipeline:train@m: done"]
