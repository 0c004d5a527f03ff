"""The local MLflow store under concurrent stages: processes that create it at once agree
on one experiment."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO, plain_env

CREATE = """
import sys
from pathlib import Path
from pipeline import tracking
print(tracking.setup("concurrent", root=Path(sys.argv[1])))
"""


@pytest.mark.slow
def test_four_processes_create_a_fresh_store_at_once(tmp_path):
    env = plain_env(PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert len({out.strip().splitlines()[-1] for _, out, _ in results}) == 1  # one experiment
