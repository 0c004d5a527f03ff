"""A network built from the architecture spec of params.yaml (docs/architecture.md, "One
architecture spec, three backends"), with one flat parameter vector and one flat gradient vector.

Spec to layers: ``conv`` is Conv2D [+ BatchNorm] [+ ReLU], ``dense`` is Dense [+ BatchNorm]
[+ ReLU] (ReLU before BatchNorm with ``activation_before_bn``), ``pool`` is MaxPool2D,
``flatten`` and ``dropout`` are themselves. A layer followed directly by batch norm has no
bias (the norm's beta takes its place). The softmax of the last dense
layer is fused with the loss, so ``forward`` returns logits.

Every parameter array is a view into ``flat_params`` (gradients into ``flat_grads``), so an
optimizer step is a few vector operations over the whole model, and ``replica()`` makes a
second set of layers that shares the parameters but has its own caches and gradients: the
training loop runs one half of a batch on each of two threads.
"""

from __future__ import annotations

import copy
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.io import BadModelFile, atomic_save
from pipeline.core.params import (
    LAYER_TYPES,
    ConvSpec,
    DenseSpec,
    DropoutSpec,
    FlattenSpec,
    LayerSpec,
    PoolSpec,
    check_arch,
    to_dict,
)
from pipeline.models.numpy_cnn.fused import ConvReLUPool
from pipeline.models.numpy_cnn.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    ReLU,
    softmax,
    softmax_cross_entropy,
)

ARCH_KEY = "__arch__"
INPUT_SHAPE_KEY = "__input_shape__"


def _fusable(conv: LayerSpec, pool: LayerSpec | None) -> bool:
    """A conv with bias and ReLU followed by a pool whose windows tile its output."""
    return (
        isinstance(conv, ConvSpec)
        and isinstance(pool, PoolSpec)
        and not conv.batch_norm
        and conv.activation == "relu"
        and pool.padding == "valid"
        and (pool.stride is None or pool.stride == pool.size)
    )


def _has_bias(spec: ConvSpec | DenseSpec) -> bool:
    """A bias right before batch norm is redundant (beta shifts the same way); before an
    activation it is not."""
    return not spec.batch_norm or spec.activation_before_bn


def _norm_and_activation(spec: ConvSpec | DenseSpec, base: str, dtype) -> list[Layer]:
    """``[BatchNorm] [ReLU]``, or ``[ReLU] [BatchNorm]`` with ``activation_before_bn``."""
    norm = [BatchNorm(f"{base}_bn", dtype=dtype)] if spec.batch_norm else []
    act = [ReLU(f"{base}_relu")] if spec.activation == "relu" else []
    return [*act, *norm] if spec.activation_before_bn else [*norm, *act]


def build_layers(
    arch: Sequence[LayerSpec], seed: int, dtype=np.float32, fuse: bool = True
) -> tuple[list[Layer], np.random.Generator]:
    """Layers (not yet built) for the spec, and the generator that seeds their dropout.
    With ``fuse``, a conv-ReLU followed by a tiling pool becomes one ConvReLUPool layer."""
    init_ss, drop_ss = np.random.SeedSequence(seed).spawn(2)
    drop_rng = np.random.default_rng(drop_ss)
    layers: list[Layer] = []
    counts: dict[str, int] = {}

    def name(kind: str) -> str:
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}{counts[kind]}"

    for i, spec in enumerate(arch):
        nxt = arch[i + 1] if i + 1 < len(arch) else None
        if fuse and isinstance(spec, ConvSpec) and _fusable(spec, nxt):
            continue  # built with the pool that follows
        if isinstance(spec, PoolSpec) and i > 0 and fuse and _fusable(arch[i - 1], spec):
            conv = arch[i - 1]
            layers.append(
                ConvReLUPool(name("conv"), conv.filters, conv.kernel, conv.stride, conv.padding,
                             spec.size, l2=conv.l2, dtype=dtype)
            )  # fmt: skip
            counts["pool"] = counts.get("pool", 0) + 1
        elif isinstance(spec, ConvSpec):
            base = name("conv")
            layers.append(
                Conv2D(base, spec.filters, spec.kernel, spec.stride, spec.padding,
                       use_bias=_has_bias(spec), l2=spec.l2, dtype=dtype)
            )  # fmt: skip
            layers += _norm_and_activation(spec, base, dtype)
        elif isinstance(spec, DenseSpec):
            base = name("dense")
            layers.append(Dense(base, spec.units, use_bias=_has_bias(spec), dtype=dtype))
            layers += _norm_and_activation(spec, base, dtype)
        elif isinstance(spec, PoolSpec):
            layers.append(MaxPool2D(name("pool"), spec.size, spec.stride, spec.padding))
        elif isinstance(spec, FlattenSpec):
            layers.append(Flatten(name("flatten")))
        elif isinstance(spec, DropoutSpec):
            layers.append(Dropout(name("dropout"), spec.rate, drop_rng))
        else:
            raise ValueError(f"arch[{i}]: the scratch family has no {spec.type!r} layer")
    return layers, np.random.default_rng(init_ss)


