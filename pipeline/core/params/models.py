"""``models.<name>``: a preset (family, dataset, arch, train) or an ensemble of presets,
and the checks of an architecture that params and every family's builder share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Tag,
    field_validator,
    model_validator,
)

from pipeline.core.geometry import conv_output
from pipeline.core.params._base import LIST, ParamsError, Schema, within

if TYPE_CHECKING:
    from pipeline.core.params import Params


class ConvSpec(Schema):
    type: Literal["conv"] = "conv"
    filters: PositiveInt
    kernel: PositiveInt = 3
    stride: PositiveInt = 1
    padding: Literal["valid", "same"] = "valid"
    batch_norm: bool = False
    activation: Literal["relu", "linear"] = "relu"
    l2: NonNegativeFloat = 0.0  # kernel L2 penalty (custom family adds it through layer losses)
    activation_before_bn: bool = False  # conv -> act -> BN (as seed 004), else conv -> BN -> act


class PoolSpec(Schema):
    type: Literal["pool"] = "pool"
    size: PositiveInt = 2
    stride: PositiveInt | None = None  # None: equal to size
    padding: Literal["valid", "same"] = "valid"


class FlattenSpec(Schema):
    type: Literal["flatten"] = "flatten"


class DenseSpec(Schema):
    type: Literal["dense"] = "dense"
    units: PositiveInt
    batch_norm: bool = False
    activation: Literal["relu", "softmax", "linear"] = "relu"
    activation_before_bn: bool = False  # dense -> activation -> BN, else dense -> BN -> act


class DropoutSpec(Schema):
    type: Literal["dropout"] = "dropout"
    rate: Annotated[float, within("[0, 1)")]


class CubicSpec(Schema):
    """CubicDense: ``x**3 @ V - x @ W + b``."""

    type: Literal["cubic"] = "cubic"
    units: PositiveInt


_SPECS = (ConvSpec, PoolSpec, FlattenSpec, DenseSpec, DropoutSpec, CubicSpec)
LayerSpec = Annotated[
    ConvSpec | PoolSpec | FlattenSpec | DenseSpec | DropoutSpec | CubicSpec,
    Field(discriminator="type"),
]
LAYER_TYPES: dict[str, type[Schema]] = {c.model_fields["type"].default: c for c in _SPECS}


class AugmentParams(Schema):
    """Random rotation and shift, shared by every family (pipeline.data.augment)."""

    rotation: Annotated[float, within("[0, 180]")] = 10.0  # degrees, uniform in [-rot, rot]
    shift: Annotated[float, within("[0, 0.5)")] = 0.1  # share of the side, uniform in [-s, s]


class EarlyStoppingParams(Schema):
    patience: int = 10
    min_delta: float = 0.0


class ReduceLRParams(Schema):
    factor: Annotated[float, within("(0, 1)")] = 0.2
    patience: int = 3
    min_lr: float = 1e-5


class LRScheduleParams(Schema):
    """Learning rate as a function of the step (pipeline/models/schedule.py); the peak is
    ``train.learning_rate``. warmup_cosine: linear from 0 to the peak over warmup_epochs,
    then cosine down to final_lr. one_cycle: cosine from peak/25 up to the peak over
    warmup_epochs, then cosine down to final_lr. exponential: peak * decay_rate**epochs."""

    kind: Literal["warmup_cosine", "one_cycle", "exponential"]
    warmup_epochs: NonNegativeFloat = 1.0
    final_lr: NonNegativeFloat = 0.0
    decay_rate: Annotated[float, within("(0, 1]")] = 0.5  # exponential: factor an epoch


class TrainParams(Schema):
    epochs: PositiveInt
    batch_size: PositiveInt
    optimizer: Literal["sgd", "momentum", "adam"] = "adam"
    learning_rate: PositiveFloat = 0.001
    momentum: Annotated[float, within("[0, 1)")] = 0.9  # used by the momentum optimizer
    weight_decay: NonNegativeFloat = 0.0  # L2 weight decay added by the optimizer
    shuffle: bool = True
    augment: AugmentParams | None = None
    early_stopping: EarlyStoppingParams | None = None
    reduce_lr: ReduceLRParams | None = None
    checkpoint: bool = False  # keep the best model (by validation loss) in models/<model>/
    lr_schedule: LRScheduleParams | None = None  # per-step schedule; excludes reduce_lr
    # Training targets (1 - e) * one-hot + e / classes (every family); 0: plain labels.
    label_smoothing: Annotated[float, within("[0, 1)")] = 0.0
    # Validation, early stopping, the checkpoint and the saved model use the moving average
    # of the weights with this momentum (Keras optimizers' use_ema); None: the raw weights.
    ema: Annotated[float, within("(0, 1)")] | None = None

    @model_validator(mode="after")
    def _one_lr_policy(self) -> TrainParams:
        if self.lr_schedule is not None and self.reduce_lr is not None:
            raise ValueError("lr_schedule: cannot be combined with reduce_lr")
        return self


class ModelParams(Schema):
    family: Literal["scratch", "keras", "custom"]
    dataset: str
    arch: Annotated[tuple[LayerSpec, ...], LIST]
    train: TrainParams

    @model_validator(mode="after")
    def _ema_needs_keras(self) -> ModelParams:
        if self.train.ema is not None and self.family == "scratch":
            raise ValueError("train.ema: the scratch family has no weight average (keras, custom)")
        return self


class TtaParams(Schema):
    """Test-time augmentation of an ensemble: the image and its shifts by 1..``shifts``
    pixels up, down, left and right (4 views a step, zero-filled), probabilities averaged."""

    shifts: Annotated[int, Field(ge=0, le=3)] = 1


class EnsembleParams(Schema):
    """``family: ensemble``: the class probabilities of trained presets (``members``, one
    dataset), averaged with equal weights (``mean``) or weights fitted on the validation split
    (``val``: softmax weights minimising the validation log-loss; never the test split)."""

    family: Literal["ensemble"]
    dataset: str  # the members' dataset (dvc.yaml's train@/evaluate@ read it like any model's)
    members: Annotated[tuple[str, ...], LIST]
    weights: Literal["mean", "val"] = "mean"
    tta: TtaParams | None = None

    @field_validator("members")
    @classmethod
    def _members(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2:
            raise ValueError(f"list at least two presets, got {list(v)}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate members in {list(v)}")
        return v


def _model_kind(raw: Any) -> str:
    """The union tag of ``models.<name>``: ensemble or preset."""
    family = raw.get("family") if isinstance(raw, Mapping) else getattr(raw, "family", None)
    return "ensemble" if family == "ensemble" else "preset"


AnyModelParams = Annotated[
    Annotated[ModelParams, Tag("preset")] | Annotated[EnsembleParams, Tag("ensemble")],
    Discriminator(_model_kind),
]


def check_ensemble(params: Params, name: str, ens: EnsembleParams) -> None:
    """Members are presets of ``models`` (not ensembles) on the ensemble's dataset, listed
    before it: DVC runs the train@ stages in that order (dvc.yaml cannot list an ensemble's
    members as deps of its train@; docs/decisions/0005-ensemble-stage-deps.md)."""
    order = list(params.models)
    for i, member in enumerate(ens.members):
        where = f"models.{name}.members[{i}]"
        m = params.models.get(member)
        if m is None:
            presets = ", ".join(k for k, v in params.models.items() if v.family != "ensemble")
            raise ParamsError(f"{where}: {member!r} is not a model (known: {presets})")
        if isinstance(m, EnsembleParams):
            raise ParamsError(f"{where}: {member!r} is an ensemble; members must be presets")
        if order.index(member) > order.index(name):
            raise ParamsError(f"{where}: {member!r} must come before {name!r} in models")
        if m.dataset != ens.dataset:
            raise ParamsError(
                f"{where}: {member!r} is trained on {m.dataset!r}, the ensemble on "
                f"{ens.dataset!r} (members share one dataset)"
            )


def check_arch(
    arch: Sequence[LayerSpec],
    n_classes: int | None = None,
    where: str = "arch",
    family: str | None = None,
    source: str = "the dataset",
) -> None:
    """The one check of an architecture's shape, for params and for every family's builder:
    at least one layer, a softmax dense layer last and only there, one unit a class,
    cubic layers only in the custom family."""
    if not arch:
        raise ParamsError(f"{where}: must list at least one layer")
    i = len(arch) - 1
    last = arch[i]
    if not isinstance(last, DenseSpec) or last.activation != "softmax":
        raise ParamsError(f"{where}[{i}]: the last layer must be a softmax dense layer")
    if n_classes is not None and last.units != n_classes:
        raise ParamsError(
            f"{where}[{i}].units: {last.units} units but {source} has {n_classes} classes"
        )
    for j, layer in enumerate(arch[:-1]):
        if isinstance(layer, DenseSpec) and layer.activation == "softmax":
            raise ParamsError(f"{where}[{j}]: softmax is only allowed on the last layer")
        if isinstance(layer, CubicSpec) and family not in (None, "custom"):
            raise ParamsError(f"{where}[{j}]: cubic layers need family custom")


def check_shapes(arch: Sequence[LayerSpec], image_shape: Sequence[int], where: str) -> None:
    """Follow the image size through the conv and pool layers: a window larger than its
    input is refused here, naming the key, before any stage opens an MLflow run or
    builds a model (Keras' own message names neither the layer nor the key)."""
    h, w = image_shape[0], image_shape[1]
    for i, layer in enumerate(arch):
        if isinstance(layer, ConvSpec | PoolSpec):
            key, size = (
                ("kernel", layer.kernel) if isinstance(layer, ConvSpec) else ("size", layer.size)
            )
            stride = layer.stride or size
            ho = conv_output(h, size, stride, layer.padding)
            wo = conv_output(w, size, stride, layer.padding)
            if not (ho and wo):  # 'valid' and the window is larger than its input
                raise ParamsError(
                    f"{where}[{i}].{key}: {size} is larger than the layer's {h}x{w} input "
                    f"(the {image_shape[0]}x{image_shape[1]} images after layers 0..{i - 1})"
                    if i
                    else f"{where}[{i}].{key}: {size} is larger than the {h}x{w} images"
                )
            h, w = ho, wo
        elif isinstance(layer, FlattenSpec | DenseSpec | CubicSpec):
            return
