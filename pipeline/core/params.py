"""params.yaml parsed once into typed, frozen objects.

The schema is the dataclasses below; one generic parser walks them by their type hints, so
an unknown key, a missing key, a wrong type or a value out of range is reported with its
full key path (``datasets.digits10.trian_size: unknown key``) before any stage does work.
Cross-field checks (a model's dataset exists, the output layer has one unit a class) run
after the structure is parsed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from pipeline.core import config


class ParamsError(ValueError):
    """A params.yaml problem; the message starts with the key path."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class FetchParams:
    timeout: float = 30.0  # seconds per HTTP request
    retries: int = 2  # extra attempts per mirror and file


@dataclass(frozen=True)
class DataParams:
    source: Literal["mnist", "fashion_mnist", "idx_dir"] = "mnist"
    idx_dir: str | None = None
    fetch: FetchParams = field(default_factory=FetchParams)


@dataclass(frozen=True)
class ShareBounds:
    min: float
    max: float


@dataclass(frozen=True)
class RowBounds:
    min: int
    max: int


@dataclass(frozen=True)
class ValidateParams:
    """Thresholds of the Great Expectations suite."""

    rows: Mapping[str, RowBounds] = field(
        default_factory=lambda: {
            "train": RowBounds(60000, 60000),
            "test": RowBounds(10000, 10000),
        }
    )
    labels: tuple[int, ...] = tuple(range(10))
    pixel_min: int = 0
    pixel_max: int = 255
    class_share: ShareBounds = field(default_factory=lambda: ShareBounds(0.05, 0.15))
    min_nonzero_pixels: int = 1  # an image with fewer ink pixels counts as blank
    max_train_test_overlap: float = 0.001  # share of test images also found in train
    image_shape: tuple[int, int] = (28, 28)


@dataclass(frozen=True)
class DatasetParams:
    classes: tuple[int, ...]
    train_size: int | None = None
    val_fraction: float = 0.1


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ConvSpec:
    type: Literal["conv"]
    filters: int
    kernel: int = 3
    stride: int = 1
    padding: Literal["valid", "same"] = "valid"
    batch_norm: bool = False
    activation: Literal["relu", "linear"] = "relu"
    l2: float = 0.0  # kernel L2 penalty (custom family adds it through layer losses)
    activation_before_bn: bool = False  # conv -> act -> BN (as seed 004), else conv -> BN -> act


@dataclass(frozen=True)
class PoolSpec:
    type: Literal["pool"]
    size: int = 2
    stride: int | None = None  # None: equal to size
    padding: Literal["valid", "same"] = "valid"


@dataclass(frozen=True)
class FlattenSpec:
    type: Literal["flatten"]


@dataclass(frozen=True)
class DenseSpec:
    type: Literal["dense"]
    units: int
    batch_norm: bool = False
    activation: Literal["relu", "softmax", "linear"] = "relu"
    activation_before_bn: bool = False  # dense -> activation -> BN, else dense -> BN -> act


@dataclass(frozen=True)
class DropoutSpec:
    type: Literal["dropout"]
    rate: float


@dataclass(frozen=True)
class CubicSpec:
    """CubicDense: ``x**3 @ V - x @ W + b``."""

    type: Literal["cubic"]
    units: int


LayerSpec = ConvSpec | PoolSpec | FlattenSpec | DenseSpec | DropoutSpec | CubicSpec
LAYER_TYPES: dict[str, type] = {
    "conv": ConvSpec,
    "pool": PoolSpec,
    "flatten": FlattenSpec,
    "dense": DenseSpec,
    "dropout": DropoutSpec,
    "cubic": CubicSpec,
}


@dataclass(frozen=True)
class AugmentParams:
    """Random rotation and shift, shared by every family (pipeline.core.augment)."""

    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]
    shift: float = 0.1  # fraction of the image side, uniform in [-shift, shift]


@dataclass(frozen=True)
class EarlyStoppingParams:
    patience: int = 10
    min_delta: float = 0.0


@dataclass(frozen=True)
class ReduceLRParams:
    factor: float = 0.2
    patience: int = 3
    min_lr: float = 1e-5


