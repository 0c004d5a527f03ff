"""validate: data/raw/<source>/ -> reports/validation/ (index.html report and summary.json).

Great Expectations 1.x (ephemeral context, pandas data source) over per-image tables built in
pipeline/data/table.py: one suite per split on its images, one on the class shares, with the
thresholds of ``params.validate``. A failed expectation fails the stage with one line per
failure naming the offending values; the report is written either way: index.html, one
self-contained page (no scripts, no CDN: it renders offline) naming the run, each suite and
each expectation's result, and summary.json.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no network here; before the import

import great_expectations as gx
import numpy as np
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from pipeline.core import config, runner
from pipeline.core.io import atomic_dir
from pipeline.core.params import Params, ValidateParams
from pipeline.data import gate
from pipeline.data import table as tables

E = gx.expectations
ASSETS = {  # what each suite reads, for the report
    "train": "raw training split: one row per image",
    "test": "raw test split: one row per image",
    "class_share": "each class's share of its split: one row per (split, class)",
}


class ValidationFailed(runner.StageError):
    """At least one expectation failed; the message has one line per failure."""


def _set(labels: tuple[int, ...]) -> str:
    if len(labels) > 2 and list(labels) == list(range(labels[0], labels[-1] + 1)):
        return f"{{{labels[0]}..{labels[-1]}}}"
    return "{" + ", ".join(map(str, labels)) + "}"


def suites(v: ValidateParams) -> dict[str, list[gx.expectations.Expectation]]:
    """Expectations per table: ``train``/``test`` on that split's images, ``class_share``."""
    between, in_set = E.ExpectColumnValuesToBeBetween, E.ExpectColumnValuesToBeInSet
    shape, ink, labels = "x".join(map(str, v.image_shape)), v.min_nonzero_pixels, list(v.labels)

    def images(split: str) -> list:
        rows = []
        if b := v.rows.get(split):
            n = f"row count in [{b.min}, {b.max}]"
            rows.append(
                E.ExpectTableRowCountToBeBetween(min_value=b.min, max_value=b.max, description=n)
            )
        return [
            *rows,
            in_set(column="label", value_set=labels, description=f"label in {_set(labels)}"),
            between(
                column="pixel_min", min_value=v.pixel_min, description=f"pixels >= {v.pixel_min}"
            ),
            between(
                column="pixel_max", max_value=v.pixel_max, description=f"pixels <= {v.pixel_max}"
            ),
            between(column="nonzero", min_value=ink, description=f"not blank: >= {ink} ink pixels"),
            in_set(column="dtype", value_set=["uint8"], description="dtype uint8"),
            in_set(column="shape", value_set=[shape], description=f"image shape {shape}"),
        ]

    overlap, (lo, hi) = v.max_train_test_overlap, (v.class_share.min, v.class_share.max)
    shared = f"share of test images also in train <= {overlap}"
    share = f"each class's share of its split in [{lo}, {hi}]"
    return {
        "train": images("train"),
        "test": [
            *images("test"),
            E.ExpectColumnMeanToBeBetween(column="shared", max_value=overlap, description=shared),
        ],
        "class_share": [between(column="share", min_value=lo, max_value=hi, description=share)],
    }


def _context() -> Any:
    """An in-memory context without data docs (GX's pages load their CSS and JS from CDNs:
    blank offline); the report is ``report_html``'s page."""
    cfg = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=cfg)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    v = v.item() if isinstance(v, np.generic) else v
    return round(v, 6) if isinstance(v, float) else v


