"""Where a run's inputs came from: git commit and dirty flag, the DVC hash of the prepared
dataset, the ``dvc repro`` invocation, and the tags that record them on a run."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import yaml

from pipeline.core import config, numenv
from pipeline.core.dvc_outs import lock_stages
from pipeline.tracking.orphans import boot_id, proc_parent, proc_start


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit(root: Path = config.ROOT) -> str | None:
    """The commit checked out at ``root``; None outside git."""
    return _git(root, "rev-parse", "HEAD")


def git_status(root: Path = config.ROOT) -> str | None:
    """``git status --porcelain`` of tracked files, without DVC's own outputs: dvc.lock, the
    outs it lists and the .gitignore files DVC writes beside them change during every
    `dvc repro` and do not make the tree dirty. None outside git."""
    excluded = {"dvc.lock"}
    try:
        stages = lock_stages(root)
    except yaml.YAMLError:
        stages = {}
    for stage in stages.values():
        for out in stage.get("outs", []) or []:
            path = Path(str(out.get("path", "")))
            if str(path) not in ("", "."):
                excluded |= {str(path), str(path.parent / ".gitignore")}
    specs = [f":(exclude,top){p}" for p in sorted(excluded)]
    return _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *specs)


def repro_id() -> str | None:
    """An id shared by all stages of one ``dvc repro``: the DVC process that runs them.

    DVC starts each stage as ``dvc -> shell -> python``; the id hashes the pid and start
    time of the nearest ancestor whose command line runs dvc. ``PIPELINE_REPRO_ID`` wins.
    """
    if os.environ.get("PIPELINE_REPRO_ID"):
        return os.environ["PIPELINE_REPRO_ID"]
    pid = os.getppid()
    for _ in range(4):
        found = proc_parent(pid)
        if found is None:
            return None
        ppid, cmd = found
        if any(Path(c.decode(errors="replace")).name == "dvc" for c in cmd[:2]):
            token = f"{boot_id()}:{pid}:{proc_start(pid)}"
            return hashlib.sha1(token.encode()).hexdigest()[:12]
        pid = ppid
    return None


def dataset_hash(dataset: str, root: Path = config.ROOT) -> str | None:
    """The md5 DVC recorded for data/prepared/<dataset> in dvc.lock, if any."""
    for out in lock_stages(root).get(f"prepare@{dataset}", {}).get("outs", []):
        return out.get("md5")
    return None


def file_md5(path: Path) -> str:
    """md5 of a file's bytes: the hash DVC records for it (DVC 3 does no newline magic)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_tags(
    name: str, family: str | None = None, dataset: str | None = None, root: Path = config.ROOT
) -> dict[str, str]:
    """The tags of a new run: git commit and dirty flag, DVC stage, DVC experiment name and
    ``repro_id``. A model's run (``family`` and ``dataset`` given, ``name`` its preset) adds
    ``preset``, ``family``, ``dataset``, the dataset's DVC hash and the numeric environment
    (``env.*``, pipeline/core/numenv.py); any other run (plot's cross-model run) adds
    ``run_kind`` = ``name``. The run is named ``name``."""
    if (family is None) != (dataset is None):
        raise TypeError("run_tags: give both family and dataset (a model's run) or neither")
    status = git_status(root)
    if family is not None and dataset is not None:
        tags = {"preset": name, "family": family, "dataset": dataset}
        tags |= numenv.as_tags(numenv.probe())
    else:
        tags = {"run_kind": name}
    tags |= {
        "mlflow.source.git.commit": git_commit(root) or "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
        "dvc_stage": os.environ.get("DVC_STAGE", ""),
        "mlflow.runName": name,
    }
    optional = {
        "dataset_dvc_md5": dataset_hash(dataset, root) if dataset is not None else None,
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
        "repro_id": repro_id(),
    }
    tags |= {key: value for key, value in optional.items() if value}
    return tags