@dataclass(frozen=True)
class LRScheduleParams:
    """Learning rate as a function of the step (pipeline.models.lr_schedule); peak is
    ``train.learning_rate``. warmup_cosine: linear from 0 to the peak over warmup_epochs,
    then cosine down to final_lr. one_cycle: cosine from peak/25 up to the peak over
    warmup_epochs, then cosine down to final_lr. exponential: peak * decay_rate**epochs."""

    kind: Literal["warmup_cosine", "one_cycle", "exponential"]
    warmup_epochs: float = 1.0
    final_lr: float = 0.0
    decay_rate: float = 0.5  # exponential: factor an epoch


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    optimizer: Literal["sgd", "momentum", "adam"] = "adam"
    learning_rate: float = 0.001
    momentum: float = 0.9  # used by the momentum optimizer
    weight_decay: float = 0.0  # L2 weight decay added by the optimizer
    shuffle: bool = True
    augment: AugmentParams | None = None
    early_stopping: EarlyStoppingParams | None = None
    reduce_lr: ReduceLRParams | None = None
    checkpoint: bool = False  # keep the best model (by validation loss) in models/<model>/
    lr_schedule: LRScheduleParams | None = None  # per-step schedule; excludes reduce_lr


@dataclass(frozen=True)
class ModelParams:
    family: Literal["scratch", "keras", "custom"]
    dataset: str
    arch: tuple[LayerSpec, ...]
    train: TrainParams


@dataclass(frozen=True)
class MlflowParams:
    experiment: str = "mnist"


@dataclass(frozen=True)
class PlotParams:
    """Cross-model figures of the plot stage (plots/compare/)."""

    compare_curves: tuple[str, ...] = ("cubic_mlp", "dense_mlp")  # validation curves overlaid


@dataclass(frozen=True)
class Params:
    seed: int
    data: DataParams
    datasets: Mapping[str, DatasetParams]
    models: Mapping[str, ModelParams]
    validate: ValidateParams = field(default_factory=ValidateParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)
    plot: PlotParams = field(default_factory=PlotParams)

    def dataset_of(self, model: str) -> DatasetParams:
        return self.datasets[self.models[model].dataset]


