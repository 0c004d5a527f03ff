"""The thin ``main()`` every stage shares: load params, check the name, run, report.

Expected failures (bad params, missing or malformed inputs, failed expectations) print one
line naming the stage and the problem (a failed validation adds one line per expectation)
and exit 1 without a traceback; anything else is a bug and raises.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from pipeline.core import params as params_mod


class StageError(RuntimeError):
    """A stage refuses its input; the message says what is wrong and where."""


# ParamsError and IdxError are ValueErrors; FetchError is a RuntimeError.
EXPECTED = (StageError, FileNotFoundError, ValueError, RuntimeError)


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
    try:
        params = params_mod.load()
        if section:
            known = getattr(params, section)
            if argv[0] not in known:
                raise params_mod.ParamsError(
                    f"{section}.{argv[0]}: not defined (known: {', '.join(known)})"
                )
            summary = body(params, argv[0])
        else:
            summary = body(params)
    except EXPECTED as exc:
        print(f"{label}: error: {exc}", file=sys.stderr)
        return 1
    print(f"{label}: {summary}")
    return 0
