"""The base of every params schema: strict frozen models, interval checks, plain dicts."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class ParamsError(ValueError):
    """A params.yaml problem; the message starts with the key path."""


class Schema(BaseModel):
    """Frozen, strict (no string-to-number coercion), unknown keys rejected, finite floats
    only (``.inf`` and ``.nan`` refused everywhere)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


def within(interval: str) -> AfterValidator:
    """A number within ``interval``, written as in maths: ``"[0, 1)"`` excludes 1."""
    lo, hi = (float(x) for x in interval[1:-1].split(","))

    def check(v: float) -> float:
        above = lo < v if interval[0] == "(" else lo <= v
        below = v < hi if interval[-1] == ")" else v <= hi
        if not (above and below):
            raise ValueError(f"must be in {interval}, got {v}")
        return v

    return AfterValidator(check)


LIST = Field(strict=False)  # a YAML list becomes a tuple; its items stay strict
FROZEN = AfterValidator(MappingProxyType)  # read-only mappings


def to_dict(obj: Any) -> Any:
    """Plain dicts/lists (for logging to MLflow and writing meta.json)."""
    if isinstance(obj, BaseModel):
        return {name: to_dict(getattr(obj, name)) for name in type(obj).model_fields}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj


def flatten(obj: Any, prefix: str = "", lists: bool = True) -> dict[str, Any]:
    """``{"train.learning_rate": 0.001, "arch.0.filters": 32, ...}`` for MLflow params;
    ``lists=False`` keeps a list as one value (``{"arch": [...]}``)."""
    d = to_dict(obj)
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}.", lists))
    elif isinstance(d, list) and lists:
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}.", lists))
    else:
        out[prefix[:-1] if prefix.endswith(".") else prefix] = d
    return out
