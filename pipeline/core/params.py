"""params.yaml parsed once into typed, frozen pydantic models.

The schema is the models below: strict types (``"42"`` is not an integer), unknown keys
rejected, ranges as field constraints, cross-field checks (a model's dataset exists, the
output layer has one unit a class) in the validator of ``Params``. The first problem is
reported as one line starting with its full key path
(``datasets.digits10.trian_size: unknown key``) before any stage does work.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.core import config
from pipeline.core.geometry import conv_output


class ParamsError(ValueError):
    """A params.yaml problem; the message starts with the key path."""


class _Model(BaseModel):
    """Frozen, strict (no string-to-number coercion), unknown keys rejected, finite floats
    only (``.inf`` and ``.nan`` refused everywhere)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


def _in(interval: str) -> AfterValidator:
    """A number within ``interval``, written as in maths: ``"[0, 1)"`` excludes 1."""
    lo, hi = (float(x) for x in interval[1:-1].split(","))

    def check(v: float) -> float:
        above = lo < v if interval[0] == "(" else lo <= v
        below = v < hi if interval[-1] == ")" else v <= hi
        if not (above and below):
            raise ValueError(f"must be in {interval}, got {v}")
        return v

    return AfterValidator(check)


_LIST = Field(strict=False)  # a YAML list becomes a tuple; its items stay strict
_FROZEN = AfterValidator(MappingProxyType)  # read-only mappings

# --------------------------------------------------------------------------- data


class FetchParams(_Model):
    timeout: float = 30.0  # seconds per HTTP request
    retries: int = 2  # extra attempts per mirror and file


class DataParams(_Model):
    source: Literal["mnist", "fashion_mnist", "idx_dir"] = "mnist"
    idx_dir: str | None = None
    fetch: FetchParams = Field(default_factory=FetchParams)


class ShareBounds(_Model):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> ShareBounds:
        if not 0 <= self.min <= self.max <= 1:
            raise ValueError(f"need 0 <= min <= max <= 1, got {self.min}, {self.max}")
        return self


class RowBounds(_Model):
    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> RowBounds:
        if not 0 <= self.min <= self.max:
            raise ValueError(f"need 0 <= min <= max, got {self.min}, {self.max}")
        return self


class ValidateParams(_Model):
    """Thresholds of the Great Expectations suite."""

    rows: Annotated[Mapping[Literal["train", "test"], RowBounds], _FROZEN] = Field(
        {"train": {"min": 60000, "max": 60000}, "test": {"min": 10000, "max": 10000}},
        validate_default=True,
    )
    labels: Annotated[tuple[int, ...], _LIST] = tuple(range(10))
    pixel_min: int = 0
    pixel_max: int = 255
    class_share: ShareBounds = ShareBounds(min=0.05, max=0.15)
    min_nonzero_pixels: int = 1  # an image with fewer ink pixels counts as blank
    max_train_test_overlap: Annotated[float, _in("[0, 1]")] = 0.001  # test images in train
    image_shape: Annotated[tuple[int, int], _LIST] = (28, 28)


class DatasetParams(_Model):
    classes: Annotated[tuple[int, ...], _LIST]
    train_size: PositiveInt | None = None
    val_fraction: Annotated[float, _in("(0, 1)")] = 0.1

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) < 2:
            raise ValueError(f"must list at least two classes, got {list(v)}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate classes in {list(v)}")
        if bad := [c for c in v if not 0 <= c <= 9]:
            raise ValueError(f"{bad} out of range 0..9")
        return v


# --------------------------------------------------------------------------- models


class ConvSpec(_Model):
    type: Literal["conv"] = "conv"
    filters: PositiveInt
    kernel: PositiveInt = 3
    stride: PositiveInt = 1
    padding: Literal["valid", "same"] = "valid"
    batch_norm: bool = False
    activation: Literal["relu", "linear"] = "relu"
    l2: NonNegativeFloat = 0.0  # kernel L2 penalty (custom family adds it through layer losses)
    activation_before_bn: bool = False  # conv -> act -> BN (as seed 004), else conv -> BN -> act


class PoolSpec(_Model):
    type: Literal["pool"] = "pool"
    size: PositiveInt = 2
    stride: PositiveInt | None = None  # None: equal to size
    padding: Literal["valid", "same"] = "valid"


class FlattenSpec(_Model):
    type: Literal["flatten"] = "flatten"


class DenseSpec(_Model):
    type: Literal["dense"] = "dense"
    units: PositiveInt
    batch_norm: bool = False
    activation: Literal["relu", "softmax", "linear"] = "relu"
    activation_before_bn: bool = False  # dense -> activation -> BN, else dense -> BN -> act


class DropoutSpec(_Model):
    type: Literal["dropout"] = "dropout"
    rate: Annotated[float, _in("[0, 1)")]


class CubicSpec(_Model):
    """CubicDense: ``x**3 @ V - x @ W + b``."""

    type: Literal["cubic"] = "cubic"
    units: PositiveInt


