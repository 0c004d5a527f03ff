"""Shared fixtures: small synthetic IDX data, and the tiny project built once per session
(the helpers they use are in tests/helpers.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, make_digits, run_experiment, write_raw

__all__ = ["REPO"]  # some test files still import it from here; tests/helpers.py has it


@pytest.fixture
def synthetic_raw(tmp_path) -> Path:
    """data/raw-like folder: 60 train and 12 test images per digit."""
    return write_raw(tmp_path / "raw", make_digits(60, seed=1), make_digits(12, seed=2))


# --------------------------------------------------------------------------- tiny project
# One real `dvc repro` of the whole pipeline on the tiny profile, in a copy of the project,
# built once per test session and shared by the pytest-xdist workers. It takes minutes, so it
# runs in the background: as soon as a worker has collected tests that need it, the first
# such worker starts the build (under a file lock) and the test files that do not need it
# are run first; `tiny_built` waits for the build. Tests that change things work on their
# own copy.


def _shared_dir(config: pytest.Config) -> Path:
    """This session's own temp folder, common to its xdist workers (each has base/../gwN)."""
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


_BUILD = (
    "import sys; from pathlib import Path; from tests.helpers import build_tiny; "
    "build_tiny(Path(sys.argv[1]))"
)
_builder: subprocess.Popen | None = None  # the build this process started, if any


def _start_tiny_build(shared: Path) -> None:
    """Start the tiny build in the background unless it is built or being built."""
    global _builder
    from filelock import FileLock

    dest = shared / "tiny-built"
    with FileLock(str(shared / "tiny-built.lock")):
        if (shared / "tiny-built.rc").exists() or (shared / "tiny-built.pid").exists():
            return
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        rc = shared / "tiny-built.rc"
        wrapper = '"$0" -c "$1" "$2"; echo $? > "$3"'  # the exit code, once it is known
        with (shared / "tiny-built.log").open("w") as log:  # the child keeps its own copy
            _builder = subprocess.Popen(
                ["bash", "-c", wrapper, sys.executable, _BUILD, str(dest), str(rc)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one
            )
        (shared / "tiny-built.pid").write_text(str(_builder.pid))


def _needs_tiny(item: pytest.Item) -> bool:
    return "tiny_built" in getattr(item, "fixturenames", ())


def _rel(item: pytest.Item) -> str:
    """The item's file relative to tests/ (names repeat across folders: test_loading.py)."""
    return item.path.relative_to(Path(__file__).parent).as_posix()


# Files that need the tiny project, longest first (measured with --durations), so that the
# last file a worker takes is a short one.
_TINY_ORDER = (
    "integration/test_e2e_dvc.py",
    "integration/test_workflow.py",
    "integration/test_remote.py",
    "integration/test_sweep_apply.py",
    "integration/test_stage_failures.py",
    "integration/test_load_faults.py",
    "integration/test_compare.py",
    "integration/test_loading.py",
    "integration/test_plots_page.py",
)
# Long files that do not need it, longest first: before everything else, beside the build
# (the server tests build a one-model project of their own; the sweeps start Ray).
_FIRST = (
    "integration/test_server.py",
    "integration/test_sweep.py",
    "integration/test_ui.py",
    "integration/test_predict.py",
    "integration/test_serve.py",
)


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: only the tests that run
def pytest_collection_modifyitems(session: pytest.Session, config, items) -> None:
    """Start the tiny build when a collected test needs it, and run the test files that do
    not need it first, the longest of them first of all (with --dist loadfile and
    --no-loadscope-reorder, xdist hands out files in this order). A test that needs the
    tiny project and is not marked slow is an error: `make test-fast` never builds it."""
    unmarked = [i.nodeid for i in items if _needs_tiny(i) and not i.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError(f"needs the tiny project but is not marked slow: {unmarked}")
    tiny_files = {_rel(item) for item in items if _needs_tiny(item)}
    if not tiny_files:
        return
    if not config.option.collectonly:  # --collect-only runs nothing: no build to wait for
        _start_tiny_build(_shared_dir(config))

    def rank(item: pytest.Item) -> tuple[int, int]:
        rel = _rel(item)
        if rel not in tiny_files:
            return (0, _FIRST.index(rel)) if rel in _FIRST else (1, 0)
        return (2, _TINY_ORDER.index(rel) if rel in _TINY_ORDER else len(_TINY_ORDER))

    items.sort(key=rank)  # stable: the order inside a file is kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A build this process started ends with the session: waited for when other workers
    may still need it, stopped (its whole process group) when the session was interrupted."""
    if _builder is None or _builder.poll() is not None:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        os.killpg(_builder.pid, signal.SIGTERM)
    try:
        _builder.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(_builder.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def tiny_built(request: pytest.FixtureRequest) -> Path:
    """The shared tiny project, after its `dvc repro`: read it, never change it."""
    shared = _shared_dir(request.config)
    _start_tiny_build(shared)  # no-op when collection started it
    rc_file, deadline = shared / "tiny-built.rc", time.monotonic() + 1800
    while not rc_file.exists() or not rc_file.read_text().strip():
        if time.monotonic() > deadline:
            raise AssertionError(f"the tiny build did not finish in 30 minutes: {shared}")
        time.sleep(1)
    if rc_file.read_text().strip() != "0":
        log = (shared / "tiny-built.log").read_text()
        code = rc_file.read_text().strip()
        raise AssertionError(f"the tiny build failed (exit {code}):\n{log[-4000:]}")
    return shared / "tiny-built"


@pytest.fixture(scope="session")
def tiny_experiment(tiny_built: Path, request: pytest.FixtureRequest) -> Path:
    """The tiny project after one `dvc exp run` (helpers.run_experiment), made once per
    session by the first worker that needs it: read it, never change it."""
    from filelock import FileLock

    shared = _shared_dir(request.config)
    dest = shared / "tiny-experiment"
    with FileLock(str(shared / "tiny-experiment.lock")):
        if not (dest / ".exp.log").is_file():
            shutil.rmtree(dest, ignore_errors=True)
            run_experiment(tiny_built, dest)
    return dest
