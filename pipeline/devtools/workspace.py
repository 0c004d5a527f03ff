"""Copies of the project for isolated runs (the end-to-end test, ``make verify-repro``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.core import config

GIT_ID = ["-c", "user.name=pipeline", "-c", "user.email=pipeline@localhost"]


def source_files(src: Path = config.ROOT) -> list[str]:
    """The project's files as git sees them: tracked and untracked, not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=src,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [rel for rel in out.split("\0") if rel and (src / rel).is_file()]


def copy_project(dest: Path, src: Path = config.ROOT) -> Path:
    """Copy the source files to ``dest`` and commit them in a new git repository there; its
    ``.venv`` is a link to the running interpreter's environment (stages run bin/python)."""
    for rel in source_files(src):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dest / rel)
    venv = dest / ".venv"
    if not venv.exists() and sys.prefix != sys.base_prefix:
        venv.symlink_to(Path(sys.prefix).resolve(), target_is_directory=True)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", *GIT_ID, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def commit_all(dest: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", *GIT_ID, "commit", "-qm", message], cwd=dest, check=True)
