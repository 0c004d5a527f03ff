"""validate: data/raw/<source>/ -> reports/validation/ (GX data docs and summary.json).

Great Expectations 1.x (ephemeral context, pandas data source) over per-image tables built in
pipeline/data/table.py: one suite per split on its images, one on the class shares, with the
thresholds of ``params.validate``. A failed expectation fails the stage with one line per
failure naming the offending values; the report (index.html, summary.json) is written either way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no network here; before the import

import great_expectations as gx
import numpy as np
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

SITE = "validation"
E = gx.expectations


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


def _context(docs_dir: Path) -> Any:
    """An in-memory context whose only data docs site is written to ``docs_dir``."""
    backend = {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)}
    site = {"class_name": "SiteBuilder", "store_backend": backend, "show_how_to_buttons": False}
    cfg = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={SITE: site},
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


def check(
    splits: tables.Splits,
    v: ValidateParams,
    out_dir: Path,
    source: str = "",
    raw_sha256: dict[str, str] | None = None,
) -> dict:
    """Validate the arrays; write data docs and summary.json (deterministic) into out_dir.
    ``raw_sha256`` (the checked files' hashes) goes into summary.json: prepare reads it
    (pipeline/data/gate.py) and refuses any other files."""
    table = tables.image_table(splits)
    frames = {s: table[table["split"] == s].astype({"split": str}) for s in ("train", "test")}
    for frame in frames.values():  # GX reports the (unnamed) index of offending rows: cheap
        frame.index = frame["index"].to_numpy()
    frames["class_share"] = tables.class_shares(table, v.labels)
    with atomic_dir(out_dir) as tmp:
        ctx = _context(tmp)
        asset = ctx.data_sources.add_pandas("raw").add_dataframe_asset("tables")
        batch = asset.add_batch_definition_whole_dataframe("whole")
        failures, n_run = [], 0
        for name, exps in suites(v).items():
            suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=exps))
            vd = gx.ValidationDefinition(name=name, data=batch, suite=suite)
            vd = ctx.validation_definitions.add(vd)
            fmt = {"result_format": "SUMMARY"}
            if name == "class_share":  # 20 rows; on image tables this costs a lookup per row
                fmt["unexpected_index_column_names"] = ["split", "label"]
            cp = gx.Checkpoint(name=name, validation_definitions=[vd], result_format=fmt)
            result = ctx.checkpoints.add(cp).run(batch_parameters={"dataframe": frames[name]})
            for vr in result.run_results.values():
                n_run += len(vr.results)
                failures += [_failure(name, r) for r in vr.results if not r.success]
        ctx.build_data_docs(site_names=[SITE])  # once: each build re-renders every page
        summary = {
            "source": source,
            "success": not failures,
            "raw_sha256": raw_sha256 or {},
            "expectations": {"run": n_run, "failed": len(failures)},
            "failures": failures,
            "splits": tables.split_figures(table, frames["class_share"]),
        }
        (tmp / config.SUMMARY_JSON).write_text(json.dumps(summary, indent=2, default=str) + "\n")
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
