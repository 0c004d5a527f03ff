"""The pull-request report: what a change did, against the base branch.

    python -m pipeline.devtools.pr_report --event pull_request --base-ref main \\
        --out pr-report --summary "$GITHUB_STEP_SUMMARY"

Appends to the job summary the `dvc params diff` and `dvc metrics diff` tables (markdown)
and the stages that ran, and renders `dvc plots diff` (confusion matrices, per-epoch
curves, the figures) into ``--out``: an ``index.html`` that carries its own Vega (the
template `make setup` builds, see pipeline/devtools/plots_template.py) and the PNGs beside it,
uploaded by the workflow as an artifact and linked from the summary.

It also compares each model's numeric environment (``metrics/<model>.env.json``,
pipeline/core/numenv.py) in the base with this change's: when a model's base ran on a
different kernel path, a line at the top of the summary and of ``index.html`` names the
fields that differ, since its metrics then move within seed noise without any change.

Meant to run after a failed step too: each part that cannot be made becomes one line
saying why, the summary is written in one piece (no half-open block), and the exit code is
0 unless the summary itself cannot be written.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
from pathlib import Path

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


def mark_page(page: Path, warnings: list[str]) -> None:
    """Put ``warnings`` at the top of the plots page ``page`` (after its ``<body>``)."""
    if not warnings or not page.is_file():
        return
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    note = (
        '<div class="numeric-environment" style="border:2px solid #d29922;padding:0.5em 1em;'
        'margin:1em 0;font-family:sans-serif"><strong>Numeric environment</strong>'
        f"<ul>{items}</ul></div>"
    )
    text = page.read_text(encoding="utf-8")
    body = re.search(r"<body[^>]*>", text, flags=re.IGNORECASE)
    at = body.end() if body else 0
    page.write_text(text[:at] + note + text[at:], encoding="utf-8")


def summary(base: str, out: Path, root: Path) -> str:
    lines = [f"## Pipeline report (against `{base}`)", ""]
    warnings, section = environment(base, root)
    for warning in warnings:  # one blockquote each, at the top
        lines += [f"> **Numeric environment:** {warning}", ""]
    lines += _table("Params", ["params", "diff", base, "--md"], root, "no params changed")
    lines += _table(
        "Metrics",
        ["metrics", "diff", base, "--md", "--precision", "4"],
        root,
        "no metric changed",
    )
    lines += ["### Numeric environment (`metrics/<model>.env.json`)", "", *section, ""]
    ok, text = render_plots(base, out, root)
    lines += ["### Plots", ""]
    if ok:
        mark_page(out / "index.html", warnings)
        images = sorted(p.name for p in out.rglob("*.png"))
        lines.append(
            f"Confusion matrices, per-epoch curves and {len(images)} figures of `{base}` and "
            "this change side by side: `index.html` of the `pr-report` artifact."
        )
    else:
        lines.append(f"_`dvc plots diff` failed: {text}_")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--event", default="pull_request", help="github.event_name")
    parser.add_argument("--base-ref", default="main", help="the pull request's base branch")
    parser.add_argument("--out", type=Path, default=Path("pr-report"), help="report folder")
    parser.add_argument("--summary", type=Path, help="file to append the markdown to")
    args = parser.parse_args(argv)
    base = base_revision(args.event, args.base_ref)
    text = summary(base, args.out, config.ROOT)
    if args.summary is None:
        print(text, end="")
        return 0
    try:
        with args.summary.open("a", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        print(f"pr_report: error: {args.summary}: {exc}", file=sys.stderr)
        return 1
    print(f"pr_report: summary appended to {args.summary}; plots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