def _failure(table: str, r: Any) -> dict:
    """A failed expectation for summary.json, with a one-line message naming what is wrong."""
    cfg, res = r.expectation_config, r.result
    col = cfg.kwargs.get("column")
    what = cfg.description or cfg.type
    if "unexpected_count" in res:
        where = [  # image tables: the image index; class_share: {share, split, label}
            ", ".join(f"{k} {x}" for k, x in _plain(i).items() if k != col)
            if isinstance(i, dict)
            else f"index {_plain(i)}"
            for i in res.get("partial_unexpected_index_list") or []
        ]
        values = res.get("partial_unexpected_list") or []
        eg = [f"{_plain(x)} ({w})" for x, w in zip(values, where, strict=False)]
        unit = "classes" if table == "class_share" else "images"
        bad = f"{res['unexpected_count']} {unit} are not, e.g. {', '.join(eg[:5])}"
    else:
        bad = f"observed {_plain(res.get('observed_value'))}"
    message = f"{table}: expected {what}: {bad}"
    return {
        "table": table,
        "expectation": cfg.type,
        "column": col,
        "message": message,
        "result": _plain(dict(res)),
    }


def run_name(source: str, raw_sha256: dict[str, str] | None) -> str:
    """The run's name: the source and a digest of the checked files (same files, same name)."""
    if not raw_sha256:
        return f"{source or 'data'} (files not hashed)"
    digest = hashlib.sha256(json.dumps(raw_sha256, sort_keys=True).encode()).hexdigest()
    return f"{source or 'data'} @ {digest[:12]}"


