"""A sweep's space as Ray Tune distributions, and its configs as params overrides."""

from __future__ import annotations

from typing import Any

from pipeline.core.params import ModelParams, Params, SweepParams, check_sweep, with_overrides

TRIAL_INDEX = "trial_index"  # set in each config by search.IndexedOptunaSearch


def sweep_of(params: Params, name: str) -> SweepParams:
    """``sweeps.<name>``, checked against its preset; ParamsError names what is wrong."""
    from pipeline.core.params import ParamsError

    if name not in params.sweeps:
        known = ", ".join(params.sweeps) or "none defined"
        raise ParamsError(f"sweeps.{name}: no such sweep in params.yaml (known: {known})")
    check_sweep(params, name)
    return params.sweeps[name]


def tune_space(sw: SweepParams) -> dict[str, Any]:
    """``{"train.learning_rate": tune.loguniform(...), ...}``: flat dotted keys."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, d in sw.space.items():
        if d.loguniform is not None:
            space[key] = tune.loguniform(*d.loguniform)
        elif d.uniform is not None:
            space[key] = tune.uniform(*d.uniform)
        elif d.randint is not None:
            space[key] = tune.randint(*d.randint)
        else:
            space[key] = tune.choice(list(d.choice or ()))
    return space


def overrides(config: dict[str, Any], sw: SweepParams) -> dict[str, Any]:
    """The space keys of a trial's config (without the trial index), as plain Python."""
    out = {}
    for key in sw.space:
        v = config[key]
        out[key] = v.item() if hasattr(v, "item") else v  # numpy scalars from the searcher
    return out


def trial_params(params: Params, sw: SweepParams, config: dict[str, Any]) -> ModelParams:
    mp = params.models[sw.model]
    n_classes = len(params.dataset_of(sw.model).classes)
    return with_overrides(mp, overrides(config, sw), n_classes, params.validate.image_shape)


def dvc_command(sw: SweepParams, config: dict[str, Any]) -> list[str]:
    """``bin/dvc exp run -S models.<m>.<key>=<value> ...`` for a config."""
    cmd = ["bin/dvc", "exp", "run"]
    for key, v in overrides(config, sw).items():
        value = repr(v) if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else v
        cmd += ["-S", f"models.{sw.model}.{key}={value}"]
    return cmd
