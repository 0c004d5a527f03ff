"""Put back the outputs DVC removed before a stage that then failed.

``dvc repro`` deletes a stage's outs before it runs the command (``Stage.run`` calls
``remove_outs`` unless an out is ``persist``), so a train stage that fails halfway (tracking
server gone, SIGTERM, bad input) would leave no ``models/<m>`` at all, although the stages
write their outputs atomically. ``persist: true`` would keep them, but DVC then neither
removes nor restores them from the run cache (measured for #14). Instead, a failing stage
run by DVC (``DVC_STAGE`` set) copies each removed out back from DVC's cache as ``dvc.lock``
records it: the previous complete output, byte for byte, as ``dvc checkout`` would.

Only outs that are missing are restored, into a hidden temporary beside them renamed into
place, so a kill during the restore leaves debris that the next run removes, never a
half-restored output. Outputs DVC does not cache (``cache: false``: metrics/*.json, kept
in git) come back from git HEAD when their md5 is the recorded one; evaluate@ also copies
its metrics file into DVC's cache when git HEAD lacks it (:func:`keep_in_cache`), so an
uncommitted one comes back too. An output found in neither (``dvc gc``) is named in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from pipeline.core.io import atomic_dir, atomic_save, atomic_write

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 8x faster on dvc.lock
_parsed: dict[tuple, dict] = {}


def lock_stages(root: Path) -> dict:
    """The ``stages`` of ``<root>/dvc.lock`` ({} when there is none), parsed once per
    version of the file: train@ and evaluate@ read it four times each (git status, dataset
    hash, source label, outs), and the pure-Python parser took 0.25 s a read on the tiny
    profile's 42 kB lock file. Read it, never change it. Raises yaml.YAMLError."""
    lock = root / "dvc.lock"
    try:
        st = lock.stat()
    except FileNotFoundError:
        return {}
    key = (str(lock.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _parsed:
        _parsed.clear()
        _parsed[key] = (yaml.load(lock.read_bytes(), Loader=_Loader) or {}).get("stages") or {}
    return _parsed[key]


def locked_outs(root: Path, stage: str) -> list[dict]:
    """The outs ``dvc.lock`` records for ``stage`` (its address, e.g. ``train@dense_mlp``)."""
    stages = lock_stages(root)
    entry = stages.get(stage.split(":", 1)[-1]) or {}
    return [o for o in entry.get("outs", []) if o.get("md5") and o.get("path")]


def cache_files(root: Path) -> Path:
    """DVC's local cache of md5-addressed files (``.dvc/cache/files/md5`` by default; an
    experiment's temporary copy points at its origin's)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return Path(repo.cache.local.path)


def _from_git(root: Path, rel: str, md5: str) -> bytes | None:
    """The bytes of ``rel`` at git HEAD when their md5 is the one dvc.lock records."""
    proc = subprocess.run(
        ["git", "-C", str(root), "show", f"HEAD:{rel}"], capture_output=True, check=False
    )
    if proc.returncode != 0:
        return None
    return (
        proc.stdout if hashlib.md5(proc.stdout, usedforsecurity=False).hexdigest() == md5 else None
    )


def _cached(cache: Path, md5: str) -> Path:
    return cache / md5[:2] / md5[2:]


def restore(root: Path, out: dict, cache: Path) -> str:
    """Copy one out back from the cache; a line saying what happened."""
    path = root / out["path"]
    md5 = out["md5"]
    obj = _cached(cache, md5)
    if not obj.is_file():
        committed = None if md5.endswith(".dir") else _from_git(root, out["path"], md5)
        if committed is not None:  # a `cache: false` output kept in git (metrics/*.json)
            atomic_write(path, committed)
            return f"{out['path']}: restored from git (HEAD)"
        return f"{out['path']}: not restored, neither DVC's cache nor git HEAD has it ({md5})"
    if not md5.endswith(".dir"):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(path, lambda tmp: shutil.copyfile(obj, tmp))
        return f"{out['path']}: restored from DVC's cache"
    entries = json.loads(obj.read_text())
    missing = [e["relpath"] for e in entries if not _cached(cache, e["md5"]).is_file()]
    if missing:
        return f"{out['path']}: {len(missing)} file(s) missing from DVC's cache; not restored"
    with atomic_dir(path) as tmp:
        for entry in entries:
            dest = tmp / entry["relpath"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_cached(cache, entry["md5"]), dest)
    return f"{out['path']}: restored from DVC's cache ({len(entries)} files)"


def keep_in_cache(paths: list[Path]) -> list[Path]:
    """Copy each file of ``paths`` into DVC's cache under its md5 (read-only, as DVC stores
    files) unless git HEAD holds these very bytes: outputs with ``cache: false``
    (metrics/*.json) that were never committed can then be put back by :func:`restore`.
    The copies made or found in the cache."""
    root = Path(os.environ.get("DVC_ROOT") or ".")
    cache = None
    kept = []
    for path in paths:
        if not Path(path).is_file():
            continue
        data = Path(path).read_bytes()
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        rel = Path(path).resolve().relative_to(root.resolve()).as_posix()
        if _from_git(root, rel, md5) is not None:
            continue
        cache = cache or cache_files(root)
        obj = _cached(cache, md5)
        if not obj.is_file():
            obj.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(obj, data)
            obj.chmod(0o444)
        kept.append(obj)
    return kept


def restore_removed_outs() -> list[str]:
    """In a stage DVC runs: bring back each out of the stage that is missing; one line an
    out. Outside DVC (no ``DVC_STAGE``) the stages' atomic writes already kept the outputs."""
    stage, root = os.environ.get("DVC_STAGE"), os.environ.get("DVC_ROOT")
    if not stage or not root:
        return []
    root_path = Path(root)
    outs = [o for o in locked_outs(root_path, stage) if not (root_path / o["path"]).exists()]
    if not outs:
        return []
    cache = cache_files(root_path)
    return [restore(root_path, out, cache) for out in outs]
