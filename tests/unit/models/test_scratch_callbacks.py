"""The scratch training loop's parts: each after-epoch callback on a real network and
optimizer, the per-step learning rate, and one epoch of steps."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.params import (
    ConvSpec,
    DenseSpec,
    EarlyStoppingParams,
    FlattenSpec,
    LRScheduleParams,
    ReduceLRParams,
    TrainParams,
)
from pipeline.models.numpy_cnn import callbacks, family
from pipeline.models.numpy_cnn.network import Network
from pipeline.models.numpy_cnn.optim import make_optimizer
from pipeline.models.schedule import learning_rate
from tests.unit.models.test_scratch_network import SMALL, blobs

TINY = (ConvSpec(filters=2, kernel=3), FlattenSpec(), DenseSpec(units=3, activation="softmax"))


def tiny_net(seed: int = 0) -> Network:
    return Network(TINY, (5, 5, 1), seed=seed)


def run(callback: callbacks.Callback, val_losses, net=None, opt=None) -> list[int]:
    """Feed ``val_losses`` epoch by epoch (the weights set to the epoch's number, so the
    restored or saved ones say which epoch they come from); the epochs that set ``stop``."""
    net = net or tiny_net()
    opt = opt or make_optimizer("sgd", 0.1)
    stops = []
    for epoch, loss in enumerate(val_losses, 1):
        net.flat_params[:] = epoch
        callback.epoch_end({"epoch": epoch, "val_loss": loss}, net, opt)
        if callback.stop:
            stops.append(epoch)
    return stops


def test_improvement_needs_more_than_min_delta():
    better = callbacks.Improvement(min_delta=0.1)
    assert [better(v) for v in (1.0, 0.95, 0.9, 0.85, 0.8, 0.74)] == [
        True, False, False, True, False, True
    ]  # fmt: skip
    assert better.best == 0.74
    plain = callbacks.Improvement()
    assert [plain(v) for v in (1.0, 1.0, 0.99, float("nan"))] == [True, False, True, False]


def test_history_keeps_rows_and_hands_each_to_on_epoch():
    seen = []
    history = callbacks.History(seen.append)
    run(history, [0.5, 0.4])
    assert history.rows == seen == [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}]
    assert not history.stop
    run(callbacks.History(), [0.5])  # without on_epoch


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch():
    net = tiny_net()
    stopper = callbacks.EarlyStopping(patience=2, min_delta=0.05)
    # epoch 3 improves by less than min_delta: not an improvement
    stops = run(stopper, [1.0, 0.8, 0.77, 0.9, 0.5], net)
    assert stops[0] == 4 and stopper.bad_epochs == 0  # epoch 5 improved again
    stopper.train_end(net)
    assert np.all(net.flat_params == 5)
    stopper = callbacks.EarlyStopping(patience=2)
    assert run(stopper, [1.0, 0.8, 0.9, 0.85], net) == [4]
    stopper.train_end(net)
    assert np.all(net.flat_params == 2)
    untouched = tiny_net(seed=1)
    before = untouched.flat_params.copy()
    callbacks.EarlyStopping(patience=1).train_end(untouched)  # no epoch seen: no change
    assert np.array_equal(untouched.flat_params, before)


def test_checkpoint_saves_each_improving_epoch(tmp_path):
    path = tmp_path / "new" / "checkpoint.npz"
    checkpoint = callbacks.Checkpoint(path, min_delta=0.1)
    net = tiny_net()
    run(checkpoint, [2.0], net)
    assert np.all(Network.load(path).flat_params == 1)
    assert run(checkpoint, [1.95, 1.5, 1.45], net) == []  # only 1.5 improves by > 0.1
    assert np.all(Network.load(path).flat_params == 2)


def test_reduce_lr_on_plateau_multiplies_the_rate_and_stops_at_min_lr():
    opt = make_optimizer("adam", 0.1)
    plateau = callbacks.ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.02)
    rates = []
    for loss in [1.0, 1.0, 1.1, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]:
        run(plateau, [loss], opt=opt)
        rates.append(opt.learning_rate)
    assert rates == [0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.02]


def test_from_params_lists_what_train_asks_for_in_order(tmp_path):
    tp = TrainParams(epochs=1, batch_size=8)
    assert callbacks.from_params(tp, tmp_path / "c.npz") == []
    tp = TrainParams(
        epochs=1, batch_size=8, checkpoint=True,
        early_stopping=EarlyStoppingParams(patience=4, min_delta=0.01),
        reduce_lr=ReduceLRParams(factor=0.5, patience=1, min_lr=0.001),
    )  # fmt: skip
    stop, save, plateau = callbacks.from_params(tp, tmp_path / "c.npz")
    assert (type(stop), type(save), type(plateau)) == (
        callbacks.EarlyStopping, callbacks.Checkpoint, callbacks.ReduceLROnPlateau
    )  # fmt: skip
    assert stop.patience == 4 and stop.improved.min_delta == 0.01
    assert save.improved.min_delta == 0.01  # the checkpoint is the model early stopping keeps
    assert save.path == tmp_path / "c.npz"
    assert (plateau.factor, plateau.patience, plateau.min_lr) == (0.5, 1, 0.001)
    alone = callbacks.from_params(TrainParams(epochs=1, batch_size=8, checkpoint=True), tmp_path)
    assert [c.improved.min_delta for c in alone] == [0.0]


def test_step_rate_is_the_schedule_formula():
    tp = TrainParams(epochs=2, batch_size=8, learning_rate=0.01)
    assert family.step_rate(tp, 5) is None
    sched = LRScheduleParams(kind="one_cycle", warmup_epochs=1)
    rate = family.step_rate(tp.model_copy(update={"lr_schedule": sched}), 5)
    assert [rate(s) for s in range(10)] == [
        float(learning_rate(sched, 0.01, s, 5, 2)) for s in range(10)
    ]


def test_run_epoch_sets_each_steps_rate_and_averages_over_images():
    data = blobs(40)
    tp = TrainParams(epochs=1, batch_size=16, optimizer="sgd", learning_rate=0.1)
    trainer = family.Trainer(Network(SMALL, (10, 10, 1), seed=0), tp, seed=0, threads=1)
    batches = [(data.x[i : i + 16], data.y[i : i + 16]) for i in range(0, 40, 16)]  # 16, 16, 8
    rates = []

    def rate(step):
        rates.append(step)
        return 0.01 * (step + 1)

    stats = family.run_epoch(trainer, batches, len(batches), rate, first_step=6)
    assert rates == [6, 7, 8] and trainer.opt.learning_rate == pytest.approx(0.09)
    assert stats.learning_rate == pytest.approx(0.07)  # the rate of the epoch's first step
    assert stats.images == 40 and 0 <= stats.accuracy <= 1 and stats.loss > 0
    assert set(stats.grad_norms) == set(trainer.net.slices) and stats.seconds > 0
    # the epoch's loss is the image-weighted mean of the batch losses (16, 16 and 8 images)
    net = Network(SMALL, (10, 10, 1), seed=0)
    opt = make_optimizer("sgd", 0.1)
    losses = []
    for step, (xb, yb) in enumerate(batches, 6):
        opt.learning_rate = 0.01 * (step + 1)
        losses.append(net.loss_and_grads(xb, yb)[0])
        opt.step(net.flat_params, net.flat_grads, net.decay_mask)
    assert stats.loss == pytest.approx(np.average(losses, weights=[16, 16, 8]))
    assert np.array_equal(net.flat_params, trainer.net.flat_params)
    trainer.close()
