"""Atomic outputs: a reader sees the previous complete file or folder, or the new one, never
half of one, whatever happens to the writer.

- ``atomic_open(path)`` / ``atomic_write(path, data)``: a file written through a hidden
  temporary file beside it, fsynced, then renamed over ``path``.
- ``atomic_dir(path)``: a folder built in a hidden temporary folder beside it, then swapped
  into place; on any exception (Ctrl-C included) the temporary folder is removed and the
  previous folder is untouched.

Temporary names start with ``.<name>.`` and end with ``.tmp`` so that ``stale_temps`` can
find what a killed process left behind. ``file_digest`` is the one way files are hashed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: Path) -> Iterator[BinaryIO]:
    """Write through a temporary file beside ``path``; on success fsync and rename it over
    ``path``, on any exception delete it, so ``path`` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def atomic_save(path: Path, save: Callable[[Path], object]) -> None:
    """Call ``save(tmp_path)`` (a writer that wants a path, e.g. ``np.savez``) on a temporary
    file with the same suffix beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        save(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block ends without an
    exception it replaces ``path`` (the previous folder is removed only then)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX))
    tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes it private; outputs are for everyone
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old{TMP_SUFFIX}")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stale_temps(path: Path) -> list[Path]:
    """The temporary files and folders that atomic writes of ``path`` may have left."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.glob(f".{path.name}.*") if p.name.endswith(TMP_SUFFIX))


def remove_stale_temps(paths: list[Path]) -> list[Path]:
    """Delete what atomic writes of ``paths`` left behind when their writer was killed
    (SIGKILL, power loss: no ``except`` block ran). Called at the start of a stage, before
    it writes, so that hidden partial files do not pile up, flip ``dvc status`` or show as
    untracked in git. Returns what was removed."""
    removed = []
    for path in paths:
        for tmp in stale_temps(path):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


class BadModelFile(ValueError):
    """A model file that is missing, truncated, corrupt or not in the project's pickle-free
    format; the message names the file and what is wrong with it."""


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (md5: the hash DVC records)."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with Path(path).open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