class Network:
    def __init__(
        self,
        arch: Sequence[LayerSpec],
        input_shape: Sequence[int],
        seed: int = 0,
        dtype=np.float32,
        fuse: bool = True,
    ) -> None:
        check_arch(arch)
        self.arch = tuple(arch)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.dtype = np.dtype(dtype)
        self.layers, init_rng = build_layers(self.arch, seed, self.dtype, fuse)
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.build(shape, init_rng)
        self.output_shape = shape
        self.layers[0].need_dx = False
        # Move every parameter into one vector (and every gradient into another).
        entries = [(layer, k) for layer in self.layers for k in layer.params]
        total = sum(layer.params[k].size for layer, k in entries)
        self.flat_params = np.empty(total, self.dtype)
        self.decay_mask = np.zeros(total, self.dtype)  # 1 on kernels: L2 weight decay
        self.slices: dict[str, slice] = {}  # layer name -> its part of the flat vectors
        off = 0
        for layer in self.layers:
            start = off
            for k, p in layer.params.items():
                view = self.flat_params[off : off + p.size].reshape(p.shape)
                view[...] = p
                layer.params[k] = view
                if k == "W":
                    self.decay_mask[off : off + p.size] = 1
                off += p.size
            if layer.params:
                self.slices[layer.name] = slice(start, off)
        self.flat_grads = np.zeros(total, self.dtype)
        self._bind_grads()
        self.label_smoothing = 0.0  # of the training loss (train.label_smoothing)

    def _bind_grads(self) -> None:
        for layer in self.layers:
            sl = self.slices.get(layer.name)
            off = sl.start if sl else 0
            for k, p in layer.params.items():
                layer.grads[k] = self.flat_grads[off : off + p.size].reshape(p.shape)
                off += p.size

    def replica(self, seed: int) -> Network:
        """Same parameters and statistics (shared memory), own caches, gradients and
        dropout generator: for running part of a batch on another thread."""
        twin = copy.copy(self)
        drop_rng = np.random.default_rng(seed)
        twin.layers = []
        for layer in self.layers:
            t = copy.copy(layer)
            t.cache, t._buffers, t.grads = {}, {}, {}
            if isinstance(t, Dropout):
                t.rng = drop_rng
            twin.layers.append(t)
        twin.flat_grads = np.zeros_like(self.flat_grads)
        twin._bind_grads()
        return twin

    # ------------------------------------------------------------------ compute

    @property
    def has_batch_norm(self) -> bool:
        return any(isinstance(layer, BatchNorm) for layer in self.layers)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Logits (N, K) for images ``x`` (N, *input_shape)."""
        h = x if x.dtype == self.dtype else x.astype(self.dtype)
        for layer in self.layers:
            h = layer.forward(h, training)
        return h

    def backward(self, dlogits: np.ndarray) -> None:
        """Add the gradients of the loss whose logit gradient is ``dlogits`` into
        ``flat_grads``."""
        d = dlogits
        for layer in reversed(self.layers):
            d = layer.backward(d)

    def penalty(self) -> float:
        return sum(layer.penalty() for layer in self.layers)

    def loss_and_grads(
        self, x: np.ndarray, y: np.ndarray, weight: float = 1.0
    ) -> tuple[float, int]:
        """One training pass on a batch: zero the gradients, forward, loss, backward.
        Returns the mean loss (with the layers' penalties) and the number of correct
        predictions; ``weight`` scales the gradient (a share of a split batch)."""
        self.flat_grads.fill(0)
        logits = self.forward(x, training=True)  # (N, K)
        loss, dlogits = softmax_cross_entropy(logits, y, self.label_smoothing)
        if weight != 1.0:
            dlogits *= weight
        self.backward(dlogits)
        correct = int(np.count_nonzero(logits.argmax(axis=1) == y))
        return loss + self.penalty(), correct

    def predict_proba(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        out = [
            softmax(self.forward(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
        if not out:
            return np.zeros((0, self.output_shape[-1]), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)  # (N, K)

    def predict(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        return self.predict_proba(x, batch_size).argmax(axis=1)  # (N,)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> tuple[float, float]:
        """Mean loss and accuracy at inference."""
        p = self.predict_proba(x, batch_size)  # (N, K)
        loss = float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))
        return loss + self.penalty(), float(np.mean(p.argmax(axis=1) == y))

    # ------------------------------------------------------------------ weights

    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and statistic, keyed ``<layer>/<name>``."""
        out = {}
        for layer in self.layers:
            for k, v in {**layer.params, **layer.state}.items():
                out[f"{layer.name}/{k}"] = v.copy()
        return out

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        for layer in self.layers:
            for k, v in {**layer.params, **layer.state}.items():
                key = f"{layer.name}/{k}"
                if key not in weights:
                    raise KeyError(f"missing weight {key}")
                if weights[key].shape != v.shape:
                    raise ValueError(f"{key}: shape {weights[key].shape}, expected {v.shape}")
                v[...] = weights[key]

    def save(self, path: Path) -> None:
        path = Path(path)
        arrays = self.get_weights()
        arrays[ARCH_KEY] = np.array(json.dumps(to_dict(list(self.arch))))
        arrays[INPUT_SHAPE_KEY] = np.array(self.input_shape, np.int64)
        atomic_save(path, lambda tmp: np.savez(tmp, **arrays))

    @classmethod
    def load(cls, path: Path) -> Network:
        """The network saved by ``save``: arrays only (``allow_pickle=False``, so a planted
        object array is refused rather than unpickled). Any defect of the file raises
        ``BadModelFile`` naming it."""
        path = Path(path)
        if not path.is_file():
            raise BadModelFile(f"{path}: model file not found")
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            specs = json.loads(str(arrays[ARCH_KEY]))
            arch = tuple(LAYER_TYPES[d["type"]](**d) for d in specs)
            net = cls(arch, tuple(arrays[INPUT_SHAPE_KEY].tolist()))
            net.set_weights(arrays)
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            what = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BadModelFile(
                f"{path}: corrupt or not a model of the scratch family "
                f"({type(exc).__name__}{': ' + what if what else ''})"
            ) from None
        return net
