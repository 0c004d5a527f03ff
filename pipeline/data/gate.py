"""The validation gate between the raw files and everything that reads them.

validate records the sha256 of each raw file it checked in reports/validation/summary.json,
beside its verdict; ``require_passed`` (called by prepare before it reads a byte of raw
data) refuses unless that summary says that exactly these files passed. A stale report
cannot vouch for new files, and ``dvc repro -s prepare@<ds>`` or running the stage module
by hand cannot skip a failed validation.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core import config
from pipeline.data.sources import sha256_file


class NotValidated(ValueError):
    """The raw files have not passed validation; the message says why."""


def raw_hashes(raw_dir: Path) -> dict[str, str]:
    """{file name: sha256} of the four raw files (missing ones are left out)."""
    return {n: sha256_file(raw_dir / n) for n in config.RAW_FILES if (raw_dir / n).is_file()}


def require_passed(raw_dir: Path, summary_path: Path) -> dict[str, str]:
    """The raw files' hashes, once ``summary_path`` says these very files passed."""
    rerun = "run `dvc repro validate` (or python -m pipeline.stages.validate)"
    if not summary_path.is_file():
        raise NotValidated(f"{summary_path}: missing; the raw data was never validated: {rerun}")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as exc:
        raise NotValidated(f"{summary_path}: unreadable ({exc}): {rerun}") from None
    if summary.get("success") is not True:
        failed = (summary.get("expectations") or {}).get("failed", "?")
        raise NotValidated(
            f"{summary_path}: validation of {raw_dir} failed ({failed} expectation(s)); "
            "fix the data and rerun validate before preparing it"
        )
    vouched = summary.get("raw_sha256") or {}
    hashes = raw_hashes(raw_dir)
    for name in config.RAW_FILES:
        if name not in hashes:
            raise FileNotFoundError(f"{raw_dir / name}: missing; run `dvc repro fetch`")
        if vouched.get(name) != hashes[name]:
            raise NotValidated(
                f"{raw_dir / name}: not the file validation checked (sha256 differs from "
                f"{summary_path}): {rerun}"
            )
    return hashes
