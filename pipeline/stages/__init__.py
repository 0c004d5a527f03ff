"""The DVC stages, one module each (``python -m pipeline.stages.<stage> [<name>]``).

Importing this package installs a SIGTERM handler before a stage module imports anything
heavy (TensorFlow, mlflow, pandas take seconds): a stage stopped during its imports says so
in one line, puts back the outputs DVC removed before running it, and exits 143, instead of
dying silently with them gone. The stage runner (pipeline/core/runner.py) installs its own
handler once the stage's body starts.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _stage_label() -> str | None:
    """``<stage>[@<name>]`` from this process's command line (``-m pipeline.stages.x y``);
    None when this process is not a stage (a test importing a stage module)."""
    try:
        argv = Path("/proc/self/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        argv = sys.argv
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and argv[i + 1].startswith("pipeline.stages."):
            stage = argv[i + 1].rsplit(".", 1)[-1]
            rest = [a for a in argv[i + 2 :] if a]
            return f"{stage}@{rest[0]}" if rest else stage
    return None


def _terminated_during_imports(signum, frame) -> None:
    label = _stage_label() or "stage"
    print(f"{label}: interrupted (SIGTERM) while starting; previous outputs kept", file=sys.stderr)
    try:
        from pipeline.core.dvc_outs import restore_removed_outs

        for line in restore_removed_outs():
            print(f"{label}: {line}", file=sys.stderr)
    except Exception as exc:  # the interruption is the message that matters
        print(f"{label}: previous outputs not restored ({exc})", file=sys.stderr)
    sys.stderr.flush()
    os._exit(143)


if _stage_label() and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
    signal.signal(signal.SIGTERM, _terminated_during_imports)
