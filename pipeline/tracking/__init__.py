"""The MLflow run contract (docs/architecture.md, "MLflow run contract"). With
pipeline/models/*/flavor.py, the only code that imports mlflow.

- Store (store.py): ``MLFLOW_TRACKING_URI``, else ``sqlite:///<repo root>/mlflow.db`` with
  artifacts in ``<repo root>/mlartifacts`` (a ``dvc exp run`` copy's root is the original
  checkout); a tracking server that does not answer is one TrackingError line naming it.
- Runs (runs.py): one run per model per execution of train@<model>; its id is kept in
  models/<model>/, and evaluate@ reopens it (pulled.py: or continues it in a run of its own
  when the store lacks it); plot has a run of its own. Runs left RUNNING by a dead process
  are marked KILLED (orphans.py).
- Tags (provenance.py): git commit and dirty flag, DVC hash of the prepared dataset, DVC
  stage and experiment name, and ``repro_id``, shared by the runs of one ``dvc repro``.
- Models (models.py, loading.py): logged in their flavor with a signature, an input example
  and the ``pipeline`` package beside them, without pickles; loaded from their pickle-free
  file. Registry (registry.py): a version per training, ``test_accuracy`` tag, alias
  ``champion`` moved only to a better version.
- Reading runs back (lookup.py): by id, preset or preset@<DVC experiment name>.
"""

from pipeline.tracking.digests import ModelTampered
from pipeline.tracking.loading import (
    PickleRefused,
    load_pyfunc,
    local_model_folder,
    safe_model_file,
    verified_model_file,
)
from pipeline.tracking.lookup import (
    RunLookupError,
    download_run_artifact,
    find_run,
    log_artifact_to_run,
    metric_history,
    model_source_run,
    run_params_and_tags,
)
from pipeline.tracking.models import log_keras_model, log_pyfunc_model
from pipeline.tracking.orphans import kill_orphan_runs
from pipeline.tracking.provenance import file_md5, git_status, repro_id, run_tags
from pipeline.tracking.pulled import reopen_or_continue, run_exists, source_label
from pipeline.tracking.registry import (
    CHAMPION,
    promote,
    promote_by_hand,
    promote_champions,
    register_model,
    tag_test_accuracy,
)
from pipeline.tracking.runs import (
    execution_run,
    load_run_id,
    log_artifact,
    log_artifacts,
    log_images,
    log_metrics,
    log_params,
    log_prepared_inputs,
    reopen,
    save_run_id,
    training_run,
)
from pipeline.tracking.store import TrackingError, setup, store_root, tracking_uri, with_retry

__all__ = [
    "CHAMPION",
    "ModelTampered",
    "PickleRefused",
    "RunLookupError",
    "TrackingError",
    "download_run_artifact",
    "execution_run",
    "file_md5",
    "find_run",
    "git_status",
    "kill_orphan_runs",
    "load_pyfunc",
    "load_run_id",
    "local_model_folder",
    "log_artifact",
    "log_artifact_to_run",
    "log_artifacts",
    "log_images",
    "log_keras_model",
    "log_metrics",
    "log_params",
    "log_prepared_inputs",
    "log_pyfunc_model",
    "metric_history",
    "model_source_run",
    "promote",
    "promote_by_hand",
    "promote_champions",
    "register_model",
    "reopen",
    "reopen_or_continue",
    "repro_id",
    "run_exists",
    "run_params_and_tags",
    "run_tags",
    "safe_model_file",
    "save_run_id",
    "setup",
    "source_label",
    "store_root",
    "tag_test_accuracy",
    "tracking_uri",
    "training_run",
    "verified_model_file",
    "with_retry",
]
