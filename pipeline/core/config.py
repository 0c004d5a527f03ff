"""Every path between stages and every file name in them, defined once
(docs/architecture.md, "Files between stages").

Every stage reads and writes through these names and helpers; no stage body spells a path
or file name literal.
The repository root is the folder holding ``params.yaml``: ``PIPELINE_ROOT`` when set,
else the current directory when it holds one (``dvc repro`` runs stages from the root),
else the checkout this package lives in.
"""

from __future__ import annotations

import os
from pathlib import Path

PARAMS_FILE = "params.yaml"


def _find_root() -> Path:
    env = os.environ.get("PIPELINE_ROOT")
    if env:
        return Path(env).resolve()
    cwd = Path.cwd()
    if (cwd / PARAMS_FILE).is_file():
        return cwd.resolve()
    return Path(__file__).resolve().parents[2]


ROOT = _find_root()

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SPLITS = ("train", "val", "test")

# File names inside the stage outputs.
META_JSON = "meta.json"  # data/prepared/<dataset>/: class map, counts, source hashes
SUMMARY_JSON = "summary.json"  # reports/validation/: what passed, with the raw files' hashes
HISTORY_CSV = "history.csv"  # models/<model>/ and plots/<model>/: one row an epoch
RUN_ID_FILE = "mlflow_run_id"  # models/<model>/: the MLflow run of the training
PREDICTIONS_CSV = "predictions.csv"  # plots/<model>/: actual, predicted class label per image
CONFUSION_PLOT_CSV = "confusion.csv"  # plots/<model>/: actual, predicted, count for every pair
IMAGES_DIR = "images"  # plots/<model>/: PNG figures, rendered as images by `dvc plots show`
TABLES_DIR = "tables"  # plots/<model>/: confusion matrix CSVs, classification report
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_NORMALIZED_CSV = "confusion_matrix_normalized.csv"
CLASSIFICATION_REPORT = "classification_report.txt"
PER_CLASS_JSON = "per_class.json"  # plots/<model>/tables/: precision, recall, f1, support
ACCURACY_CSV = "accuracy.csv"  # plots/compare/: test accuracy of every model
ACCURACY_PNG = "test_accuracy.png"
CURVES_PNG = "validation_curves.png"
# MLflow artifact folders of a run: evaluate@<model> logs plots/<model>/ under EVALUATION_ARTIFACTS
# (so <run>/evaluation/predictions.csv: one row per test image, in test.npz order);
# `python -m pipeline.compare` logs its reports under COMPARE_ARTIFACTS.
EVALUATION_ARTIFACTS = "evaluation"
COMPARE_ARTIFACTS = "compare"


def split_file(dataset_dir: Path, split: str) -> Path:
    """data/prepared/<dataset>/<split>.npz."""
    return dataset_dir / f"{split}.npz"


def params_path(root: Path = ROOT) -> Path:
    return root / PARAMS_FILE


def raw_dir(source: str, root: Path = ROOT) -> Path:
    """data/raw/<source>/: the four IDX files, uncompressed."""
    return root / "data" / "raw" / source


def params_check_file(root: Path = ROOT) -> Path:
    """reports/params_ok.txt: check_params' stamp; its content never changes, so that every
    stage can depend on it without rerunning when an unrelated param changes."""
    return root / "reports" / "params_ok.txt"


def running_dir(root: Path = ROOT) -> Path:
    """reports/running/: one marker file per stage process while it runs (git ignores
    them); a marker left by a killed stage makes check_params, which depends on this
    folder, run in the next ``dvc repro`` and clean up (pipeline/core/runner.py)."""
    return root / "reports" / "running"


def validation_dir(root: Path = ROOT) -> Path:
    """reports/validation/: GX data docs (index.html) and summary.json."""
    return root / "reports" / "validation"


def prepared_dir(dataset: str, root: Path = ROOT) -> Path:
    """data/prepared/<dataset>/: train.npz, val.npz, test.npz and meta.json."""
    return root / "data" / "prepared" / dataset


def model_dir(model: str, root: Path = ROOT) -> Path:
    """models/<model>/: the trained model, history.csv and the MLflow run id."""
    return root / "models" / model


def metrics_file(model: str, root: Path = ROOT) -> Path:
    """metrics/<model>.json: test metrics read by ``dvc metrics show``."""
    return root / "metrics" / f"{model}.json"


def plots_dir(model: str, root: Path = ROOT) -> Path:
    """plots/<model>/: curves, confusion matrix, feature maps, kernels, prediction grid."""
    return root / "plots" / model


def compare_plots_dir(root: Path = ROOT) -> Path:
    """plots/compare/: cross-model figures."""
    return root / "plots" / "compare"


def compare_reports_dir(root: Path = ROOT) -> Path:
    """reports/compare/: two-run comparison reports of `python -m pipeline.compare`
    (git-ignored; each one is also an artifact of both runs)."""
    return root / "reports" / "compare"


def cache_dir(root: Path = ROOT) -> Path:
    """Downloads kept between runs (git-ignored)."""
    return root / "data" / "cache"


def mlflow_db(root: Path = ROOT) -> Path:
    return root / "mlflow.db"


def mlflow_artifacts(root: Path = ROOT) -> Path:
    return root / "mlartifacts"


def server_dir(root: Path = ROOT) -> Path:
    """.mlflow-server/ (git-ignored): the team tracking server's PostgreSQL cluster
    (``pgdata/``), proxied artifacts (``artifacts/``), logs and pid files."""
    return root / ".mlflow-server"
