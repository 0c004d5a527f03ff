"""Helpers shared by the test files (fixtures and the tiny build live in conftest.py)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFont

from pipeline.core import config
from pipeline.data.idx import encode_idx

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- shells

PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"  # what a shell that activated nothing has


def plain_env(**extra: str) -> dict[str, str]:
    """The environment of a user's plain shell: no venv on PATH, no MLflow/DVC/pipeline vars."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PIPELINE_", "DVC_", "VIRTUAL_ENV"))
    }
    env["PATH"] = PLAIN_PATH
    env["GX_ANALYTICS_ENABLED"] = "False"
    env["PYTHONHASHSEED"] = "0"
    return env | extra


def sh(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd``; with ``check``, a non-zero exit fails with the ends of its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}"
            f"\n{proc.stderr[-4000:]}"
        )
    return proc


def run_queue(dvc: str, root: Path, env: dict, jobs: int = 2, timeout: float = 1200) -> str:
    """``dvc queue start -j jobs`` as a user runs it, then ``dvc queue status`` until nothing
    is running or queued; the last status. The workers are daemons that inherit the start
    command's stdout and stderr, so those go to a file (a pipe would stay open while a worker
    lives). A worker still alive at the end is stopped by the pid DVC wrote for it: dvc-task's
    worker can miss the shutdown its own monitor sends once the queue is empty ("monitor:
    shutting down due to empty queue", then nothing; seen with -j 2 on a loaded machine) and
    wait for tasks for ever."""
    import signal
    import time

    from pipeline.server.procs import alive

    log = root / ".dvc" / "tmp" / "queue-start.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        cmd = [dvc, "queue", "start", "-j", str(jobs)]
        start = subprocess.run(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=120
        )
    assert start.returncode == 0, f"dvc queue start failed:\n{log.read_text()[-3000:]}"
    status, deadline = "", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            status = sh([dvc, "queue", "status"], root, env).stdout
            if "Running" not in status and "Queued" not in status:
                break
            time.sleep(1)
    finally:
        for pid_file in (root / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.pid"):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            for sig, wait in ((0, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                if sig:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        break
                end = time.monotonic() + wait  # an idle worker exits on its own first
                while alive(pid) and time.monotonic() < end:
                    time.sleep(0.2)
                if not alive(pid):
                    break
    return status


def stages_run(output: str) -> set[str]:
    """The stages a `dvc repro` or `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (free when this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``git args`` in ``root`` with a test identity; fails on a non-zero exit."""
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    return subprocess.run(["git", *ident, *args], cwd=root, check=True, capture_output=True)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


# --------------------------------------------------------------------------- MLflow store

_EMPTY_STORE: Path | None = None  # this process's template: MLflow's schema, nothing logged


def empty_store(folder: Path) -> Path:
    """``folder``/mlflow.db as MLflow creates it on first use (its schema and the Default
    experiment, whose artifacts go to ``<cwd>/mlruns/0``), copied from a store this process
    made once: MLflow's migrations take over a second of CPU per new store. For tests that
    need a store, not tests of how one is created."""
    import sqlite3
    import tempfile
    import time

    global _EMPTY_STORE
    if _EMPTY_STORE is None:
        import mlflow

        made = Path(tempfile.mkdtemp(prefix="mlflow-empty-")) / "mlflow.db"
        mlflow.MlflowClient(f"sqlite:///{made}").search_experiments()  # runs the migrations
        _EMPTY_STORE = made
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    shutil.copyfile(_EMPTY_STORE, db)
    now = int(time.time() * 1000)
    con = sqlite3.connect(db)
    try:
        con.execute(
            "UPDATE experiments SET artifact_location = ?, creation_time = ?, "
            "last_update_time = ? WHERE experiment_id = 0",
            (str(Path.cwd() / "mlruns" / "0"), now, now),
        )
        con.commit()
    finally:
        con.close()
    return db


# --------------------------------------------------------------------------- params


_SMALL_CNN = [
    {"type": "conv", "filters": 32, "kernel": 3},
    {"type": "pool", "size": 2},
    {"type": "conv", "filters": 64, "kernel": 3},
    {"type": "pool", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 128},
    {"type": "dropout", "rate": 0.2},
    {"type": "dense", "units": 10, "activation": "softmax"},
]
_AUG = {"rotation": 10, "shift": 0.1}

# The project's params as the tests know them: every section and one preset of each kind
# (the presets params.yaml shipped when this was written), so that a test needing a preset
# does not depend on the live params.yaml, which users and profiles edit.
_SPEC = {
    "seed": 42,
    "data": {"source": "mnist", "idx_dir": None, "fetch": {"timeout": 30, "retries": 2}},
    "validate": {
        "rows": {"train": {"min": 60000, "max": 60000}, "test": {"min": 10000, "max": 10000}},
        "labels": list(range(10)),
        "pixel_min": 0,
        "pixel_max": 255,
        "class_share": {"min": 0.05, "max": 0.15},
        "min_nonzero_pixels": 1,
        "max_train_test_overlap": 0.001,
        "image_shape": [28, 28],
    },
    "datasets": {
        "digits10": {"classes": list(range(10)), "train_size": None, "val_fraction": 0.1},
        "digits025": {"classes": [0, 2, 5], "train_size": None, "val_fraction": 0.2},
    },
    "models": {
        "scratch_cnn": {
            "family": "scratch",
            "dataset": "digits10",
            "arch": [
                {"type": "conv", "filters": 16, "kernel": 3, "batch_norm": True},
                {"type": "conv", "filters": 32, "kernel": 3, "batch_norm": True},
                {"type": "pool", "size": 2},
                {"type": "flatten"},
                {"type": "dense", "units": 128, "batch_norm": True},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
            "train": {
                "epochs": 2,
                "batch_size": 32,
                "optimizer": "momentum",
                "learning_rate": 0.02,
                "momentum": 0.9,
                "lr_schedule": {"kind": "warmup_cosine", "warmup_epochs": 0.2},
            },
        },
        "scratch_dropout_cnn": {
            "family": "scratch",
            "dataset": "digits10",
            "arch": _SMALL_CNN,
            "train": {
                "epochs": 4,
                "batch_size": 32,
                "optimizer": "adam",
                "learning_rate": 0.002,
                "augment": _AUG,
                "lr_schedule": {"kind": "warmup_cosine", "warmup_epochs": 0.3},
            },
        },
        "keras_small_cnn": {
            "family": "keras",
            "dataset": "digits10",
            "arch": _SMALL_CNN,
            "train": {
                "epochs": 5,
                "batch_size": 128,
                "optimizer": "adam",
                "learning_rate": 0.003,
                "augment": _AUG,
                "lr_schedule": {"kind": "warmup_cosine", "warmup_epochs": 0.5},
            },
        },
        "keras_cnn": {
            "family": "keras",
            "dataset": "digits10",
            "arch": [
                *[
                    {
                        "type": "conv",
                        "filters": f,
                        "kernel": 3,
                        "batch_norm": True,
                        "activation_before_bn": True,
                    }
                    for f in (64, 64)
                ],
                {"type": "pool", "size": 2},
                {"type": "dropout", "rate": 0.25},
                *[
                    {
                        "type": "conv",
                        "filters": f,
                        "kernel": 3,
                        "batch_norm": True,
                        "activation_before_bn": True,
                    }
                    for f in (128, 128)
                ],
                {"type": "pool", "size": 2},
                {"type": "dropout", "rate": 0.25},
                {"type": "flatten"},
                {"type": "dense", "units": 512, "batch_norm": True, "activation_before_bn": True},
                {"type": "dropout", "rate": 0.5},
                {"type": "dense", "units": 256, "batch_norm": True, "activation_before_bn": True},
                {"type": "dropout", "rate": 0.5},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
            "train": {
                "epochs": 6,
                "batch_size": 128,
                "optimizer": "adam",
                "learning_rate": 0.003,
                "augment": _AUG,
                "lr_schedule": {"kind": "warmup_cosine", "warmup_epochs": 1},
                "early_stopping": {"patience": 3},
                "checkpoint": True,
            },
        },
        "custom_cnn": {
            "family": "custom",
            "dataset": "digits10",
            "arch": [
                {"type": "conv", "filters": 32, "kernel": 3, "batch_norm": True, "l2": 0.0001},
                {"type": "pool", "size": 2},
                {"type": "conv", "filters": 64, "kernel": 3, "batch_norm": True, "l2": 0.0001},
                {"type": "pool", "size": 2},
                {"type": "flatten"},
                {"type": "dense", "units": 128},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
            "train": {
                "epochs": 5,
                "batch_size": 128,
                "optimizer": "adam",
                "learning_rate": 0.003,
                "augment": _AUG,
                "lr_schedule": {"kind": "warmup_cosine", "warmup_epochs": 0.5},
                "early_stopping": {"patience": 3},
            },
        },
        "cubic_mlp": {
            "family": "custom",
            "dataset": "digits025",
            "arch": [
                {"type": "flatten"},
                {"type": "dense", "units": 150},
                {"type": "dense", "units": 100},
                {"type": "cubic", "units": 50},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ],
            "train": {"epochs": 20, "batch_size": 32, "optimizer": "sgd", "learning_rate": 0.01},
        },
        "dense_mlp": {
            "family": "keras",
            "dataset": "digits025",
            "arch": [
                {"type": "flatten"},
                {"type": "dense", "units": 100},
                {"type": "dense", "units": 50},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ],
            "train": {"epochs": 20, "batch_size": 32, "optimizer": "sgd", "learning_rate": 0.01},
        },
    },
    "mlflow": {"experiment": "mnist"},
    "plot": {"compare_curves": ["cubic_mlp", "dense_mlp"]},
}


def params_spec(*models: str, **sections) -> dict:
    """A fresh params tree (the dict a params.yaml holds), built here: with ``models``
    only those presets (and their datasets; plot.compare_curves keeps the ones left);
    ``sections`` replace top-level sections."""
    raw = copy.deepcopy(_SPEC)
    if models:
        raw["models"] = {m: raw["models"][m] for m in models}
        used = {spec["dataset"] for spec in raw["models"].values()}
        raw["datasets"] = {d: v for d, v in raw["datasets"].items() if d in used}
        curves = raw["plot"]["compare_curves"]
        raw["plot"]["compare_curves"] = [m for m in curves if m in raw["models"]]
    return raw | copy.deepcopy(sections)


def write_params(root: Path, raw: dict) -> Path:
    """``raw`` as ``root``/params.yaml."""
    path = config.params_path(root)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# --------------------------------------------------------------------------- data


def make_digits(n_per_class: int, seed: int, classes=range(10)) -> tuple[np.ndarray, np.ndarray]:
    """Digit-like uint8 images: a class-specific stroke pattern plus noise, labels shuffled."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in classes:
        base = np.zeros((28, 28), dtype=np.float32)
        base[4 + c : 24 - c // 2, 6 + (c % 5) * 3 : 10 + (c % 5) * 3] = 200
        base[10 + c % 4, 4:24] = 255
        noise = rng.integers(0, 40, size=(n_per_class, 28, 28))
        images.append(np.clip(base[None] + noise, 0, 255).astype(np.uint8))
        labels.append(np.full(n_per_class, c, dtype=np.uint8))
    x, y = np.concatenate(images), np.concatenate(labels)
    order = rng.permutation(len(y))
    return x[order], y[order]


def write_raw(folder: Path, train, test) -> Path:
    """The four IDX files of a data/raw/<source> folder, from (x, y) train and test pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (train[0], train[1], test[0], test[1])
    for name, arr in zip(config.RAW_FILES, arrays, strict=True):
        (folder / name).write_bytes(encode_idx(arr))
    return folder


# --------------------------------------------------------------------------- pictures


def glyph_mask(
    digit: int,
    size: tuple[int, int] = (200, 300),
    centre: tuple[float, float] = (0.5, 0.5),
    height: float = 0.6,
    stroke: int = 0,
    rotate: float = 0.0,
) -> Image.Image:
    """Mask (mode "L", 255 = ink) of ``digit`` drawn with Pillow's bundled font."""
    w, h = size
    mask = Image.new("L", size, 0)
    font = ImageFont.load_default(size=max(8, int(height * h)))
    xy = (centre[0] * w, centre[1] * h)
    ImageDraw.Draw(mask).text(
        xy, str(digit), fill=255, font=font, anchor="mm", stroke_width=stroke, stroke_fill=255
    )
    if rotate:
        mask = mask.rotate(rotate, resample=Image.Resampling.BICUBIC, center=xy)
    return mask


def paint(
    mask: Image.Image,
    *,
    ink=(0, 0, 0),
    paper=(255, 255, 255),
    mode: str = "RGB",
) -> Image.Image:
    """A picture of ``mask``: ink on paper (RGB, L or P), or ink on transparency (RGBA)."""
    if mode == "RGBA":
        img = Image.new("RGBA", mask.size, (*ink, 0))
        img.putalpha(mask)
        return img
    img = Image.composite(
        Image.new("RGB", mask.size, ink), Image.new("RGB", mask.size, paper), mask
    )
    if mode == "L":
        return img.convert("L")
    if mode == "P":
        return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return img


# ------------------------------------------------------------- a tiny trained scratch preset

DRAWN_CLASSES = (0, 2, 5)  # the class map of digits025
TINY_SCRATCH = "tiny_scratch"
TINY_ARCH = [
    {"type": "flatten"},
    {"type": "dense", "units": 32},
    {"type": "dense", "units": 3, "activation": "softmax"},
]


def drawn_digits(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28, 1) to_mnist arrays of drawn 0/2/5 in varied sizes, slants and weights,
    labels 0..2."""
    from pipeline.predict.preprocess import to_mnist

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, digit in enumerate(DRAWN_CLASSES):
        for _ in range(n_per_class):
            mask = glyph_mask(
                digit,
                size=(64, 80),
                centre=tuple(rng.uniform(0.4, 0.6, 2)),
                height=float(rng.uniform(0.5, 0.8)),
                stroke=int(rng.integers(0, 3)),
                rotate=float(rng.uniform(-12, 12)),
            )
            xs.append(to_mnist(mask))
            ys.append(label)
    order = rng.permutation(len(ys))
    return np.stack(xs)[order], np.array(ys, dtype=np.int64)[order]


def tiny_scratch_project(
    root: Path, train, val, *presets: str, val_split: bool = False
) -> list[dict]:
    """``root`` as a project: params.yaml with ``presets`` and ``TINY_SCRATCH`` (scratch,
    digits025), digits025's meta.json (and its validation split with ``val_split``), and
    ``TINY_SCRATCH`` trained on ``train``/``val`` into models/tiny_scratch/; its history."""
    from pipeline.core import params as params_mod
    from pipeline.data.prepared import save_split
    from pipeline.models import family as families

    raw = params_spec(*presets)
    raw["models"][TINY_SCRATCH] = {
        "family": "scratch",
        "dataset": "digits025",
        "arch": TINY_ARCH,
        "train": {"epochs": 4, "batch_size": 16, "learning_rate": 0.003},
    }
    write_params(root, raw)
    prepared = config.prepared_dir("digits025", root)
    prepared.mkdir(parents=True)
    (prepared / "meta.json").write_text(json.dumps({"classes": list(DRAWN_CLASSES)}))
    if val_split:
        save_split(config.split_file(prepared, "val"), val)
    return families.get("scratch").train(
        params_mod.parse(raw).models[TINY_SCRATCH],
        train,
        val,
        seed=0,
        out_dir=config.model_dir(TINY_SCRATCH, root),
        progress=False,
    )


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data follows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- tiny project


def build_tiny(dest: Path) -> Path:
    """Copy the project to ``dest``, apply the tiny profile, commit, `dvc repro`; the log of
    the repro is kept in ``dest/.repro.log``."""
    from pipeline.devtools import workspace

    workspace.copy_project(dest, REPO)
    env = plain_env()
    sh(["bin/python", "-m", "pipeline.profile", "tiny"], dest, env)
    workspace.commit_all(dest, "tiny profile")
    out = sh([".venv/bin/dvc", "repro"], dest, env)
    (dest / ".repro.log").write_text(out.stdout + out.stderr)
    return dest


# The experiment `tiny_experiment` (conftest.py) runs once on a copy of the tiny project:
# a second dense_mlp run, read by the e2e and the compare tests.
EXP_NAME = "lr-high"
EXP_KEY = "models.dense_mlp.train.learning_rate"
EXP_LR = "0.05"  # dense_mlp's learning rate is 0.01 in params.yaml


def run_experiment(built: Path, dest: Path) -> Path:
    """A copy of the tiny project after `dvc exp run -n EXP_NAME -S EXP_KEY=EXP_LR`; its
    output is kept in ``dest/.exp.log``."""
    copy_tiny(built, dest)
    out = sh([".venv/bin/dvc", "exp", "run", "-n", EXP_NAME, "-S", f"{EXP_KEY}={EXP_LR}"],
             dest, plain_env())  # fmt: skip
    (dest / ".exp.log").write_text(out.stdout + out.stderr)
    return dest


def copy_tiny(built: Path, dest: Path) -> Path:
    """A private copy of the built tiny project (git, DVC cache, MLflow store and all); the
    copy's MLflow store points at the copy's own artifact folder. The files of the DVC cache
    are hard links (40% of the project's bytes): DVC names them by content, never writes
    one in place (a new object is a new file) and only ever unlinks them."""
    import sqlite3

    cache = built / ".dvc" / "cache"

    def link_cache(src: str, dst: str) -> str:
        if Path(src).is_relative_to(cache):
            try:
                os.link(src, dst)
                return dst
            except OSError:  # another file system: copied
                pass
        return shutil.copy2(src, dst)

    shutil.copytree(built, dest, symlinks=True, copy_function=link_cache)
    db = sqlite3.connect(dest / "mlflow.db")
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for col in db.execute(f"PRAGMA table_info({table})").fetchall():
                if col[2].upper().startswith(("VARCHAR", "TEXT")):
                    db.execute(
                        f"UPDATE {table} SET {col[1]} = replace({col[1]}, ?, ?) "
                        f"WHERE {col[1]} LIKE ?",
                        (str(built), str(dest), f"%{built}%"),
                    )
        db.commit()
    finally:
        db.close()
    return dest


# --------------------------------------------------------------------------- headless Chromium

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)


def headless_chromium(profile: Path, *args: str) -> list[str]:
    """The command line of Debian's Chromium, headless, with a fresh ``profile`` and nothing
    fetched in the background (this machine's network refuses it), then ``args``."""
    from pipeline.devtools.chromium import HEADLESS_FLAGS

    return [str(CHROMIUM), *HEADLESS_FLAGS, f"--user-data-dir={profile}", *args]


# --------------------------------------------------------------------------- load

_TRAIN_ONE = (
    "import sys; from pathlib import Path; from pipeline.core import config, params; "
    "from pipeline.stages import train; p = params.load(); m = sys.argv[1]; "
    "print(train.run(p, m, config.prepared_dir(p.models[m].dataset), Path(sys.argv[2]))[0])"
)


def start_trainings(root: Path, model: str, n: int, env: dict, out: Path) -> list:
    """Start ``n`` trainings of ``model`` at once, each its own OS process running train@'s
    code (pipeline.stages.train.run: training, MLflow run, logged and registered model) into
    its own folder under ``out``."""
    return [
        subprocess.Popen(
            ["bin/python", "-c", _TRAIN_ONE, model, str(out / f"run{i}")],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]


def trained_run_ids(procs: list) -> list[str]:
    """The MLflow run ids the trainings of :func:`start_trainings` print; fails with the
    output of any that fails."""
    results = [(p, *p.communicate(timeout=1200)) for p in procs]
    failed = [f"exit {p.returncode}:\n{err[-3000:]}" for p, _, err in results if p.returncode]
    assert not failed, "\n".join(failed)
    return [stdout.strip().splitlines()[-1] for _, stdout, _ in results]


def trainings_at_once(root: Path, model: str, n: int, env: dict, out: Path) -> list[str]:
    """``n`` trainings of ``model`` at once (:func:`start_trainings`); their run ids."""
    return trained_run_ids(start_trainings(root, model, n, env, out))
