"""params.yaml parsed once into typed, frozen pydantic models.

The schema is the models of this package: strict types (``"42"`` is not an integer), unknown
keys rejected, ranges as field constraints, cross-field checks (a model's dataset exists, the
output layer has one unit a class) in the validator of ``Params``. The first problem is
reported as one line starting with its full key path
(``datasets.digits10.trian_size: unknown key``) before any stage does work.

One module a section: ``data`` (data, datasets, validate), ``models`` (presets, ensembles and
the architecture checks every family's builder shares), ``sweeps`` (search spaces and a
preset with a trial's values set), ``errors`` (a pydantic error as that one line); ``_base``
holds the strict frozen base model. Everything is imported from ``pipeline.core.params``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, NonNegativeFloat, ValidationError, model_validator

from pipeline.core import config
from pipeline.core.params._base import FROZEN, LIST, ParamsError, Schema, flatten, to_dict, within
from pipeline.core.params.data import (
    DataParams,
    DatasetParams,
    FetchParams,
    RowBounds,
    ShareBounds,
    ValidateParams,
)
from pipeline.core.params.errors import error_line
from pipeline.core.params.models import (
    LAYER_TYPES,
    AnyModelParams,
    AugmentParams,
    ConvSpec,
    CubicSpec,
    DenseSpec,
    DropoutSpec,
    EarlyStoppingParams,
    EnsembleParams,
    FlattenSpec,
    LayerSpec,
    LRScheduleParams,
    ModelParams,
    PoolSpec,
    ReduceLRParams,
    TrainParams,
    TtaParams,
    check_arch,
    check_ensemble,
    check_shapes,
)
from pipeline.core.params.sweeps import (
    AshaParams,
    SweepDist,
    SweepParams,
    check_sweep,
    with_overrides,
)

__all__ = [
    "LAYER_TYPES",
    "AnyModelParams",
    "AshaParams",
    "AugmentParams",
    "ConvSpec",
    "CubicSpec",
    "DataParams",
    "DatasetParams",
    "DenseSpec",
    "DropoutSpec",
    "EarlyStoppingParams",
    "EnsembleParams",
    "FetchParams",
    "FlattenSpec",
    "LRScheduleParams",
    "LayerSpec",
    "MlflowParams",
    "ModelParams",
    "Params",
    "ParamsError",
    "PlotParams",
    "PoolSpec",
    "ReduceLRParams",
    "RegistryParams",
    "RowBounds",
    "ShareBounds",
    "SweepDist",
    "SweepParams",
    "TrainParams",
    "TtaParams",
    "ValidateParams",
    "check_arch",
    "check_ensemble",
    "check_shapes",
    "check_sweep",
    "flatten",
    "load",
    "parse",
    "to_dict",
    "with_overrides",
]


class MlflowParams(Schema):
    experiment: str = "mnist"


class PlotParams(Schema):
    """Cross-model figures of the plot stage (plots/compare/)."""

    compare_curves: Annotated[tuple[str, ...], LIST] = ("cubic_mlp", "dense_mlp")  # overlaid


class RegistryParams(Schema):
    """The promotion gate (pipeline/tracking/gate.py): ``champion`` moves to a new version only
    when McNemar's one-sided p < ``alpha`` and no class's recall drops by more than
    ``max_class_drop`` percentage points."""

    alpha: Annotated[float, within("(0, 1)")] = 0.05
    max_class_drop: NonNegativeFloat = 0.5


# The key "validate" shadows the deprecated pydantic v1 method BaseModel.validate, unused here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"Field name \"validate\"", UserWarning)

    class Params(Schema):
        seed: int
        data: DataParams
        datasets: Annotated[Mapping[str, DatasetParams], FROZEN]
        models: Annotated[Mapping[str, AnyModelParams], FROZEN]
        validate: ValidateParams = Field(default_factory=ValidateParams)
        mlflow: MlflowParams = Field(default_factory=MlflowParams)
        plot: PlotParams = Field(default_factory=PlotParams)
        registry: RegistryParams = Field(default_factory=RegistryParams)
        sweeps: Annotated[Mapping[str, SweepParams], FROZEN] = Field({}, validate_default=True)

        def dataset_of(self, model: str) -> DatasetParams:
            return self.datasets[self.models[model].dataset]

        @model_validator(mode="after")
        def _links(self) -> Params:
            """Checks across sections; their messages carry their own key paths."""
            if self.data.source == "idx_dir" and not self.data.idx_dir:
                raise ValueError("data.idx_dir: required when data.source is idx_dir")
            if not self.datasets:
                raise ValueError("datasets: define at least one dataset")
            for name, m in self.models.items():
                where = f"models.{name}"
                if m.dataset not in self.datasets:
                    known = ", ".join(self.datasets)
                    raise ValueError(
                        f"{where}.dataset: {m.dataset!r} is not a dataset (known: {known})"
                    )
                if isinstance(m, EnsembleParams):
                    check_ensemble(self, name, m)
                    continue
                n_classes = len(self.datasets[m.dataset].classes)
                check_arch(m.arch, n_classes, f"{where}.arch", m.family, f"dataset {m.dataset!r}")
                check_shapes(m.arch, self.validate.image_shape, f"{where}.arch")
            for i, name in enumerate(self.plot.compare_curves):
                if name not in self.models:
                    raise ValueError(f"plot.compare_curves[{i}]: {name!r} is not a model")
            for name in self.sweeps:
                check_sweep(self, name)
            return self


def parse(raw: Any) -> Params:
    """Parse a params mapping (as loaded from YAML); raise ParamsError naming the key."""
    if not isinstance(raw, Mapping):
        raise ParamsError("params: the file must hold a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(error_line(exc.errors()[0])) from None


def load(path: Path | str | None = None) -> Params:
    path = Path(path) if path else config.params_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse(raw)
