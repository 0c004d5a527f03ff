"""sweeps.<name> in params.yaml: typed, and every space key and value checked against the
preset before any trial (pipeline/core/params/, pipeline/sweep/spec.py)."""

from __future__ import annotations

import pytest

from pipeline.core import params
from pipeline.core.params import ParamsError
from pipeline.sweep import spec
from pipeline.sweep.trial import trial_seed
from tests.helpers import params_spec

SPACE = {
    "train.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
    "train.batch_size": {"choice": [64, 128, 256]},
    "arch.6.rate": {"uniform": [0.1, 0.5]},
}


def raw(space=None, **sweep):
    return params_spec(
        "keras_small_cnn",
        sweeps={"s": {"model": "keras_small_cnn", "space": space or SPACE} | sweep},
    )


def error(r) -> str:
    with pytest.raises(ParamsError) as exc:
        spec.sweep_of(params.parse(r), "s")
    return str(exc.value)


def test_shipped_sweep_is_valid():
    p = params.load()
    for name in p.sweeps:
        sw = spec.sweep_of(p, name)
        assert sw.metric.startswith("val_")


def test_defaults_and_tune_space():
    sw = spec.sweep_of(params.parse(raw()), "s")
    assert (sw.metric, sw.mode, sw.trials, sw.cpus_per_trial) == ("val_accuracy", "max", 16, 1)
    space = spec.tune_space(sw)
    assert set(space) == set(SPACE)
    assert space["train.batch_size"].categories == [64, 128, 256]


@pytest.mark.parametrize(
    ("space", "sweep", "expected"),
    [
        ({"arch.9.rate": {"uniform": [0.1, 0.5]}}, {}, "sweeps.s.space.arch.9.rate: no such key"),
        ({"train.lr": {"uniform": [0.1, 0.5]}}, {}, "sweeps.s.space.train.lr: no such key"),
        ({"seed": {"randint": [1, 5]}}, {}, "sweeps.s.space.seed: not a train.* or arch.* key"),
        (
            {"arch.6.rate": {"uniform": [0.1, 1.5]}},
            {},
            "sweeps.s.space.arch.6.rate: 1.5 refused by models.keras_small_cnn "
            "(arch[6].rate: must be in [0, 1), got 1.5)",
        ),
        (
            {"train.batch_size": {"choice": [64, 0.5]}},
            {},
            "train.batch_size: 0.5 refused by models.keras_small_cnn (train.batch_size: expected",
        ),
        ({"train.batch_size": {"randint": [0, 4]}}, {}, "train.batch_size: 0 refused"),
        ({"train.learning_rate": {"loguniform": [0.0, 1.0]}}, {}, "loguniform[0]: must be > 0"),
        ({"train.learning_rate": {"uniform": [0.5, 0.1]}}, {}, "need low < high"),
        ({"train.learning_rate": {"uniform": [0.1, 0.5], "choice": [1]}}, {}, "exactly one"),
        (None, {"metric": "test_accuracy"}, "sweeps.s.metric: 'test_accuracy' is not one of"),
        (None, {"model": "nope"}, "sweeps.s.model: 'nope' is not a model"),
        (None, {"trails": 3}, "sweeps.s.trails: unknown key"),
    ],
)
def test_bad_sweeps_are_one_line(space, sweep, expected):
    msg = error(raw(space, **sweep))
    assert expected in msg and "\n" not in msg


def test_unknown_sweep_name():
    with pytest.raises(ParamsError, match=r"sweeps.x: no such sweep in params.yaml \(known: s\)"):
        spec.sweep_of(params.parse(raw()), "x")


def test_overrides_rebuild_the_preset_and_dvc_line():
    p = params.parse(raw())
    sw = p.sweeps["s"]
    cfg = {"train.learning_rate": 0.00123, "train.batch_size": 64, "arch.6.rate": 0.3}
    mp = spec.trial_params(p, sw, cfg | {"trial_index": 4})
    assert (mp.train.learning_rate, mp.train.batch_size, mp.arch[6].rate) == (0.00123, 64, 0.3)
    assert p.models["keras_small_cnn"].train.batch_size == 128  # the preset is unchanged
    assert spec.dvc_command(sw, cfg) == [
        "bin/dvc", "exp", "run",
        "-S", "models.keras_small_cnn.train.learning_rate=0.00123",
        "-S", "models.keras_small_cnn.train.batch_size=64",
        "-S", "models.keras_small_cnn.arch.6.rate=0.3",
    ]  # fmt: skip


def test_trial_seeds_follow_sweep_seed_and_index():
    seeds = [trial_seed(7, i) for i in range(20)]
    assert seeds == [trial_seed(7, i) for i in range(20)]
    assert len(set(seeds)) == 20 and seeds != [trial_seed(8, i) for i in range(20)]
