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
from pipeline.core.io import file_digest
from pipeline.core.params import flatten
from pipeline.core.procfs import boot_id, proc_parent, proc_start


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
    return file_digest(path, "md5")


def changed_params(root: Path = config.ROOT) -> dict[str, object]:
    """The params.yaml keys (dotted) whose value differs from the committed params.yaml
    (``git show HEAD:params.yaml``), with the working value (None: removed); {} when either
    cannot be read."""
    committed = _git(root, "show", "HEAD:params.yaml")
    try:
        now = yaml.safe_load((root / "params.yaml").read_text())
        base = yaml.safe_load(committed) if committed is not None else None
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(now, dict) or not isinstance(base, dict):
        return {}
    new, old = flatten(now, lists=False), flatten(base, lists=False)
    return {k: new.get(k) for k in sorted(new.keys() | old.keys()) if new.get(k) != old.get(k)}


def _changes_text(preset: str, changes: dict[str, object], limit: int = 3) -> str:
    """``learning_rate=0.05 epochs=3``: the changes that concern ``preset`` (its own
    ``models.<preset>.`` keys and any key outside ``models.``), by their last key."""
    own = f"models.{preset}."
    keys = [k for k in changes if k.startswith(own) or not k.startswith("models.")]
    words = [f"{k.rsplit('.', 1)[-1]}={changes[k]}" for k in keys[:limit]]
    if len(keys) > limit:
        words.append(f"+{len(keys) - limit}")
    return " ".join(words)


def run_label(name: str, model: bool = True, root: Path = config.ROOT) -> str:
    """The run's name in MLflow, saying what changed: ``<preset> <param>=<value> · <exp>``
    under ``dvc exp run`` (DVC_EXP_NAME; the params that differ from the commit), ``<name> ·
    <repro_id[:7]>`` under a plain ``dvc repro``, else ``name``."""
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        changes = _changes_text(name, changed_params(root)) if model else ""
        return f"{name} {changes} · {exp}" if changes else f"{name} · {exp}"
    rid = repro_id()
    return f"{name} · {rid[:7]}" if rid else name


def run_tags(
    name: str, family: str | None = None, dataset: str | None = None, root: Path = config.ROOT
) -> dict[str, str]:
    """The tags of a new run: git commit and dirty flag, DVC stage, DVC experiment name and
    ``repro_id``. A model's run (``family`` and ``dataset`` given, ``name`` its preset) adds
    ``preset``, ``family``, ``dataset`` and the dataset's DVC hash; any other run (plot's
    cross-model run, a sweep) adds ``run_kind`` = ``name``. Every run carries the numeric
    environment (``env.*``, pipeline/core/numenv.py). The run is named by :func:`run_label`."""
    if (family is None) != (dataset is None):
        raise TypeError("run_tags: give both family and dataset (a model's run) or neither")
    status = git_status(root)
    if family is not None and dataset is not None:
        tags = {"preset": name, "family": family, "dataset": dataset}
    else:
        tags = {"run_kind": name}
    tags |= numenv.as_tags(numenv.probe())
    tags |= {
        "mlflow.source.git.commit": git_commit(root) or "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
        "dvc_stage": os.environ.get("DVC_STAGE", ""),
        "mlflow.runName": run_label(name, model=family is not None, root=root),
    }
    optional = {
        "dataset_dvc_md5": dataset_hash(dataset, root) if dataset is not None else None,
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
        "repro_id": repro_id(),
    }
    tags |= {key: value for key, value in optional.items() if value}
    return tags
