"""The two-run comparison page: one self-contained HTML file for a ``Comparison``
(pipeline/compare/analysis.py), the figures inline as PNG data URIs and the numbers again as
JSON in ``<script id="compare-data">`` so that scripts and tests read what the page shows.

The headline says in plain words whether B differs from A by more than noise (McNemar's exact
test); each accuracy carries its 95% Wilson interval, each class's recall delta its McNemar p.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.compare.analysis import (
    ALPHA,
    CURVE_METRICS,
    LOWER_IS_BETTER,
    MAX_THUMBNAILS,
    PROVENANCE_TAGS,
    Comparison,
    RunData,
    environment_rows,
    format_p,
)
from pipeline.report import figures

# --------------------------------------------------------------------------- figures


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _thumbnail(image: np.ndarray) -> str:
    buf = io.BytesIO()
    plt.imsave(buf, np.asarray(image).reshape(28, 28), cmap="gray", vmin=0.0, vmax=1.0)
    return base64.b64encode(buf.getvalue()).decode()


def curves_figure(a: RunData, b: RunData) -> Figure | None:
    metrics = [m for m in CURVE_METRICS if a.history.get(m) or b.history.get(m)]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for run, color in ((a, "tab:blue"), (b, "tab:orange")):
            points = run.history.get(metric) or []
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o", color=color, label=f"{run.label}: {run.short}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("validation curves, A and B overlaid")
    return fig


def diff_figure(diff: np.ndarray, classes: list[str], title: str) -> Figure:
    """B − A as a diverging heatmap centred on 0, signed counts in the cells. On the
    diagonal more is better (blue), off it fewer is better (so red off-diagonal = B worse)."""
    k = len(classes)
    signed = np.where(np.eye(k, dtype=bool), diff, -diff)  # > 0: B better in that cell
    limit = max(1, int(np.abs(diff).max()))
    labels = np.vectorize(lambda v: f"{v:+d}" if v else "0")(diff)
    fig, ax = plt.subplots(figsize=(1.8 + 0.5 * k, 1.0 + 0.45 * k))
    # symmetric limits centre the diverging colours on 0
    image = figures.annotated_heatmap(ax, signed, labels, classes, "RdBu", -limit, limit)
    bar = fig.colorbar(image, ax=ax, ticks=[-limit, 0, limit])
    bar.set_ticklabels(["B worse", "same", "B better"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1180px;color:#1b1f23;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.15em;margin-top:28px;
border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:1em;margin:16px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f4f6f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.better{color:#0a6b2d;font-weight:600}.worse{color:#b3261e;font-weight:600}
.warn{background:#fff4ce;border:1px solid #e0b600;padding:8px 12px;margin:8px 0;
border-radius:4px}.note{color:#555;font-size:13px}
.summary{font-size:15px;margin:10px 0}.figs{display:flex;flex-wrap:wrap;gap:16px;
align-items:flex-start}
.grid{display:flex;flex-wrap:wrap;gap:6px}
figure.thumb{margin:0;width:76px;text-align:center;font-size:11px;line-height:1.25}
figure.thumb img{width:56px;height:56px;image-rendering:pixelated;border:1px solid #ccc}
code{font-size:12px}
"""

# Marks every image with its decoded width once it has loaded (checked by the tests in
# headless Chromium: an image that failed to decode keeps no data-decoded attribute).
SCRIPT = (
    "document.querySelectorAll('img').forEach(function(i){function f(){if(i.naturalWidth)"
    "i.dataset.decoded=i.naturalWidth}if(i.complete)f();else i.addEventListener('load',f)});"
)


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value)}"
    return f"{value:.4f}"


def _delta(delta: float | None, lower_is_better: bool = False, digits: int = 4) -> str:
    if delta is None:
        return "<td class='num'>–</td>"
    good = delta < 0 if lower_is_better else delta > 0
    css = "" if delta == 0 else ("better" if good else "worse")
    text = f"{delta:+.{digits}f}" if not float(delta).is_integer() else f"{int(delta):+d}"
    return f"<td class='num {css}'>{text}</td>"


