"""The DVC stages, one module each (``python -m pipeline.stages.<stage> [<name>]``).

Importing this package installs a SIGTERM handler before a stage module imports anything
heavy (TensorFlow, mlflow, pandas take seconds): a stage stopped during its imports says so
in one line, puts back the outputs DVC removed before running it, and exits 143, instead of
dying silently with them gone. The stage runner (pipeline/core/runner.py) installs its own
handler once the stage's body starts.

It also quiets the libraries at their source, before any of them is imported, so that a
stage prints its own lines only (under ``make repro``, ``dvc repro`` and ``dvc exp run``
alike: DVC passes no Makefile environment): TensorFlow's C++ log (``TF_CPP_MIN_LOG_LEVEL=3``:
the ``I0000 cpu_feature_guard``/``oneDNN`` and ``E0000 ... use_unbounded_threadpool``
lines), MLflow's INFO lines, "Successfully registered model" and its "Downloading
artifacts" bars, and the INFO logs of Great Expectations, absl and other libraries.
``PIPELINE_VERBOSE=1`` leaves all of it as the libraries have it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import sys
import threading
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
    end_filter()
    os._exit(143)


# The environment of a quiet stage (module docstring); read by the libraries when they load.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# Loggers whose INFO lines are the libraries' business (the stage runner logs at INFO).
QUIET_LOGGERS = (
    "great_expectations", "absl", "tensorflow", "keras", "h5py", "urllib3", "git",
    "matplotlib",  # "generated new fontManager" at INFO on the first import in a fresh HOME
)  # fmt: skip


# What TensorFlow's native code writes to fd 2 whatever TF_CPP_MIN_LOG_LEVEL says (TF 2.21:
# port.cc's "oneDNN custom operations are on" line, absl's "All log messages before
# absl::InitializeLog()" notice, cpu_feature_guard's continuation line): dropped by a filter
# on fd 2 (``filter_stderr``). Every other byte passes as it comes.
CHATTER = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to"
    rb" STDERR|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] |To enable the following "
    rb"instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)"
)
# The starts of those lines: a fragment that may become one is held until its line ends.
_CHATTER_STARTS = (b"WARNING: All log", b"I0", b"W0", b"To enable the following")
_filter_done = None
_stderr_tty: bool | None = None  # whether fd 2 was a terminal before the filter took it


def stderr_is_terminal() -> bool:
    """Whether this process's stderr is a terminal (fd 2 before ``filter_stderr``)."""
    return os.isatty(2) if _stderr_tty is None else _stderr_tty


def _pump(src: int, dst: int) -> None:
    pending = b""
    while chunk := os.read(src, 1 << 16):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not CHATTER.match(line))
        maybe = pending and any(
            pending.startswith(c[: len(pending)]) or pending.startswith(c) for c in _CHATTER_STARTS
        )
        if pending and not maybe:  # a progress bar's \r fragment: shown now
            out, pending = out + pending, b""
        if out:
            os.write(dst, out)
    if pending and not CHATTER.match(pending):
        os.write(dst, pending)


def filter_stderr() -> None:
    """Pass fd 2 of this process (and of its children) through a thread that drops the
    ``CHATTER`` lines; the filter ends at exit (``end_filter``)."""
    global _filter_done, _stderr_tty
    if _filter_done is not None:
        return
    _stderr_tty = os.isatty(2)
    real = os.dup(2)
    r, w = os.pipe()
    os.dup2(w, 2)
    os.close(w)
    pump = threading.Thread(target=_pump, args=(r, real), name="stderr-filter", daemon=True)
    pump.start()

    def done() -> None:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer here: the pump reads its end and stops
        pump.join(timeout=5)

    _filter_done = done
    atexit.register(end_filter)


def end_filter() -> None:
    """Flush and stop the fd 2 filter (before ``os._exit``, which skips ``atexit``)."""
    global _filter_done
    done, _filter_done = _filter_done, None
    if done is not None:
        done()


def verbose() -> bool:
    """``PIPELINE_VERBOSE=1``: the libraries' own output, untouched."""
    return os.environ.get("PIPELINE_VERBOSE", "") not in ("", "0")


def quiet() -> None:
    """Quiet the libraries of this process (module docstring); nothing when verbose."""
    if verbose():
        return
    os.environ.update(QUIET_ENV)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    filter_stderr()


_LABEL = _stage_label()  # read /proc/self/cmdline once
if _LABEL:
    quiet()
if _LABEL and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
    signal.signal(signal.SIGTERM, _terminated_during_imports)
