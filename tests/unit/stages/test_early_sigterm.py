"""A stage stopped by SIGTERM during its imports (TensorFlow, mlflow: seconds) says so in
one line and exits 143 (#28): the handler is installed by pipeline/stages/__init__.py, before
the stage module imports anything heavy. It used to die silently (-15)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.helpers import REPO, plain_env


def test_sigterm_during_imports_is_one_line_and_exit_143():
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.stages.evaluate", "dense_mlp"],
        cwd=REPO,
        env=plain_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)  # the package is imported; TensorFlow and mlflow are not yet (3-5 s)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.splitlines()[0] == (
        "evaluate@dense_mlp: interrupted (SIGTERM) while starting; previous outputs kept"
    ), err
    assert "Traceback" not in err
