"""What the scratch training loop does after each epoch, one small callback each: keep the
history row (and hand it to ``on_epoch``), stop early, keep the best model on disk, lower the
learning rate on a plateau. ``from_params`` lists those ``train`` params ask for.

A callback's ``epoch_end(row, net, opt)`` sees the epoch's history row (``val_loss`` is what
they watch), the network and its optimizer; it sets ``stop`` to end training after this
epoch. ``train_end(net)`` runs once the loop is over, before the model is saved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from pipeline.core.params import TrainParams
from pipeline.models.numpy_cnn.network import Network
from pipeline.models.numpy_cnn.optim import Optimizer


class Callback:
    """Does nothing; subclasses override what they need."""

    stop = False

    def epoch_end(self, row: dict, net: Network, opt: Optimizer) -> None:
        pass

    def train_end(self, net: Network) -> None:
        pass


class Improvement:
    """Whether a validation loss beats the best so far by more than ``min_delta`` (the best
    moves only then)."""

    def __init__(self, min_delta: float = 0.0) -> None:
        self.best = math.inf
        self.min_delta = min_delta

    def __call__(self, loss: float) -> bool:
        if loss < self.best - self.min_delta:
            self.best = loss
            return True
        return False


class History(Callback):
    """Every epoch's row, in order, each also passed to ``on_epoch`` (MLflow logging)."""

    def __init__(self, on_epoch: Callable[[dict], None] | None = None) -> None:
        self.rows: list[dict] = []
        self.on_epoch = on_epoch

    def epoch_end(self, row, net, opt):
        self.rows.append(row)
        if self.on_epoch:
            self.on_epoch(row)


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without an improvement of ``val_loss`` by more than
    ``min_delta``; at the end, put back the weights of the best epoch."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.improved = Improvement(min_delta)
        self.bad_epochs = 0
        self.best_weights: dict | None = None

    def epoch_end(self, row, net, opt):
        if self.improved(row["val_loss"]):
            self.bad_epochs = 0
            self.best_weights = net.get_weights()
        else:
            self.bad_epochs += 1
        self.stop = self.bad_epochs >= self.patience

    def train_end(self, net):
        if self.best_weights is not None:
            net.set_weights(self.best_weights)


class Checkpoint(Callback):
    """Save the network to ``path`` at every epoch that improves ``val_loss`` (by more than
    ``min_delta``, early stopping's, so the checkpoint is the model it restores)."""

    def __init__(self, path: Path, min_delta: float = 0.0) -> None:
        self.path = Path(path)
        self.improved = Improvement(min_delta)

    def epoch_end(self, row, net, opt):
        if self.improved(row["val_loss"]):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            net.save(self.path)


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's rate by ``factor`` (not below ``min_lr``) after ``patience``
    epochs in a row without a lower ``val_loss``, then count again from zero."""

    def __init__(self, factor: float, patience: int, min_lr: float) -> None:
        self.factor, self.patience, self.min_lr = factor, patience, min_lr
        self.best = math.inf
        self.bad_epochs = 0

    def epoch_end(self, row, net, opt):
        if row["val_loss"] < self.best:
            self.best, self.bad_epochs = row["val_loss"], 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            opt.learning_rate = max(opt.learning_rate * self.factor, self.min_lr)
            self.bad_epochs = 0


def from_params(tp: TrainParams, checkpoint: Path) -> list[Callback]:
    """The callbacks ``tp`` asks for, in the order they run: early stopping, the checkpoint
    (at ``checkpoint``), reduce-on-plateau."""
    callbacks: list[Callback] = []
    es, rl = tp.early_stopping, tp.reduce_lr
    if es:
        callbacks.append(EarlyStopping(es.patience, es.min_delta))
    if tp.checkpoint:
        callbacks.append(Checkpoint(checkpoint, es.min_delta if es else 0.0))
    if rl:
        callbacks.append(ReduceLROnPlateau(rl.factor, rl.patience, rl.min_lr))
    return callbacks
