"""The experiments table narrowed to what changed, within 120 columns (``make exps``).

    python -m pipeline.devtools.exps [--width N] [dvc exp show options: -A, -n 3, --rev R]

``dvc exp show --only-changed`` keeps every metric of every model and cuts each cell to "…"
at 120 columns. This reads ``dvc exp show --json`` (DVC 3: a list of commits, each with
``data.params``/``data.metrics`` per file and ``experiments[].revs[]`` of the same shape) and
prints a row per commit and experiment: the params that differ between the rows, then the
metrics that differ for the models those params belong to (``models.<m>.*``; its dataset's
params; every model for ``seed`` and ``data``), accuracy first. Other models whose metrics
differ are named below the table. Columns past the width go to a further table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import config
from pipeline.core.params import flatten

WIDTH = 120
GAP = "  "
PARAMS_FILE = "params.yaml"
GLOBAL_PARAMS = ("seed", "data.")  # a change here changes every model


@dataclass
class Row:
    label: str  # what the Experiment column shows
    rev: str
    created: str  # not shown: the table keeps its columns for what changed
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> name -> value
    note: str = ""  # an error or a queued/running state


def _created(ts: str | None) -> str:
    return ts.replace("T", " ")[5:16] if ts else "-"  # 2026-12-03T14:54:50 -> 12-03 14:54


def _row(label: str, rev: dict, state: str | None = None) -> Row:
    data = rev.get("data") or {}
    params = flatten(
        ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {}, lists=False
    )
    metrics = {
        Path(path).stem: m["data"]
        for path, m in (data.get("metrics") or {}).items()
        if isinstance(m, dict) and isinstance(m.get("data"), dict)
    }
    sha = rev.get("rev") or ""
    err = rev.get("error") or data.get("error")
    note = state or (
        f"error: {err.get('msg', err) if isinstance(err, dict) else err}" if err else ""
    )
    return Row(label, sha[:7] if sha != "workspace" else "", _created(data.get("timestamp")),
               params, metrics, note)  # fmt: skip


def rows(show: list[dict]) -> list[Row]:
    """The rows of ``dvc exp show --json``: commits (workspace, branch) and their experiments."""
    out = []
    for commit in show:
        out.append(_row(commit.get("name") or commit.get("rev", "?"), commit))
        exps = commit.get("experiments") or []
        for i, exp in enumerate(exps):
            revs = exp.get("revs") or []
            if not revs:
                continue
            tip = revs[0]
            branch = "└─ " if i == len(exps) - 1 else "├─ "
            name = exp.get("name") or tip.get("name") or (tip.get("rev") or "")[:7]
            executor = exp.get("executor")
            state = executor.get("state") if isinstance(executor, dict) else executor
            state = state if state and state not in ("success",) else None
            out.append(_row(branch + name, tip, state))
    return out


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _differs(values: list[Any]) -> bool:
    return len({_key(v) for v in values}) > 1


def changed_params(rs: list[Row]) -> list[str]:
    """Params whose value differs between rows (rows without params are left out)."""
    have = [r for r in rs if r.params]
    keys = dict.fromkeys(k for r in have for k in r.params)
    return [k for k in keys if _differs([r.params.get(k) for r in have])]


def changed_models(rs: list[Row], params: list[str]) -> list[str]:
    """The models whose params (their own, their dataset's, or global ones) changed."""
    models: dict[str, None] = {}
    every = dict.fromkeys(k.split(".")[1] for r in rs for k in r.params if k.startswith("models."))
    for key in params:
        parts = key.split(".")
        if parts[0] == "models" and len(parts) > 1:
            models[parts[1]] = None
        elif parts[0] == "datasets" and len(parts) > 1:
            for m in every:
                if any(r.params.get(f"models.{m}.dataset") == parts[1] for r in rs):
                    models[m] = None
        elif key == GLOBAL_PARAMS[0] or key.startswith(GLOBAL_PARAMS[1:]):
            models |= every
    return list(models)


def changed_metrics(rs: list[Row], model: str) -> list[str]:
    """The metrics of ``model`` that differ between rows, accuracy first; the accuracy's
    interval bounds (``accuracy_ci95_*``) are left out: they follow the accuracy."""
    have = [r for r in rs if model in r.metrics]
    names = dict.fromkeys(
        k for r in have for k in r.metrics[model] if not k.startswith("accuracy_ci95")
    )
    out = [k for k in names if _differs([r.metrics[model].get(k) for r in have])]
    return sorted(out, key=lambda k: k != "accuracy")


def _fmt(v: Any, metric: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool | int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}" if metric and abs(v) < 100 else f"{v:.6g}"
    text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    return text if len(text) <= 24 else text[:23] + "…"


@dataclass
class Column:
    top: str
    name: str
    cells: list[str]
    left: bool = False

    def width(self) -> int:
        return max(len(self.name), *(len(c) for c in self.cells))

    def cell(self, text: str, width: int) -> str:
        text = text if len(text) <= width else text[: width - 1] + "…"
        return text.ljust(width) if self.left else text.rjust(width)


def columns(rs: list[Row]) -> tuple[list[Column], list[Column], list[str]]:
    """The fixed columns, the changed ones, and the other models whose metrics differ."""
    fixed = [
        Column("", "Experiment", [r.label for r in rs], left=True),
        Column("", "rev", [r.rev for r in rs], left=True),
    ]
    params = changed_params(rs)
    cols = []
    for key in params:
        top, _, name = key.removeprefix("models.").rpartition(".")
        cols.append(Column(top or "params", name, [_fmt(r.params.get(key)) for r in rs]))
    models = changed_models(rs, params)
    for m in models:
        for metric in changed_metrics(rs, m):
            cells = [_fmt(r.metrics.get(m, {}).get(metric), metric=True) for r in rs]
            cols.append(Column(m, metric, cells))
    others = [m for m in dict.fromkeys(m for r in rs for m in r.metrics) if m not in models]
    return fixed, cols, [m for m in others if changed_metrics(rs, m)]


def _widths(table: list[Column], cap: int) -> list[int]:
    """Each column's width (at most ``cap``), the last of a group widened to fit its name."""
    widths = [min(c.width(), cap) for c in table]
    i = 0
    while i < len(table):
        j = i
        while j + 1 < len(table) and table[j + 1].top == table[i].top:
            j += 1
        span = sum(widths[i : j + 1]) + len(GAP) * (j - i)
        widths[j] += max(0, min(len(table[i].top), cap) - span)
        i = j + 1
    return widths


def _lines(table: list[Column], widths: list[int], n: int) -> list[str]:
    head = ""
    for i, c in enumerate(table):
        if c.top and (i == 0 or c.top != table[i - 1].top):  # a group's name over its span
            span = sum(widths[i:]) + len(GAP) * len(widths[i:])
            head = head.ljust(sum(widths[:i]) + len(GAP) * i) + c.top[:span]
    out = [head.rstrip()] if head.strip() else []
    out.append(GAP.join(c.cell(c.name, w) for c, w in zip(table, widths, strict=True)).rstrip())
    out.append(GAP.join("-" * w for w in widths))
    for r in range(n):
        cells = (c.cell(c.cells[r], w) for c, w in zip(table, widths, strict=True))
        out.append(GAP.join(cells).rstrip())
    return out


def render(rs: list[Row], width: int = WIDTH) -> str:
    """The table (in as many parts as the width needs), then notes; no line exceeds width."""
    if not rs:
        return "no experiments: run one with `dvc exp run -S <param>=<value>`"
    fixed, cols, others = columns(rs)
    cap = max(8, width - sum(c.width() + len(GAP) for c in fixed))

    def fits(part: list[Column]) -> bool:
        table = fixed + part
        return sum(_widths(table, cap)) + len(GAP) * (len(table) - 1) <= width

    parts: list[list[Column]] = [[]]
    for c in cols:
        if parts[-1] and not fits([*parts[-1], c]):
            parts.append([])
        parts[-1].append(c)
    lines: list[str] = []
    for part in parts:
        if lines:
            lines.append("")
        lines += _lines(fixed + part, _widths(fixed + part, cap), len(rs))
    if not cols:
        lines.append("no param or metric differs between these rows")
    for r in rs:
        if r.note:
            lines.append(f"{r.label.lstrip('├└─ ')}: {r.note}")
    if others:
        text = "metrics also differ for: " + ", ".join(others) + " (`dvc metrics diff`)"
        lines += textwrap.wrap(text, width)
    return "\n".join(line if len(line) <= width else line[: width - 1] + "…" for line in lines)


def exp_show(root: Path, args: list[str]) -> list[dict]:
    """``dvc exp show --json [args]`` in ``root``; RuntimeError with DVC's message."""
    if not root.is_dir():
        raise RuntimeError(f"{root}: no such folder")
    dvc = Path(sys.executable).parent / "dvc"
    cmd = [str(dvc if dvc.exists() else "dvc"), "exp", "show", "--json", *args]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"`dvc exp show --json {' '.join(args)}` failed in {root}: {last}")
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise RuntimeError(f"`dvc exp show --json` printed no JSON ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.devtools.exps",
        description="The experiments table narrowed to the changed params and models' metrics.",
        epilog="Other options go to `dvc exp show` (e.g. -A, -n 3, --rev main).",
    )
    ap.add_argument("--width", type=int, default=WIDTH, help="columns (default %(default)s)")
    ap.add_argument("--root", type=Path, default=config.ROOT, help="the DVC project")
    args, rest = ap.parse_known_args(argv)
    if args.width < 60:
        print(f"exps: error: --width {args.width}: at least 60 columns", file=sys.stderr)
        return 2
    try:
        show = exp_show(args.root, rest)
    except RuntimeError as exc:
        print(f"exps: error: {exc}", file=sys.stderr)
        return 1
    print(render(rows(show), args.width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
