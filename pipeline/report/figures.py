"""Figures for one model and across models. Each function returns a matplotlib Figure;
``save`` writes it as PNG and closes it. The Agg backend is used: no screen needed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def curves(history: pd.DataFrame, title: str) -> Figure:
    """Loss and accuracy per epoch, train and validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(history["epoch"], history[metric], marker="o", label="train")
        ax.plot(history["epoch"], history[f"val_{metric}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def annotated_heatmap(
    ax: Axes,
    values: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    cmap: str,
    vmin: float,
    vmax: float,
):
    """A square cell per value with its label written in it (dark text on light cells,
    white on dark ones), classes on both axes: seaborn's annotated heatmap in plain
    matplotlib, which spares every evaluate@ and plot process seaborn's import (0.9 s)."""
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal")
    k = len(classes)
    ax.set_xticks(range(k), classes)
    ax.set_yticks(range(k), classes)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    norm, colormap = image.norm, image.get_cmap()
    for (i, j), value in np.ndenumerate(values):
        r, g, b, _ = colormap(norm(value))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # perceived lightness of the cell
        ax.text(j, i, labels[i, j], ha="center", va="center", fontsize=8,
                color="white" if dark else "black")  # fmt: skip
    return image


def confusion_heatmap(counts: np.ndarray, class_names: list[str], title: str) -> Figure:
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    labels = counts.astype(int).astype(str)
    annotated_heatmap(ax, counts, labels, class_names, "Blues", 0, max(1, int(counts.max())))
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    return fig


def kernels(weights: np.ndarray, title: str, max_filters: int = 32) -> Figure:
    """First-layer kernels, (kh, kw, cin, cout): one tile per filter (input channel 0)."""
    w = weights[:, :, 0, :max_filters]  # (kh, kw, n)
    n = w.shape[-1]
    cols = min(8, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(w[:, :, i], cmap="coolwarm", vmin=-np.abs(w).max(), vmax=np.abs(w).max())
    fig.suptitle(title)
    return fig


def feature_maps(image: np.ndarray, maps: np.ndarray, title: str, max_maps: int = 16) -> Figure:
    """The input image and the first conv layer's maps for it; maps (H, W, C)."""
    n = min(max_maps, maps.shape[-1])
    cols = min(9, n + 1)
    rows = int(np.ceil((n + 1) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i == 0:
            ax.imshow(image.squeeze(), cmap="gray_r")
            ax.set_title("input", fontsize=8)
        elif i <= n:
            ax.imshow(maps[:, :, i - 1], cmap="viridis")
            ax.set_title(f"map {i - 1}", fontsize=8)
    fig.suptitle(title)
    return fig


def prediction_grid(
    images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], title: str
) -> Figure:
    """A 3x3 grid of test images with true and predicted labels; mistakes in red."""
    fig, axes = plt.subplots(3, 3, figsize=(5.5, 6))
    for ax, img, t, p in zip(axes.flat, images[:9], y_true[:9], y_pred[:9], strict=False):
        ax.imshow(img.squeeze(), cmap="gray_r")
        wrong = t != p
        ax.set_title(
            f"true {class_names[t]} / pred {class_names[p]}" + (" ✗" if wrong else ""),
            color="red" if wrong else "black",
            fontsize=9,
        )
        ax.axis("off")
    fig.suptitle(title)
    return fig


def mistakes_grid(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    title: str,
    side: int = 4,
) -> Figure:
    """Up to ``side`` x ``side`` of the test images the model got wrong, in test order, each
    with its index, true and predicted labels; the title counts them all."""
    wrong = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))
    shown = wrong[: side * side]
    fig, axes = plt.subplots(side, side, figsize=(1.6 * side, 1.75 * side + 0.4))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown, strict=False):
        ax.imshow(images[i].squeeze(), cmap="gray_r")
        t, p = class_names[y_true[i]], class_names[y_pred[i]]
        ax.set_title(f"#{i}: true {t}, pred {p}", color="red", fontsize=8)
    n = len(y_true)
    if len(wrong) == 0:
        fig.text(0.5, 0.5, f"no mistakes on the {n} test images", ha="center", va="center")
    counted = f"{len(wrong)} of {n} test images wrong" + (
        f", first {len(shown)} shown" if len(shown) < len(wrong) else ""
    )
    fig.suptitle(f"{title}\n{counted}")
    return fig


def accuracy_bars(accuracy: dict[str, float]) -> Figure:
    """Test accuracy of every model, best first."""
    items = sorted(accuracy.items(), key=lambda kv: kv[1], reverse=True)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(items)))
    names = [k for k, _ in items]
    values = [100 * v for _, v in items]
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, len(items)))
    ax.barh(names, values, color=colours, height=0.8)
    ax.invert_yaxis()  # best on top
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}%", va="center", fontsize=9)
    low = min(values)
    ax.set_xlim(max(0.0, low - 2 * (100 - low) - 0.5), 100.5)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title("Test accuracy of every model")
    return fig


def validation_curves(histories: dict[str, pd.DataFrame]) -> Figure:
    """Validation loss and accuracy over epochs of several models (cubic vs dense)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, h in histories.items():
        axes[0].plot(h["epoch"], h["val_loss"], marker="o", label=name)
        axes[1].plot(h["epoch"], h["val_accuracy"], marker="o", label=name)
    for ax, label in zip(axes, ("validation loss", "validation accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(" vs ".join(histories))
    return fig
