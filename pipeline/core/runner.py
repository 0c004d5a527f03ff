"""The thin ``main()`` every stage shares: load params, check the name, run, report.

Expected failures (bad params, missing or malformed inputs, failed expectations) print one
line naming the stage and the problem (a failed validation adds one line per expectation)
and exit 1 without a traceback; anything else is a bug and raises.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.core.io import remove_stale_temps
from pipeline.core.procfs import proc_start


class StageError(RuntimeError):
    """A stage refuses its input; the message says what is wrong and where."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``kill`` and DVC send), handled like Ctrl-C: the ``except`` and
    ``finally`` blocks run, so temporary outputs are removed and the MLflow run ends
    KILLED."""


# ParamsError, IdxError and BadModelFile are ValueErrors; FetchError is a RuntimeError.
EXPECTED = (StageError, FileNotFoundError, ValueError, RuntimeError)


def outputs(stage: str, params: params_mod.Params, name: str | None) -> list[Path]:
    """The paths a stage writes atomically (their stale temporaries are its to remove)."""
    if stage == "check_params":
        return [config.params_check_file()]
    if stage == "fetch":
        raw = config.raw_dir(params.data.source)
        return [raw, *(raw / f for f in config.RAW_FILES)]
    if stage == "validate":
        return [config.validation_dir()]
    if stage == "prepare" and name:
        return [config.prepared_dir(name)]
    if stage == "train" and name:
        return [config.model_dir(name)]
    if stage == "evaluate" and name:
        metrics = config.metrics_file(name)
        return [config.plots_dir(name), metrics, metrics.with_name(f"{name}.env.json")]
    if stage == "plot":
        return [config.compare_plots_dir()]
    return []


def all_outputs(params: params_mod.Params) -> list[Path]:
    """The outputs of every stage of the pipeline (each foreach stage's every name)."""
    paths = [*outputs("check_params", params, None), *outputs("fetch", params, None)]
    paths += outputs("validate", params, None) + outputs("plot", params, None)
    paths += [p for ds in params.datasets for p in outputs("prepare", params, ds)]
    for model in params.models:
        paths += outputs("train", params, model) + outputs("evaluate", params, model)
    return paths


def under_dvc() -> bool:
    """Run by ``dvc repro`` in this checkout: DVC holds the repository's lock, so no other
    stage of this checkout runs now."""
    root = os.environ.get("DVC_ROOT")
    return bool(os.environ.get("DVC_STAGE") and root and Path(root).resolve() == config.ROOT)


def clean_up(stage: str, params: params_mod.Params, name: str | None) -> None:
    """Remove what a killed earlier run left: hidden temporary files and folders beside
    this stage's outputs, and under ``dvc repro`` beside every stage's (a killed stage that
    DVC later restored from its run cache never runs again to remove its own); one log
    line. Stale MLflow runs of any preset are closed by the tracking runs (orphans.py)."""
    removed = remove_stale_temps(
        all_outputs(params) if under_dvc() else outputs(stage, params, name)
    )
    if removed:
        shown = ", ".join(str(p.relative_to(config.ROOT)) for p in removed[:3])
        more = f" and {len(removed) - 3} more" if len(removed) > 3 else ""
        logging.getLogger(__name__).warning(
            "removed %d temporary file(s)/folder(s) left by a killed run: %s%s",
            len(removed),
            shown,
            more,
        )


def mark_running(label: str) -> Path | None:
    """Create this process's marker in reports/running/ (``<label>.<pid>``, holding its
    start time); the caller removes it on any exit a handler sees. Only SIGKILL or a power
    loss leaves it, and check_params (which depends on the folder) then runs again."""
    folder = config.running_dir()
    if not folder.is_dir():  # an old checkout without the folder: no marker
        return None
    marker = folder / f"{label}.{os.getpid()}"
    try:
        marker.write_text(f"{proc_start(os.getpid()) or ''}\n")
    except OSError:  # best effort: a stage never fails for its marker
        return None
    return marker


def stale_markers() -> list[Path]:
    """Markers in reports/running/ whose process is gone (no such pid, or a new process
    with the same pid)."""
    folder = config.running_dir()
    stale = []
    for marker in sorted(folder.glob("*.*")) if folder.is_dir() else []:
        pid = marker.name.rsplit(".", 1)[1]
        if not pid.isdigit() or marker.name == ".gitignore":
            continue
        try:
            started = marker.read_text().strip()
        except OSError:
            continue
        now = proc_start(int(pid))
        if now is None or (started and now != started):
            stale.append(marker)
    return stale


def _restore_outs(label: str) -> None:
    """After a failure under ``dvc repro``: DVC removed the stage's outs before running it;
    put the previous ones back from its cache (pipeline/core/dvc_outs.py), one line each.
    A failure here is reported and never hides the stage's own error."""
    try:
        from pipeline.core.dvc_outs import restore_removed_outs

        lines = restore_removed_outs()
    except Exception as exc:  # the stage's own error is the one that matters
        lines = [f"previous outputs not restored ({type(exc).__name__}: {exc})"]
    for line in lines:
        print(f"{label}: {line}", file=sys.stderr)


def _terminate(signum, frame) -> None:
    raise Terminated()


def run_stage(
    stage: str,
    body: Callable[..., str],
    argv: list[str] | None = None,
    section: str | None = None,
) -> int:
    """Run ``body(params)`` or, for foreach stages, ``body(params, name)`` with the name
    checked against ``params.<section>``; print its one-line summary."""
    argv = sys.argv[1:] if argv is None else argv
    expected_args = 1 if section else 0
    if len(argv) != expected_args:
        usage = f" <{section[:-1]}>" if section else ""
        print(f"usage: python -m pipeline.stages.{stage}{usage}", file=sys.stderr)
        return 2
    label = f"{stage}@{argv[0]}" if section else stage
    logging.basicConfig(level=logging.INFO, format=f"{label}: %(message)s", stream=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _terminate)
    marker = None if stage == "check_params" else mark_running(label)
    try:
        params = params_mod.load()
        if section:
            known = getattr(params, section)
            if argv[0] not in known:
                raise params_mod.ParamsError(
                    f"{section}.{argv[0]}: not defined (known: {', '.join(known)})"
                )
            clean_up(stage, params, argv[0])
            summary = body(params, argv[0])
        else:
            clean_up(stage, params, None)
            summary = body(params)
    except EXPECTED as exc:
        print(f"{label}: error: {exc}", file=sys.stderr)
        _restore_outs(label)
        return 1
    except OSError as exc:  # a full disk is the user's to fix, not a bug: one line
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            _restore_outs(label)
            raise
        where = exc.filename2 or exc.filename or "an output"
        print(f"{label}: error: no space left on the device of {where}", file=sys.stderr)
        _restore_outs(label)
        return 1
    except KeyboardInterrupt as exc:
        how = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        print(f"{label}: interrupted ({how}); previous outputs kept", file=sys.stderr)
        _restore_outs(label)
        return 143 if isinstance(exc, Terminated) else 130
    except BaseException:
        _restore_outs(label)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if marker is not None:
            marker.unlink(missing_ok=True)
    if stage == "evaluate" and under_dvc():
        _keep_in_cache(outputs(stage, params, argv[0])[1:])  # the metrics files
    print(f"{label}: {summary}")
    return 0


def _keep_in_cache(paths: list[Path]) -> None:
    """A copy of each of ``paths`` (``cache: false`` in dvc.yaml, so DVC keeps none) in
    DVC's cache by its md5 unless git HEAD has it, where a failed later run finds it to put
    back (dvc_outs.restore). Best effort: a failure here fails nothing."""
    try:
        from pipeline.core.dvc_outs import keep_in_cache

        keep_in_cache(paths)
    except Exception as exc:
        logging.getLogger(__name__).warning("metrics: no copy kept in DVC's cache (%s)", exc)
