"""The pull-request report: what a change did, against the base branch.

    python -m pipeline.devtools.pr_report --event pull_request --base-ref main \\
        --out pr-report --summary "$GITHUB_STEP_SUMMARY" --comment pr-comment.md

Appends to the job summary the `dvc params diff` table, the metrics table and the stages
that ran, and renders `dvc plots diff` (confusion matrices, per-epoch curves, the figures)
into ``--out``: an ``index.html`` that carries its own Vega (the template `make setup`
builds, see pipeline/devtools/plots_template.py) and the PNGs beside it, uploaded by the
workflow as an artifact and linked from the summary. ``--comment`` writes the markdown of
the pull-request comment (a hidden marker, the metrics table): the workflow adds the links
and posts it, or edits its earlier one.

The metrics table (from `dvc metrics diff --json`) lists models in params.yaml's order,
metrics by name, and marks each change: ▲/▼ the direction with the delta, then better or
worse (loss and errors: lower is better; ``n_*`` counts: neither).

When the base's plots cannot be had (a base that is not a commit here, or plot files in
neither DVC's cache nor its remote), one line at the top of the summary, the comment and
``index.html`` says so: the page then shows this change only.

It also compares each model's numeric environment (``metrics/<model>.env.json``,
pipeline/core/numenv.py) in the base with this change's: when a model's base ran on a
different kernel path, a line at the top of the summary and of ``index.html`` names the
fields that differ, since its metrics then move within seed noise without any change.

Meant to run after a failed step too: each part that cannot be made becomes one line
saying why, the summary is written in one piece (no half-open block), and the exit code is
0 unless the summary or the comment cannot be written.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from pipeline.core import config, numenv
from pipeline.devtools import plots_template

DVC = str(Path(sys.executable).parent / "dvc")


def base_revision(event: str, base_ref: str) -> str:
    """The commit a change is compared with: the base branch of a pull request, else the
    last commit (a push compares its fresh outputs with what it committed)."""
    return f"origin/{base_ref}" if event == "pull_request" else "HEAD"


def _dvc(args: list[str], root: Path) -> tuple[bool, str]:
    proc = subprocess.run([DVC, *args], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return True, proc.stdout.strip()
    lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
    return False, lines[-1].strip() if lines else f"exit code {proc.returncode}"


def _table(title: str, args: list[str], root: Path, empty: str) -> list[str]:
    ok, text = _dvc(args, root)
    if not ok:
        return [f"### {title}", "", f"_`dvc {' '.join(args[:2])}` failed: {text}_", ""]
    rows = [ln for ln in text.splitlines() if ln.startswith("|")]
    if len(rows) <= 2:  # dvc prints the header of an empty table
        text = ""
    return [f"### {title}", "", text or f"_{empty}_", ""]


def render_plots(base: str, out: Path, root: Path) -> tuple[bool, str]:
    """`dvc plots diff <base>` into ``out``; the offline template when make setup built it."""
    args = ["plots", "diff", base, "--out", str(out)]
    template = plots_template.template_path(root)
    if template.is_file():
        args += ["--html-template", str(template)]
    ok, text = _dvc(args, root)
    if ok and not (out / "index.html").is_file():
        return False, f"no {out / 'index.html'} written"
    return ok, text


MARKER = "<!-- pipeline-report -->"  # finds the bot's earlier comment (the workflow edits it)


def base_missing(base: str, root: Path) -> str | None:
    """One line saying why the plots of ``base`` cannot be drawn, or None when they can
    (or when `dvc plots diff` itself fails: its own line says so). DVC reads a commit's
    plots from its cache, else from the default remote; ``--json`` names each file it
    could read from neither."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return f"`{base}` is not a commit in this checkout: the page shows this change only."
    with tempfile.TemporaryDirectory(prefix="pr-report-check-") as scratch:
        ok, text = _dvc(["plots", "diff", base, "--json", "--out", scratch], root)
    if not ok:
        return None
    try:
        errors = json.loads(text).get("errors", [])
    except (ValueError, AttributeError):
        return None
    files, other = [], []
    for error in errors:
        if not isinstance(error, dict) or error.get("rev") != base:
            continue
        if error.get("source"):
            if error["source"] not in files:
                files.append(error["source"])
        elif error.get("msg"):
            other.append(str(error["msg"]).splitlines()[0])
    if files:
        return (
            f"{len(files)} plot file(s) of `{base}` could be read from neither DVC's cache nor "
            f"its remote (first: `{files[0]}`): the page shows this change only for them; the "
            f"metrics compare with those committed at `{base}`."
        )
    if other:
        return f"the plots of `{base}` cannot be read ({other[0]}): the page shows this change."
    return None