_SPECS = (ConvSpec, PoolSpec, FlattenSpec, DenseSpec, DropoutSpec, CubicSpec)
LayerSpec = Annotated[
    ConvSpec | PoolSpec | FlattenSpec | DenseSpec | DropoutSpec | CubicSpec,
    Field(discriminator="type"),
]
LAYER_TYPES: dict[str, type[_Model]] = {c.model_fields["type"].default: c for c in _SPECS}


class AugmentParams(_Model):
    """Random rotation and shift, shared by every family (pipeline.data.augment)."""

    rotation: Annotated[float, _in("[0, 180]")] = 10.0  # degrees, uniform in [-rot, rot]
    shift: Annotated[float, _in("[0, 0.5)")] = 0.1  # share of the side, uniform in [-s, s]


class EarlyStoppingParams(_Model):
    patience: int = 10
    min_delta: float = 0.0


class ReduceLRParams(_Model):
    factor: Annotated[float, _in("(0, 1)")] = 0.2
    patience: int = 3
    min_lr: float = 1e-5


class LRScheduleParams(_Model):
    """Learning rate as a function of the step (pipeline/models/schedule.py); the peak is
    ``train.learning_rate``. warmup_cosine: linear from 0 to the peak over warmup_epochs,
    then cosine down to final_lr. one_cycle: cosine from peak/25 up to the peak over
    warmup_epochs, then cosine down to final_lr. exponential: peak * decay_rate**epochs."""

    kind: Literal["warmup_cosine", "one_cycle", "exponential"]
    warmup_epochs: NonNegativeFloat = 1.0
    final_lr: NonNegativeFloat = 0.0
    decay_rate: Annotated[float, _in("(0, 1]")] = 0.5  # exponential: factor an epoch


class TrainParams(_Model):
    epochs: PositiveInt
    batch_size: PositiveInt
    optimizer: Literal["sgd", "momentum", "adam"] = "adam"
    learning_rate: PositiveFloat = 0.001
    momentum: Annotated[float, _in("[0, 1)")] = 0.9  # used by the momentum optimizer
    weight_decay: NonNegativeFloat = 0.0  # L2 weight decay added by the optimizer
    shuffle: bool = True
    augment: AugmentParams | None = None
    early_stopping: EarlyStoppingParams | None = None
    reduce_lr: ReduceLRParams | None = None
    checkpoint: bool = False  # keep the best model (by validation loss) in models/<model>/
    lr_schedule: LRScheduleParams | None = None  # per-step schedule; excludes reduce_lr
    # Training targets (1 - e) * one-hot + e / classes (every family); 0: plain labels.
    label_smoothing: Annotated[float, _in("[0, 1)")] = 0.0
    # Validation, early stopping, the checkpoint and the saved model use the moving average
    # of the weights with this momentum (Keras optimizers' use_ema); None: the raw weights.
    ema: Annotated[float, _in("(0, 1)")] | None = None

    @model_validator(mode="after")
    def _one_lr_policy(self) -> TrainParams:
        if self.lr_schedule is not None and self.reduce_lr is not None:
            raise ValueError("lr_schedule: cannot be combined with reduce_lr")
        return self


class ModelParams(_Model):
    family: Literal["scratch", "keras", "custom"]
    dataset: str
    arch: Annotated[tuple[LayerSpec, ...], _LIST]
    train: TrainParams

    @model_validator(mode="after")
    def _ema_needs_keras(self) -> ModelParams:
        if self.train.ema is not None and self.family == "scratch":
            raise ValueError("train.ema: the scratch family has no weight average (keras, custom)")
        return self


class TtaParams(_Model):
    """Test-time augmentation of an ensemble: the image and its shifts by 1..``shifts``
    pixels up, down, left and right (4 views a step, zero-filled), probabilities averaged."""

    shifts: Annotated[int, Field(ge=0, le=3)] = 1


class EnsembleParams(_Model):
    """``family: ensemble``: the class probabilities of trained presets (``members``, one
    dataset), averaged with equal weights (``mean``) or weights fitted on the validation split
    (``val``: softmax weights minimising the validation log-loss; never the test split)."""

    family: Literal["ensemble"]
    dataset: str  # the members' dataset (dvc.yaml's train@/evaluate@ read it like any model's)
    members: Annotated[tuple[str, ...], _LIST]
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


class MlflowParams(_Model):
    experiment: str = "mnist"


class PlotParams(_Model):
    """Cross-model figures of the plot stage (plots/compare/)."""

    compare_curves: Annotated[tuple[str, ...], _LIST] = ("cubic_mlp", "dense_mlp")  # overlaid


class RegistryParams(_Model):
    """The promotion gate (pipeline/tracking/gate.py): ``champion`` moves to a new version only
    when McNemar's one-sided p < ``alpha`` and no class's recall drops by more than
    ``max_class_drop`` percentage points."""

    alpha: Annotated[float, _in("(0, 1)")] = 0.05
    max_class_drop: NonNegativeFloat = 0.5


