"""The MLflow params of a training run (pipeline/stages/train.py): the architecture as one
readable param, the hyperparameters people filter on, and the names other readers use."""

from __future__ import annotations

from pipeline.compare import analysis
from pipeline.core import params as params_mod
from pipeline.stages.train import describe_arch, logged_params


def test_the_architecture_is_one_readable_param_and_the_rest_keep_their_names():
    p = params_mod.load()
    mp = p.models["dense_mlp"]
    logged = logged_params(p.seed, "dense_mlp", mp, p.datasets[mp.dataset])
    assert logged["model.arch"] == "flatten | dense(100) | dense(50) | dense(3, activation=softmax)"
    assert not [k for k in logged if k.startswith("model.arch.")]
    assert None not in logged.values()  # unset options (augment, early_stopping...) left out
    # read elsewhere: tests/integration (model.train.*), compare and predict (dataset.classes.<i>)
    assert logged["model.train.learning_rate"] == mp.train.learning_rate
    assert logged["model.train.epochs"] == mp.train.epochs
    assert logged["model.train.batch_size"] == mp.train.batch_size
    strings = {k: str(v) for k, v in logged.items()}  # as MLflow stores them
    assert analysis.classes_of(strings) == [str(c) for c in p.datasets[mp.dataset].classes]
    assert len(logged) < 25


def test_flags_read_as_names_and_every_layer_keeps_its_non_default_fields():
    p = params_mod.load()
    line = describe_arch(p.models["keras_cnn"].arch)
    assert line.startswith("conv(64, batch_norm, activation_before_bn) | ")
    assert "dropout(0.25)" in line and line.endswith("dense(10, activation=softmax)")
    assert line.count(" | ") == len(p.models["keras_cnn"].arch) - 1


def test_mlflow_names_the_training_splits_epoch_metrics_and_no_count_as_a_metric():
    from pipeline.stages.train import mlflow_epoch_metrics

    row = {"epoch": 3, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7}
    assert mlflow_epoch_metrics(row) == {
        "epoch": 3, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7
    }  # fmt: skip
    from pipeline.report.evaluation import mlflow_metrics
    from tests.unit.report.test_evaluation import _evaluation

    flat = mlflow_metrics(_evaluation(conv=False))
    assert "test_n_test" not in flat and "test_accuracy" in flat and "test_errors" in flat