def model_order(root: Path) -> list[str]:
    """The models in params.yaml's order ([] when it cannot be read)."""
    try:
        models = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))["models"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []
    return [str(m) for m in models] if isinstance(models, dict) else []


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is (loss, errors), 0 for counts (``n_*``)."""
    name = metric.rsplit(".", 1)[-1].lower()
    if name.startswith("n_") or name == "n":
        return 0
    return -1 if "loss" in name or "error" in name else 1


def _number(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}" if value == 0 or 1e-4 <= abs(value) < 1e4 else f"{value:.3e}"


def change(metric: str, old: object, new: object) -> str:
    """The change cell: ▲/▼ with the delta, then better or worse by ``direction``."""
    if old is None:
        return "new"
    if new is None:
        return "removed"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new)):
        return "changed"
    delta = new - old
    if delta == 0:
        return "="
    if isinstance(delta, int):
        text = f"{delta:+d}"
    else:
        text = f"{delta:+.4f}" if abs(delta) >= 5e-5 else f"{delta:+.1e}"
    arrow = "▲" if delta > 0 else "▼"
    sign = direction(metric) * (1 if delta > 0 else -1)
    verdict = {1: " better", -1: " worse"}.get(sign, "")
    return f"{arrow} {text}{verdict}"


def metrics_table(base: str, root: Path) -> list[str]:
    """The changed metrics of `dvc metrics diff <base> --json` as a markdown table: models in
    params.yaml's order (then any other file by path), metrics by name, a change cell each."""
    args = ["metrics", "diff", base, "--json"]
    proc = subprocess.run([DVC, *args], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        return [f"_`dvc metrics diff` failed: {why}_"]
    try:
        diff = json.loads(proc.stdout or "{}")
    except ValueError:
        return [f"_`dvc metrics diff` failed: not JSON: {proc.stdout.strip()[:80]}_"]
    notes = [
        f"_{ln.strip().removeprefix('ERROR: ')}_"
        for ln in proc.stderr.splitlines()
        if "failed to load some metrics" in ln
    ]
    order = model_order(root)

    def model(path: str) -> str:
        match = re.fullmatch(r"metrics/([^/]+)\.json", path.replace("\\", "/"))
        return match.group(1) if match else path

    def rank(path: str) -> tuple[int, str]:
        name = model(path)
        return (order.index(name), "") if name in order else (len(order), path)

    rows = []
    for path in sorted(diff, key=rank):
        metrics = diff[path] if isinstance(diff[path], dict) else {}
        for metric in sorted(metrics):
            cell = metrics[metric] if isinstance(metrics[metric], dict) else {}
            old, new = cell.get("old"), cell.get("new")
            rows.append(
                f"| {model(path)} | {metric} | {_number(old)} | {_number(new)} | "
                f"{change(metric, old, new)} |"
            )
    if not rows:
        return [*notes, "_no metric changed_"]
    return [
        *notes,
        f"| Model | Metric | `{base}` | this change | Change |",
        "|---|---|--:|--:|---|",
        *rows,
        "",
        "▲/▼: the value went up/down; better or worse for that metric (loss and errors: "
        "lower is better; `n_*` are counts).",
    ]


def _base_envs(base: str, root: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The numeric environments committed at ``base`` ({model: env}) and the files there
    that cannot be read ({model: why}); ValueError (one markdown line) when ``base`` cannot
    be read."""
    proc = subprocess.run(
        ["git", "ls-tree", "--name-only", base, "metrics/"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    envs, bad = {}, {}
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        why = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise ValueError(f"_`git ls-tree {base}` failed: {why}_")
    for name in proc.stdout.split():
        if not name.endswith(".env.json"):
            continue
        model = Path(name).name.removesuffix(".env.json")
        shown = subprocess.run(
            ["git", "show", f"{base}:{name}"], cwd=root, capture_output=True, check=False
        )
        try:
            data = json.loads(shown.stdout) if shown.returncode == 0 else None
        except ValueError:
            data = None
        if isinstance(data, dict):
            envs[model] = {str(k): str(v) for k, v in data.items()}
        else:
            bad[model] = f"`{base}:{name}` is not a numeric-environment JSON object"
    return envs, bad


def environment(base: str, root: Path) -> tuple[list[str], list[str]]:
    """Base and this change's ``metrics/<model>.env.json`` compared: (warnings, section).

    A warning per model whose two runs took different kernel paths (their fingerprint
    fields differ), naming every field that differs; the section says per model what is
    known, including models one side does not record."""
    try:
        base_envs, problems = _base_envs(base, root)
    except ValueError as exc:
        return [], [str(exc)]
    head_envs = {}
    for path in sorted((root / "metrics").glob("*.env.json")):
        model = path.name.removesuffix(".env.json")
        try:
            head_envs[model] = numenv.read(path)
        except ValueError as exc:
            problems[model] = str(exc)
    warnings, section, same = [], [], []
    only_head, only_base = [], []
    for model in sorted(set(base_envs) | set(head_envs) | set(problems)):
        if model in problems:
            section.append(f"- {model}: {problems[model]}")
        elif model not in base_envs:
            only_head.append(model)
        elif model not in head_envs:
            only_base.append(model)
        else:
            a, b = base_envs[model], head_envs[model]
            diff = numenv.differences(a, b)
            if not set(diff) & set(numenv.FINGERPRINT_FIELDS):
                same.append(model)
                continue
            warnings.append(
                f"{model}: base and this change ran on different kernel paths "
                f"({', '.join(diff)}): differences within seed noise are expected"
            )
            changes = "; ".join(f"{k} {a.get(k, '–')} → {b.get(k, '–')}" for k in diff)
            section.append(f"- {model}: different kernel path: {changes}")
    if same:
        section.append(
            "- same kernel path as the base (a metric that moved, moved because of this change): "
            + ", ".join(same)
        )
    if only_head:
        section.append(
            f"- the base records no numeric environment for {', '.join(only_head)}: "
            "whether their kernel paths match is unknown"
        )
    if only_base:
        section.append(f"- this change records no numeric environment for {', '.join(only_base)}")
    return warnings, section or ["_no metrics/*.env.json in the base or this change_"]


def mark_page(page: Path, warnings: list[str], missing: str | None = None) -> None:
    """Put at the top of the plots page ``page`` (after its ``<body>``) the line saying the
    base is missing, then ``warnings``; nothing to say leaves the page as it is."""
    if not (warnings or missing) or not page.is_file():
        return
    note = ""
    if missing:
        note += (
            '<p class="base-missing" style="border:2px solid #cf222e;padding:0.5em 1em;'
            'margin:1em 0;font-family:sans-serif"><strong>Base missing:</strong> '
            f"{html.escape(missing)}</p>"
        )
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        note += (
            '<div class="numeric-environment" style="border:2px solid #d29922;padding:0.5em 1em;'
            'margin:1em 0;font-family:sans-serif"><strong>Numeric environment</strong>'
            f"<ul>{items}</ul></div>"
        )
    text = page.read_text(encoding="utf-8")
    body = re.search(r"<body[^>]*>", text, flags=re.IGNORECASE)
    at = body.end() if body else 0
    page.write_text(text[:at] + note + text[at:], encoding="utf-8")


def report(base: str, out: Path, root: Path) -> tuple[str, str]:
    """The job summary and the pull-request comment (markdown), and the plots in ``out``."""
    missing = base_missing(base, root)
    warnings, section = environment(base, root)
    top = [f"> **Base missing:** {missing}", ""] if missing else []
    for warning in warnings:  # one blockquote each, at the top
        top += [f"> **Numeric environment:** {warning}", ""]
    metrics = ["### Metrics", "", *metrics_table(base, root), ""]
    lines = [f"## Pipeline report (against `{base}`)", "", *top]
    lines += _table("Params", ["params", "diff", base, "--md"], root, "no params changed")
    lines += metrics
    lines += ["### Numeric environment (`metrics/<model>.env.json`)", "", *section, ""]
    ok, text = render_plots(base, out, root)
    lines += ["### Plots", ""]
    if ok:
        mark_page(out / "index.html", warnings, missing)
        images = sorted(p.name for p in out.rglob("*.png"))
        sides = f"`{base}` and this change side by side"
        if missing:
            sides = "this change (the base's are missing: see the top)"
        lines.append(
            f"Confusion matrices, per-epoch curves and {len(images)} figures of {sides}: "
            "`index.html` of the `pr-report` artifact."
        )
    else:
        lines.append(f"_`dvc plots diff` failed: {text}_")
    comment = [MARKER, f"## Pipeline report: this change against `{base}`", "", *top, *metrics]
    return "\n".join(lines) + "\n", "\n".join(comment) + "\n"


def summary(base: str, out: Path, root: Path) -> str:
    """The job summary of ``report``."""
    return report(base, out, root)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--event", default="pull_request", help="github.event_name")
    parser.add_argument("--base-ref", default="main", help="the pull request's base branch")
    parser.add_argument("--out", type=Path, default=Path("pr-report"), help="report folder")
    parser.add_argument("--summary", type=Path, help="file to append the markdown to")
    parser.add_argument("--comment", type=Path, help="file to write the comment's markdown to")
    args = parser.parse_args(argv)
    base = base_revision(args.event, args.base_ref)
    text, comment = report(base, args.out, config.ROOT)
    written = []
    for path, content, mode in ((args.summary, text, "a"), (args.comment, comment, "w")):
        if path is None:
            continue
        try:
            with path.open(mode, encoding="utf-8") as f:
                f.write(content)
        except OSError as exc:
            print(f"pr_report: error: {path}: {exc}", file=sys.stderr)
            return 1
        written.append(str(path))
    if args.summary is None:
        print(text, end="")
    else:
        print(f"pr_report: {', '.join(written)} written; plots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