# --------------------------------------------------------------------------- sweeps


class SweepDist(_Model):
    """One dimension of a sweep's space; exactly one key: ``loguniform: [lo, hi]``,
    ``uniform: [lo, hi]``, ``randint: [lo, hi)`` (hi excluded) or ``choice: [values]``."""

    loguniform: Annotated[tuple[PositiveFloat, PositiveFloat], _LIST] | None = None
    uniform: Annotated[tuple[float, float], _LIST] | None = None
    randint: Annotated[tuple[int, int], _LIST] | None = None
    choice: Annotated[tuple[int | float | str | bool, ...], _LIST] | None = None

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


class AshaParams(_Model):
    """ASHA early stopping (Ray Tune's ASHAScheduler; max_t is the preset's epochs)."""

    grace_period: PositiveInt = 1  # epochs every trial gets
    reduction_factor: Annotated[int, Field(ge=2)] = 2


class SweepParams(_Model):
    """``sweeps.<name>``: a search over ``space`` (dotted keys of the preset's arch/train)."""

    model: str  # a preset of ``models``: its arch/train are the base
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"  # validation, never test
    mode: Literal["max", "min"] = "max"
    trials: PositiveInt = 16
    cpus_per_trial: PositiveInt = 1
    max_concurrent: PositiveInt | None = None  # None: the cluster's CPUs // cpus_per_trial
    seed: int = 0  # the search's seed; trial i trains with a seed from (seed, i)
    asha: AshaParams | None = Field(default_factory=AshaParams)  # null: no early stopping
    space: Annotated[Mapping[str, SweepDist], _FROZEN]

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
        raise ParamsError(_message(exc.errors()[0])) from None
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


# The key "validate" shadows the deprecated pydantic v1 method BaseModel.validate, unused here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"Field name \"validate\"", UserWarning)

    class Params(_Model):
        seed: int
        data: DataParams
        datasets: Annotated[Mapping[str, DatasetParams], _FROZEN]
        models: Annotated[Mapping[str, AnyModelParams], _FROZEN]
        validate: ValidateParams = Field(default_factory=ValidateParams)
        mlflow: MlflowParams = Field(default_factory=MlflowParams)
        plot: PlotParams = Field(default_factory=PlotParams)
        registry: RegistryParams = Field(default_factory=RegistryParams)
        sweeps: Annotated[Mapping[str, SweepParams], _FROZEN] = Field({}, validate_default=True)

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


# --------------------------------------------------------------------------- errors

_EXPECTED = {  # pydantic error type -> what the key should have held
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _key_path(loc: tuple[int | str, ...]) -> str:
    """``('models', 'x', 'arch', 3, 'conv', 'units')`` -> ``models.x.arch[3].units``
    (pydantic puts the layer's tag after its index; the key path has none)."""
    path = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif i == 2 and loc[0] == "models" and part in ("preset", "ensemble"):
            continue  # the tag of models.<name> (a preset or an ensemble)
        elif part != "[key]" and not (i and isinstance(loc[i - 1], int) and part in LAYER_TYPES):
            path += f".{part}" if path else str(part)
    return path


def _message(err: Any) -> str:
    """One line for one pydantic error, in the words params.yaml users see."""
    path, kind, value, ctx = _key_path(err["loc"]), err["type"], err["input"], err.get("ctx", {})
    match kind:
        case "value_error":  # our validators: "msg", or "subkey: msg" for a key below path
            msg = str(ctx["error"])
            if path and re.match(r"^[a-z_]+: ", msg):
                return f"{path}.{msg}"
            return f"{path}: {msg}" if path else msg
        case _ if kind in _EXPECTED and value is None:
            what = "must not be null"
        case _ if kind in _EXPECTED:
            what = f"expected {_EXPECTED[kind]}, got {value!r}"
        case "extra_forbidden":
            what = "unknown key"
        case "missing":
            what = "missing item" if isinstance(err["loc"][-1], int) else "missing required key"
        case "too_long":
            what = f"expected at most {ctx['max_length']} items, got {len(value)}"
        case "literal_error":
            what = f"{value!r} is not one of {ctx['expected']}"
        case "greater_than":
            what = f"must be > {ctx['gt']}, got {value}"
        case "greater_than_equal":
            what = f"must be >= {ctx['ge']}, got {value}"
        case "union_tag_not_found":
            what = "a layer is a mapping with a 'type' key"
        case "union_tag_invalid":
            path, what = f"{path}.type", f"{ctx['tag']!r} is not one of {ctx['expected_tags']}"
        case _:
            what = err["msg"]  # pydantic's own words, still after the key path
    return f"{path}: {what}"


def parse(raw: Any) -> Params:
    """Parse a params mapping (as loaded from YAML); raise ParamsError naming the key."""
    if not isinstance(raw, Mapping):
        raise ParamsError("params: the file must hold a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_message(exc.errors()[0])) from None


def load(path: Path | str | None = None) -> Params:
    path = Path(path) if path else config.params_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse(raw)


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