# --------------------------------------------------------------------------- parser


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "list"
    if origin is Mapping or tp is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _parse(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{path}: {value!r} is not one of {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ParamsError(f"{path}: must not be null")
        if tp == LayerSpec:
            return _parse_layer(value, path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse(arg, value, path)
            except ParamsError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ParamsError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(tp, value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ParamsError(f"{path}: expected a list of {len(args)} items, got {len(value)}")
        return tuple(
            _parse(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise ParamsError(f"{path}: expected a mapping, got {type(value).__name__}")
        return types.MappingProxyType(
            {str(k): _parse(args[1], v, f"{path}.{k}") for k, v in value.items()}
        )
    if value is None:
        raise ParamsError(f"{path}: must not be null")
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported schema type {tp!r} at {path}")  # a bug in the schema


def _parse_layer(value: Any, path: str) -> Any:
    if not isinstance(value, Mapping) or "type" not in value:
        raise ParamsError(f"{path}: a layer is a mapping with a 'type' key")
    kind = value["type"]
    if kind not in LAYER_TYPES:
        raise ParamsError(f"{path}.type: {kind!r} is not one of {', '.join(LAYER_TYPES)}")
    return _parse_dataclass(LAYER_TYPES[kind], value, path)


def _parse_dataclass(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise ParamsError(f"{path or 'params'}: expected a mapping, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            raise ParamsError(f"{_join(path, key)}: unknown key")
    kwargs = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in value:
            kwargs[name] = _parse(hints[name], value[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{key_path}: missing required key")
    obj = cls(**kwargs)
    _check_ranges(obj, path)
    return obj


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _positive(path: str, **values: float | None) -> None:
    for name, v in values.items():
        if v is not None and v <= 0:
            raise ParamsError(f"{_join(path, name)}: must be > 0, got {v}")


def _check_ranges(obj: Any, path: str) -> None:
    """Ranges of single fields; cross-field checks are in ``_check_links``."""
    if isinstance(obj, DatasetParams):
        if not obj.classes:
            raise ParamsError(f"{path}.classes: must list at least two classes, got []")
        if len(obj.classes) < 2:
            raise ParamsError(f"{path}.classes: must list at least two classes")
        if len(set(obj.classes)) != len(obj.classes):
            raise ParamsError(f"{path}.classes: duplicate classes in {list(obj.classes)}")
        bad = [c for c in obj.classes if not 0 <= c <= 9]
        if bad:
            raise ParamsError(f"{path}.classes: {bad} out of range 0..9")
        if not 0 < obj.val_fraction < 1:
            raise ParamsError(f"{path}.val_fraction: must be in (0, 1), got {obj.val_fraction}")
        _positive(path, train_size=obj.train_size)
    elif isinstance(obj, TrainParams):
        _positive(
            path, epochs=obj.epochs, batch_size=obj.batch_size, learning_rate=obj.learning_rate
        )
        if obj.weight_decay < 0:
            raise ParamsError(f"{path}.weight_decay: must be >= 0")
        if not 0 <= obj.momentum < 1:
            raise ParamsError(f"{path}.momentum: must be in [0, 1), got {obj.momentum}")
        if obj.lr_schedule is not None and obj.reduce_lr is not None:
            raise ParamsError(f"{path}.lr_schedule: cannot be combined with reduce_lr")
    elif isinstance(obj, LRScheduleParams):
        if obj.warmup_epochs < 0:
            raise ParamsError(f"{path}.warmup_epochs: must be >= 0, got {obj.warmup_epochs}")
        if obj.final_lr < 0:
            raise ParamsError(f"{path}.final_lr: must be >= 0, got {obj.final_lr}")
        if not 0 < obj.decay_rate <= 1:
            raise ParamsError(f"{path}.decay_rate: must be in (0, 1], got {obj.decay_rate}")
    elif isinstance(obj, ConvSpec):
        _positive(path, filters=obj.filters, kernel=obj.kernel, stride=obj.stride)
        if obj.l2 < 0:
            raise ParamsError(f"{path}.l2: must be >= 0")
    elif isinstance(obj, PoolSpec):
        _positive(path, size=obj.size, stride=obj.stride)
    elif isinstance(obj, DenseSpec | CubicSpec):
        _positive(path, units=obj.units)
    elif isinstance(obj, DropoutSpec):
        if not 0 <= obj.rate < 1:
            raise ParamsError(f"{path}.rate: must be in [0, 1), got {obj.rate}")
    elif isinstance(obj, AugmentParams):
        if not 0 <= obj.rotation <= 180:
            raise ParamsError(f"{path}.rotation: must be in [0, 180] degrees")
        if not 0 <= obj.shift < 0.5:
            raise ParamsError(f"{path}.shift: must be in [0, 0.5)")
    elif isinstance(obj, ReduceLRParams):
        if not 0 < obj.factor < 1:
            raise ParamsError(f"{path}.factor: must be in (0, 1), got {obj.factor}")
    elif isinstance(obj, ShareBounds):
        if not 0 <= obj.min <= obj.max <= 1:
            raise ParamsError(f"{path}: need 0 <= min <= max <= 1, got {obj.min}, {obj.max}")
    elif isinstance(obj, RowBounds):
        if not 0 <= obj.min <= obj.max:
            raise ParamsError(f"{path}: need 0 <= min <= max, got {obj.min}, {obj.max}")
    elif isinstance(obj, ValidateParams):
        if not 0 <= obj.max_train_test_overlap <= 1:
            raise ParamsError(f"{path}.max_train_test_overlap: must be in [0, 1]")
        for split in obj.rows:
            if split not in ("train", "test"):
                raise ParamsError(f"{path}.rows.{split}: unknown split (train or test)")


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


def _check_links(p: Params) -> None:
    if p.data.source == "idx_dir" and not p.data.idx_dir:
        raise ParamsError("data.idx_dir: required when data.source is idx_dir")
    if not p.datasets:
        raise ParamsError("datasets: define at least one dataset")
    for name, m in p.models.items():
        where = f"models.{name}"
        if m.dataset not in p.datasets:
            known = ", ".join(p.datasets)
            raise ParamsError(f"{where}.dataset: {m.dataset!r} is not a dataset (known: {known})")
        n_classes = len(p.datasets[m.dataset].classes)
        check_arch(m.arch, n_classes, f"{where}.arch", m.family, f"dataset {m.dataset!r}")

    for i, name in enumerate(p.plot.compare_curves):
        if name not in p.models:
            raise ParamsError(f"plot.compare_curves[{i}]: {name!r} is not a model")


def parse(raw: Any) -> Params:
    """Parse a params mapping (as loaded from YAML); raise ParamsError naming the key."""
    if not isinstance(raw, Mapping):
        raise ParamsError("params: the file must hold a mapping at the top level")
    p = _parse_dataclass(Params, raw, "")
    _check_links(p)
    return p


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
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.learning_rate": 0.001, "arch.0.filters": 32, ...}`` for MLflow params."""
    d = to_dict(obj)
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = d
    return out