def _result(table: str, r: Any) -> dict:
    """One expectation's outcome for the report: suite, description, column, verdict, detail."""
    cfg, res = r.expectation_config, r.result
    if "unexpected_count" in res:
        n, bad = res.get("element_count", "?"), res["unexpected_count"]
        detail = f"{bad} of {n} rows unexpected"
    else:
        detail = f"observed {_plain(res.get('observed_value'))}"
    return {
        "suite": table,
        "expectation": cfg.description or cfg.type,
        "type": cfg.type,
        "column": cfg.kwargs.get("column") or "(table)",
        "success": bool(r.success),
        "detail": detail,
    }


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;font-size:1.25em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.3em .6em;
text-align:left;vertical-align:top}th{background:#f2f2f2}td.num{text-align:right}
.ok{color:#176d2c;font-weight:600}.bad{color:#b00020;font-weight:600}code{font-size:.95em}
.meta td:first-child{font-weight:600;background:#fafafa}
"""


def report_html(summary: dict, results: list[dict], name: str) -> str:
    """One self-contained page (inline CSS, no scripts, no links out) of the validation run."""
    e = html.escape
    ok = summary["success"]
    verdict = f'<span class="{"ok" if ok else "bad"}">{"PASSED" if ok else "FAILED"}</span>'
    n, hashes = summary["expectations"], summary["raw_sha256"]
    meta = [
        ("Run", e(name)),
        ("Source", e(summary["source"] or "(not given)")),
        ("Result", f"{verdict}: {n['run'] - n['failed']} of {n['run']} expectations passed"),
        *((f"File {e(f)}", f"sha256 <code>{e(h)}</code>") for f, h in sorted(hashes.items())),
    ]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Data validation: {e(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Data validation: {e(summary['source'] or 'data')}</h1>",
        '<table class="meta">',
        *(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in meta),
        "</table>",
    ]
    for suite in dict.fromkeys(r["suite"] for r in results):
        rows = [r for r in results if r["suite"] == suite]
        passed = sum(r["success"] for r in rows)
        out += [
            f'<h2 id="suite-{e(suite)}">Suite {e(suite)}: {passed} of {len(rows)} passed</h2>',
            f"<p>Data asset: {e(ASSETS.get(suite, suite))}</p>",
            "<table><tr><th>Status</th><th>Expectation</th><th>Column</th><th>Result</th></tr>",
        ]
        for r in rows:
            status = '<td class="ok">passed</td>' if r["success"] else '<td class="bad">FAILED</td>'
            out.append(
                f"<tr>{status}<td>{e(r['expectation'])}<br><small>{e(r['type'])}</small></td>"
                f"<td>{e(r['column'])}</td><td>{e(r['detail'])}</td></tr>"
            )
        out.append("</table>")
    if summary["failures"]:
        out += ["<h2>Failures</h2><ul>"]
        out += [f"<li>{e(f['message'])}</li>" for f in summary["failures"]]
        out.append("</ul>")
    splits = {s: f for s, f in summary["splits"].items() if f.get("class_counts")}
    if splits:
        classes = sorted({c for f in splits.values() for c in f["class_counts"]}, key=int)
        head = "".join(f"<th>{e(s)} images</th><th>{e(s)} share</th>" for s in splits)
        out += ["<h2>Classes per split</h2>", f"<table><tr><th>Class</th>{head}</tr>"]
        for c in classes:
            cells = "".join(
                f'<td class="num">{f["class_counts"].get(c, 0)}</td>'
                f'<td class="num">{f["class_shares"].get(c, 0):.4f}</td>'
                for f in splits.values()
            )
            out.append(f"<tr><td>{e(c)}</td>{cells}</tr>")
        rows = "".join(f'<td class="num" colspan="2">{f["rows"]}</td>' for f in splits.values())
        out += [f"<tr><th>all</th>{rows}</tr>", "</table>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def check(
    splits: tables.Splits,
    v: ValidateParams,
    out_dir: Path,
    source: str = "",
    raw_sha256: dict[str, str] | None = None,
) -> dict:
    """Validate the arrays; write index.html and summary.json (deterministic) into out_dir.
    ``raw_sha256`` (the checked files' hashes) goes into summary.json: prepare reads it
    (pipeline/data/gate.py) and refuses any other files."""
    table = tables.image_table(splits)
    frames = {s: table[table["split"] == s].astype({"split": str}) for s in ("train", "test")}
    for frame in frames.values():  # GX reports the (unnamed) index of offending rows: cheap
        frame.index = frame["index"].to_numpy()
    frames["class_share"] = tables.class_shares(table, v.labels)
    label = run_name(source, raw_sha256)
    with atomic_dir(out_dir) as tmp:
        ctx = _context()
        asset = ctx.data_sources.add_pandas("raw").add_dataframe_asset("tables")
        batch = asset.add_batch_definition_whole_dataframe("whole")
        failures, results = [], []
        for name, exps in suites(v).items():
            suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=exps))
            vd = gx.ValidationDefinition(name=name, data=batch, suite=suite)
            vd = ctx.validation_definitions.add(vd)
            fmt = {"result_format": "SUMMARY"}
            if name == "class_share":  # 20 rows; on image tables this costs a lookup per row
                fmt["unexpected_index_column_names"] = ["split", "label"]
            cp = gx.Checkpoint(name=name, validation_definitions=[vd], result_format=fmt)
            result = ctx.checkpoints.add(cp).run(
                batch_parameters={"dataframe": frames[name]},
                run_id=RunIdentifier(run_name=f"{label} {name}"),
            )
            for vr in result.run_results.values():
                results += [_result(name, r) for r in vr.results]
                failures += [_failure(name, r) for r in vr.results if not r.success]
        summary = {
            "source": source,
            "success": not failures,
            "raw_sha256": raw_sha256 or {},
            "expectations": {"run": len(results), "failed": len(failures)},
            "failures": failures,
            "splits": tables.split_figures(table, frames["class_share"]),
        }
        (tmp / config.SUMMARY_JSON).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (tmp / "index.html").write_text(report_html(summary, results, label))
    if failures:
        lines = [f["message"] for f in failures]
        raise ValidationFailed(
            f"{len(lines)} expectation(s) failed (report in {out_dir}):\n" + "\n".join(lines)
        )
    return summary


def run(params: Params, raw_dir: Path, out_dir: Path) -> dict:
    """Validate data/raw/<source>/ against params.validate; raise ValidationFailed on failure."""
    hashes = gate.raw_hashes(raw_dir)  # before reading: the files checked are these bytes
    splits = tables.load_splits(raw_dir)
    return check(splits, params.validate, out_dir, params.data.source, hashes)


def main(argv: list[str] | None = None) -> int:
    def body(params: Params) -> str:
        start = time.perf_counter()
        summary = run(params, config.raw_dir(params.data.source), config.validation_dir())
        n, s = summary["expectations"]["run"], time.perf_counter() - start
        return f"{n} expectations passed on {params.data.source} ({s:.1f} s)"

    return runner.run_stage("validate", body, argv)


if __name__ == "__main__":
    sys.exit(main())
