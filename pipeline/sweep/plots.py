"""The parent run's pictures: the space against the metric (parallel coordinates) and
the best value so far, trial after trial."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from pipeline.core.params import SweepParams


def _axis(values: pd.Series, dist) -> tuple[list[float], list[str]]:
    """Values scaled to [0, 1] and two tick labels (low, high) or the choices."""
    if dist.choice is not None:
        choices = [str(c) for c in dist.choice]
        pos = [choices.index(str(v)) / max(1, len(choices) - 1) for v in values]
        return pos, choices
    lo, hi = dist.extremes()
    f = math.log if dist.loguniform is not None else float
    span = (f(hi) - f(lo)) or 1.0
    return [(f(v) - f(lo)) / span for v in values], [f"{lo:g}", f"{hi:g}"]


def parallel_coordinates(trials: pd.DataFrame, sw: SweepParams, path: Path) -> None:
    keys = list(sw.space)
    ok = trials.dropna(subset=[sw.metric])
    fig, ax = plt.subplots(figsize=(2.2 * (len(keys) + 1), 4.5))
    if len(ok):
        lo, hi = ok[sw.metric].min(), ok[sw.metric].max()
        cmap = plt.get_cmap("viridis" if sw.mode == "max" else "viridis_r")
        cols = [_axis(ok[k], sw.space[k]) for k in keys]
        scale = (ok[sw.metric] - lo) / ((hi - lo) or 1.0)
        for i in range(len(ok)):
            ys = [c[0][i] for c in cols] + [scale.iloc[i]]
            ax.plot(range(len(keys) + 1), ys, color=cmap(scale.iloc[i]), alpha=0.8)
        for j, (_, labels) in enumerate(cols):
            for n, label in enumerate(labels):
                y = n / max(1, len(labels) - 1)
                ax.annotate(label, (j, y), xytext=(3, 0), textcoords="offset points", fontsize=7)
        ax.annotate(f"{lo:.4f}", (len(keys), 0), xytext=(3, 0), textcoords="offset points")
        ax.annotate(f"{hi:.4f}", (len(keys), 1), xytext=(3, 0), textcoords="offset points")
    for j in range(len(keys) + 1):
        ax.axvline(j, color="grey", lw=0.8)
    ax.set_xticks(range(len(keys) + 1), [*keys, sw.metric], rotation=15)
    ax.set_yticks([])
    ax.set_title(f"{len(ok)} trials: the space against {sw.metric} (colour)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def best_so_far(trials: pd.DataFrame, sw: SweepParams, path: Path) -> None:
    ok = trials.dropna(subset=[sw.metric]).sort_values("trial_index")
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(ok):
        values = ok[sw.metric]
        best = values.cummax() if sw.mode == "max" else values.cummin()
        ax.scatter(ok["trial_index"], values, s=14, color="grey", label="trial")
        ax.step(ok["trial_index"], best, where="post", color="C0", label="best so far")
        ax.legend()
    ax.set_xlabel("trial index")
    ax.set_ylabel(sw.metric)
    ax.set_title("best so far")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