def _img(b64: str, alt: str, ident: str) -> str:
    return f"<img id='{ident}' alt='{_e(alt)}' src='data:image/png;base64,{b64}'>"


def _table(header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _runs_section(c: Comparison) -> str:
    rows = [
        f"<tr><td>run id</td><td><code>{_e(c.a.run_id)}</code></td>"
        f"<td><code>{_e(c.b.run_id)}</code></td></tr>"
    ]
    rows.append(
        f"<tr><td>started (UTC)</td><td>{_e(_time(c.a.start_time))}</td>"
        f"<td>{_e(_time(c.b.start_time))}</td></tr>"
    )
    for key, label in PROVENANCE_TAGS:
        va, vb = c.a.tags.get(key), c.b.tags.get(key)
        style = " class='worse'" if key == "dataset_dvc_md5" and va != vb else ""
        rows.append(
            f"<tr><td>{_e(label)}</td><td{style}><code>{_e(va or '–')}</code></td>"
            f"<td{style}><code>{_e(vb or '–')}</code></td></tr>"
        )
    return "<h2 id='runs'>Runs</h2>" + _table(["", "A", "B"], rows)


def _environment_section(c: Comparison) -> str:
    out = "<h2 id='environment'>Numeric environment</h2>"
    rows = environment_rows(c.a, c.b)
    if not rows:
        return out + "<p class='note'>Neither run recorded its numeric environment.</p>"
    cells = []
    for key, va, vb in rows:
        style = " class='worse'" if va != vb else ""
        cells.append(
            f"<tr><td>{_e(key)}</td><td{style}><code>{_e(va or '–')}</code></td>"
            f"<td{style}><code>{_e(vb or '–')}</code></td></tr>"
        )
    return out + _table(["", "A", "B"], cells)


def _time(ms: int | None) -> str:
    if not ms:
        return "–"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _params_section(c: Comparison) -> str:
    out = f"<h2 id='params'>Params that differ ({len(c.params_diff)})</h2>"
    if not c.params_diff:
        return out + "<p class='note'>The two runs logged the same params.</p>"
    rows = [
        f"<tr><td><code>{_e(k)}</code></td><td>{_e(va if va is not None else '–')}</td>"
        f"<td>{_e(vb if vb is not None else '–')}</td></tr>"
        for k, va, vb in c.params_diff
    ]
    return out + _table(["param", "A", "B"], rows)


def _interval(c: Comparison, run: RunData) -> str:
    ci = c.interval(run)
    return f"[{ci.low:.4f}, {ci.high:.4f}]"


def _metric_cell(c: Comparison, run: RunData, key: str, value: float | None) -> str:
    """A logged metric; test_accuracy with the 95% Wilson interval of the predictions when
    they give the same accuracy (to the logged value's rounding)."""
    text = _fmt(value)
    same = value is not None and abs(value - c.accuracy(run)) <= 0.5 / c.n + 1e-9
    if key == "test_accuracy" and same:
        text += f"<br><span class='note'>95% CI {_interval(c, run)}</span>"
    return f"<td class='num'>{text}</td>"


def _metrics_section(c: Comparison) -> str:
    rows = []
    for key, va, vb in c.metrics_rows:
        delta = None if va is None or vb is None else vb - va
        lower = key.removeprefix("test_") in LOWER_IS_BETTER
        rows.append(
            f"<tr><td><code>{_e(key)}</code></td>{_metric_cell(c, c.a, key, va)}"
            f"{_metric_cell(c, c.b, key, vb)}{_delta(delta, lower)}</tr>"
        )
    out = "<h2 id='metrics'>Test metrics</h2>"
    if not rows:
        return out + "<p class='note'>Neither run logged test metrics.</p>"
    return out + _table(["metric", "A", "B", "B − A"], rows)


def _significance_section(c: Comparison) -> str:
    runs = [
        f"<tr><td>{run.label}: {_e(run.short)}</td><td class='num'>{c.correct(run)} / {c.n}</td>"
        f"<td class='num'>{c.accuracy(run):.4f}</td>"
        f"<td class='num'>{_interval(c, run)}</td></tr>"
        for run in (c.a, c.b)
    ]
    t = c.mcnemar_test
    test = [
        f"<tr><td class='num'>{t.fixed}</td><td class='num'>{t.broken}</td>"
        f"<td class='num'>{format_p(t.p_two_sided)}</td>"
        f"<td class='num'>{format_p(t.p_better)}</td></tr>"
    ]
    return (
        "<h2 id='significance'>Accuracy and significance</h2>"
        + _table(["run", "right / test images", "accuracy", "95% Wilson interval"], runs)
        + f"<h3>McNemar's exact test on the {t.discordant} test images where A and B "
        "disagree</h3>"
        + _table(["fixed by B", "broken by B", "p (two-sided)", "p (one-sided, B better)"], test)
        + "<p class='note'>Were neither run better, each disagreement would be a fair coin; p is "
        "the chance of a split at least this uneven. The headline uses the two-sided p at "
        f"{ALPHA:g}; the promotion gate (pipeline/tracking/gate.py) uses the one-sided p in "
        "the challenger's favour. Both runs are scored on the same images, so overlapping "
        "intervals do not mean the runs are alike: the paired test decides.</p>"
    )


def _curves_section(c: Comparison) -> str:
    fig = curves_figure(c.a, c.b)
    out = "<h2 id='curves'>Validation curves</h2>"
    if fig is None:
        return out + "<p class='note'>Neither run logged per-epoch validation metrics.</p>"
    return out + _img(_png(fig), "validation curves of A and B", "curves")


def _confusion_section(c: Comparison) -> str:
    figs = [
        _img(
            _png(figures.confusion_heatmap(c.confusion_a, c.classes, f"A: {c.a.short}")),
            "confusion matrix of A",
            "confusion-a",
        ),
        _img(
            _png(figures.confusion_heatmap(c.confusion_b, c.classes, f"B: {c.b.short}")),
            "confusion matrix of B",
            "confusion-b",
        ),
        _img(
            _png(diff_figure(c.confusion_diff, c.classes, "B − A (counts)")),
            "confusion matrix difference B − A",
            "confusion-diff",
        ),
    ]
    return (
        "<h2 id='confusion'>Confusion matrices (rows: true class, columns: predicted)</h2>"
        f"<div class='figs'>{''.join(figs)}</div>"
        "<p class='note'>In B − A, blue cells are where B does better (more correct on the "
        "diagonal, fewer of that mistake off it), red cells where it does worse.</p>"
    )


def _per_class_section(c: Comparison) -> str:
    rows = []
    for r in c.per_class:
        cells = "".join(
            f"<td class='num'>{r[f'{m}_a']:.4f}</td><td class='num'>{r[f'{m}_b']:.4f}</td>"
            + _delta(r[f"{m}_delta"])
            for m in ("precision", "recall", "f1")
        )
        test = (
            f"<td class='num'>{r['fixed']}</td><td class='num'>{r['broken']}</td>"
            f"<td class='num'>{format_p(r['recall_p'])}</td>"
        )
        rows.append(
            f"<tr><td>{_e(r['class'])}</td><td class='num'>{r['support']}</td>{cells}{test}</tr>"
        )
    header = ["class", "support"]
    for m in ("precision", "recall", "F1"):
        header += [f"{m} A", f"{m} B", f"Δ {m}"]
    header += ["fixed by B", "broken by B", "McNemar p (recall)"]
    return (
        "<h2 id='per-class'>Per-class deltas (largest |Δ F1| first)</h2>"
        + _table(header, rows)
        + "<p class='note'>A class's recall delta is (fixed − broken) / support; its p is "
        "McNemar's two-sided exact test on that class's images. Across many classes, about "
        f"one in {round(1 / ALPHA)} may fall below {ALPHA:g} by chance alone.</p>"
    )


def _grid(c: Comparison, indices: np.ndarray, ident: str, title: str) -> str:
    out = f"<h3 id='{ident}'>{_e(title)}: {len(indices)} images</h3>"
    if not len(indices):
        return out + "<p class='note'>None.</p>"
    shown = indices[:MAX_THUMBNAILS]
    if len(indices) > len(shown):
        out += (
            f"<p class='note'>The first {len(shown)} by test index; every index is in the "
            "JSON block of this page (<code>compare-data</code>).</p>"
        )
    if c.images is None:
        listed = ", ".join(str(i) for i in shown)
        return out + f"<p class='note'>Test indices: {listed}</p>"
    cells = []
    for i in shown:
        t, pa, pb = c.a.actual[i], c.a.predicted[i], c.b.predicted[i]
        caption = (
            f"#{i}<br>true {_e(c.classes[t])}<br>A {_e(c.classes[pa])} · B {_e(c.classes[pb])}"
        )
        cells.append(
            f"<figure class='thumb' data-index='{i}' data-true='{_e(c.classes[t])}' "
            f"data-a='{_e(c.classes[pa])}' data-b='{_e(c.classes[pb])}'>"
            f"<img alt='test image {i}' src='data:image/png;base64,{_thumbnail(c.images[i])}'>"
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return out + f"<div class='grid'>{''.join(cells)}</div>"


def _changed_section(c: Comparison) -> str:
    note = f"<p class='warn'>{_e(c.images_note)}</p>" if c.images_note else ""
    return (
        "<h2 id='changed'>Test images whose prediction changed</h2>"
        + note
        + _grid(c, c.fixed, "fixed", "Fixed by B (A wrong, B right)")
        + _grid(c, c.broken, "broken", "Broken by B (A right, B wrong)")
    )


def _both_wrong_section(c: Comparison) -> str:
    n = len(c.both_wrong)
    out = (
        f"<h2 id='both-wrong'>Wrong in both runs: {n} images</h2>"
        f"<p>{c.same_mistake} of them get the same wrong label from both runs.</p>"
    )
    if not c.shared_confusions:
        return out
    rows = [
        f"<tr><td>{_e(s['true'])}</td><td>{_e(s['a'])}</td><td>{_e(s['b'])}</td>"
        f"<td class='num'>{s['count']}</td></tr>"
        for s in c.shared_confusions
    ]
    return (
        out
        + "<p class='note'>Most common shared confusions:</p>"
        + _table(["true", "A predicts", "B predicts", "images"], rows)
    )


SECTIONS = (
    ("runs", _runs_section),
    ("environment", _environment_section),
    ("params", _params_section),
    ("significance", _significance_section),
    ("metrics", _metrics_section),
    ("curves", _curves_section),
    ("confusion", _confusion_section),
    ("per-class", _per_class_section),
    ("changed", _changed_section),
    ("both-wrong", _both_wrong_section),
)


def render(c: Comparison) -> str:
    """The self-contained HTML page (no external file, font or script)."""
    acc_a, acc_b = c.accuracy(c.a), c.accuracy(c.b)
    warnings = "".join(f"<div class='warn' role='alert'>{_e(w)}</div>" for w in c.warnings)
    tone = ""
    if c.significant:
        tone = " class='better'" if len(c.fixed) > len(c.broken) else " class='worse'"
    summary = (
        f"<p class='summary' id='verdict'><b{tone}>{_e(c.verdict())}.</b></p>"
        f"<p class='summary'>Test accuracy (recomputed from the {c.n} per-image "
        f"predictions, 95% Wilson interval): A {acc_a:.4f} {_interval(c, c.a)} → B "
        f"{acc_b:.4f} {_interval(c, c.b)} "
        f"(<span class='{'better' if acc_b >= acc_a else 'worse'}'>"
        f"{acc_b - acc_a:+.4f}</span>). B fixes <b>{len(c.fixed)}</b> images, breaks "
        f"<b>{len(c.broken)}</b>; <b>{len(c.both_wrong)}</b> are wrong in both.</p>"
    )
    data = json.dumps(c.data(), sort_keys=True).replace("</", "<\\/")
    title = f"Compare A {c.a.short} with B {c.b.short}"
    body = "".join(
        [
            f"<h1>{_e(title)}</h1>",
            f"<p class='note'>MLflow store: <code>{_e(c.a.store)}</code></p>",
            warnings,
            summary,
            *(f"<section data-section='{name}'>{part(c)}</section>" for name, part in SECTIONS),
        ]
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{body}"
        f"<script type='application/json' id='compare-data'>{data}</script>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
