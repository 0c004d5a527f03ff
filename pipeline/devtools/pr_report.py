"""The pull-request report: what a change did, against the base branch.

    python -m pipeline.devtools.pr_report --event pull_request --base-ref main \\
        --out pr-report --summary "$GITHUB_STEP_SUMMARY"

Appends to the job summary the `dvc params diff` and `dvc metrics diff` tables (markdown)
and the stages that ran, and renders `dvc plots diff` (confusion matrices, per-epoch
curves, the figures) into ``--out``: an ``index.html`` that carries its own Vega (the
template `make setup` builds, see pipeline/devtools/plots_template.py) and the PNGs beside it,
uploaded by the workflow as an artifact and linked from the summary.

Meant to run after a failed step too: each part that cannot be made becomes one line
saying why, the summary is written in one piece (no half-open block), and the exit code is
0 unless the summary itself cannot be written.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from pipeline.core import config
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


def summary(base: str, out: Path, root: Path) -> str:
    lines = [f"## Pipeline report (against `{base}`)", ""]
    lines += _table("Params", ["params", "diff", base, "--md"], root, "no params changed")
    lines += _table(
        "Metrics",
        ["metrics", "diff", base, "--md", "--precision", "4"],
        root,
        "no metric changed",
    )
    ok, text = render_plots(base, out, root)
    lines += ["### Plots", ""]
    if ok:
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
