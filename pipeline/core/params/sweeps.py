"""``sweeps.<name>``: a search space over a preset's keys, and the preset with a trial's
values set (checked by the same schema as params.yaml)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.core.params._base import FROZEN, LIST, ParamsError, Schema, to_dict
from pipeline.core.params.errors import error_line
from pipeline.core.params.models import EnsembleParams, ModelParams, check_arch, check_shapes

if TYPE_CHECKING:
    from pipeline.core.params import Params


class SweepDist(Schema):
    """One dimension of a sweep's space; exactly one key: ``loguniform: [lo, hi]``,
    ``uniform: [lo, hi]``, ``randint: [lo, hi)`` (hi excluded) or ``choice: [values]``."""

    loguniform: Annotated[tuple[PositiveFloat, PositiveFloat], LIST] | None = None
    uniform: Annotated[tuple[float, float], LIST] | None = None
    randint: Annotated[tuple[int, int], LIST] | None = None
    choice: Annotated[tuple[int | float | str | bool, ...], LIST] | None = None

    @model_validator(mode="after")
    def _one(self) -> SweepDist:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of loguniform, uniform, randint, choice")
        kind, value = given[0], getattr(self, given[0])
        if kind == "choice" and not value:
            raise ValueError("choice: list at least one value")
        if kind != "choice" and not value[0] < value[1]:
            raise ValueError(f"{kind}: need low < high, got {list(value)}")
        return self

    def extremes(self) -> tuple[Any, ...]:
        """The values whose acceptance by the preset's schema covers the whole range."""
        if self.choice is not None:
            return self.choice
        if self.randint is not None:
            return (self.randint[0], self.randint[1] - 1)
        return self.loguniform or self.uniform  # type: ignore[return-value]


class AshaParams(Schema):
    """ASHA early stopping (Ray Tune's ASHAScheduler; max_t is the preset's epochs)."""

    grace_period: PositiveInt = 1  # epochs every trial gets
    reduction_factor: Annotated[int, Field(ge=2)] = 2


class SweepParams(Schema):
    """``sweeps.<name>``: a search over ``space`` (dotted keys of the preset's arch/train)."""

    model: str  # a preset of ``models``: its arch/train are the base
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"  # validation, never test
    mode: Literal["max", "min"] = "max"
    trials: PositiveInt = 16
    cpus_per_trial: PositiveInt = 1
    max_concurrent: PositiveInt | None = None  # None: the cluster's CPUs // cpus_per_trial
    seed: int = 0  # the search's seed; trial i trains with a seed from (seed, i)
    asha: AshaParams | None = Field(default_factory=AshaParams)  # null: no early stopping
    space: Annotated[Mapping[str, SweepDist], FROZEN]

    @field_validator("space")
    @classmethod
    def _space(cls, v: Mapping[str, SweepDist]) -> Mapping[str, SweepDist]:
        if not v:
            raise ValueError("list at least one key to search")
        for key in v:
            if not key.startswith(("train.", "arch.")):
                raise ValueError(f"{key}: not a train.* or arch.* key of the preset")
        return v


def with_overrides(
    mp: ModelParams, values: Mapping[str, Any], n_classes: int, image_shape: Sequence[int]
) -> ModelParams:
    """``mp`` with dotted keys (``train.learning_rate``, ``arch.6.rate``) set, checked by the
    same schema as params.yaml; ParamsError names the key when one does not exist in ``mp``
    or its value is refused."""
    raw = to_dict(mp)
    for key, value in values.items():
        node: Any = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = _child(node, part, key)
        _child(node, parts[-1], key)  # the key exists
        node[int(parts[-1]) if isinstance(node, list) else parts[-1]] = value
    try:
        new = ModelParams.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(error_line(exc.errors()[0])) from None
    check_arch(new.arch, n_classes, "arch", new.family)
    check_shapes(new.arch, image_shape, "arch")
    return new


def _child(node: Any, part: str, key: str) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    raise _NoKey(f"{key}: no such key in the preset")


class _NoKey(ParamsError):
    """A sweep's space key that the preset does not have."""


def check_sweep(params: Params, name: str) -> None:
    """Every space key exists in the preset and every extreme value passes its schema."""
    sw = params.sweeps[name]
    where = f"sweeps.{name}"
    if sw.model not in params.models:
        known = ", ".join(params.models)
        raise ParamsError(f"{where}.model: {sw.model!r} is not a model (known: {known})")
    mp, n_classes = params.models[sw.model], len(params.dataset_of(sw.model).classes)
    if isinstance(mp, EnsembleParams):
        raise ParamsError(f"{where}.model: {sw.model!r} is an ensemble: it has nothing to train")
    for key, dist in sw.space.items():
        for value in dist.extremes():
            try:
                with_overrides(mp, {key: value}, n_classes, params.validate.image_shape)
            except _NoKey:
                raise ParamsError(
                    f"{where}.space.{key}: no such key in models.{sw.model}"
                ) from None
            except ParamsError as exc:
                raise ParamsError(
                    f"{where}.space.{key}: {value!r} refused by models.{sw.model} ({exc})"
                ) from None
