"""Build the offline HTML template of ``dvc plots show`` / ``dvc plots diff``.

    python -m pipeline.devtools.plots_template          # run by `make setup` after npm ci

DVC's own page loads Vega, Vega-Lite and vega-embed from a CDN, so offline every plot is
blank. This tool inlines the three libraries that ``npm ci`` installed in tools/vega/
(versions pinned by its package-lock.json) into tools/vega/template.html, writes the result
to tools/vega/dvc_plots.html (git-ignored), and points this checkout's DVC at it
(``plots.html_template`` in .dvc/config.local). Every page DVC writes is then one
standalone file that renders with no network.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.core import config

MARKER = "<!-- VEGA_BUNDLE -->"
BUNDLE = (  # load order: vega-embed needs the globals vega and vegaLite
    "vega/build/vega.min.js",
    "vega-lite/build/vega-lite.min.js",
    "vega-embed/build/vega-embed.min.js",
)


def vega_dir(root: Path = config.ROOT) -> Path:
    return root / "tools" / "vega"


def template_path(root: Path = config.ROOT) -> Path:
    """The filled template: what ``plots.html_template`` names."""
    return vega_dir(root) / "dvc_plots.html"


def build(root: Path = config.ROOT) -> Path:
    """Fill the template from tools/vega/node_modules; FileNotFoundError when npm ci did
    not run."""
    folder = vega_dir(root)
    scripts = []
    for rel in BUNDLE:
        path = folder / "node_modules" / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `cd {folder} && npm ci` first")
        code = path.read_text(encoding="utf-8")
        if "</script" in code.lower():
            raise ValueError(f"{path}: contains </script, cannot be inlined")
        scripts.append(f"<script>/* {rel} */\n{code}\n</script>")
    page = (folder / "template.html").read_text(encoding="utf-8")
    if MARKER not in page:
        raise ValueError(f"{folder / 'template.html'}: no {MARKER} line")
    out = template_path(root)
    out.write_text(page.replace(MARKER, "\n".join(scripts)), encoding="utf-8")
    return out


def configure(root: Path = config.ROOT) -> None:
    """Point this checkout's DVC at the template (.dvc/config.local, not committed): a path
    relative to .dvc/, so that copies of the checkout keep working."""
    rel = Path("..") / template_path(root).relative_to(root)
    dvc = Path(sys.executable).parent / "dvc"
    subprocess.run(
        [str(dvc), "config", "--local", "plots.html_template", str(rel)], cwd=root, check=True
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        print("usage: python -m pipeline.devtools.plots_template", file=sys.stderr)
        return 2
    try:
        out = build()
    except (FileNotFoundError, ValueError) as exc:
        print(f"plots_template: error: {exc}", file=sys.stderr)
        return 1
    configure()
    print(f"plots_template: {out.relative_to(config.ROOT)} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
