"""Test-set quality figures (scikit-learn); no timings, so reruns compare byte for byte."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from pipeline.report.stats import wilson

DIGITS = 6  # rounding of every float written to metrics/<model>.json


def _r(x: float) -> float:
    return round(float(x), DIGITS)


def cross_entropy(y_true: np.ndarray, proba: np.ndarray, eps: float = 1e-7) -> float:
    """Mean negative log-probability of the true class (probabilities clipped at ``eps``)."""
    picked = proba[np.arange(len(y_true)), y_true]  # (N,)
    return float(-np.mean(np.log(np.clip(picked, eps, 1.0))))


def compute(y_true: np.ndarray, proba: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy with its 95% Wilson interval, log loss, macro F1/precision/recall and
    per-class figures."""
    k = len(class_names)
    if proba.ndim != 2 or proba.shape != (len(y_true), k):
        raise ValueError(f"probabilities of shape {proba.shape}, expected ({len(y_true)}, {k})")
    labels = np.arange(k)
    y_pred = proba.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    mp, mr, _, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    right = int((y_pred == y_true).sum())
    ci = wilson(right, len(y_true)) if len(y_true) else None
    return {
        "accuracy": _r(accuracy_score(y_true, y_pred)),
        # 95% Wilson interval of the accuracy: a single run's uncertainty (compare reports)
        "accuracy_ci95_low": _r(ci.low) if ci else 0.0,
        "accuracy_ci95_high": _r(ci.high) if ci else 0.0,
        "loss": _r(cross_entropy(y_true, proba)),
        "macro_f1": _r(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "macro_precision": _r(mp),
        "macro_recall": _r(mr),
        "errors": int((y_pred != y_true).sum()),
        "n_test": len(y_true),
        "per_class": {
            name: {"precision": _r(p[i]), "recall": _r(r[i]), "f1": _r(f[i]), "support": int(s[i])}
            for i, name in enumerate(class_names)
        },
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts (rows: actual, columns: predicted) and the row-normalized matrix."""
    counts = confusion_matrix(y_true, y_pred, labels=np.arange(k))
    totals = counts.sum(axis=1, keepdims=True)
    return counts, np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def report(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> str:
    return classification_report(
        y_true,
        y_pred,
        labels=np.arange(len(class_names)),
        target_names=class_names,
        digits=4,
        zero_division=0,
    )
