"""`dvc plots show` with the template `make setup` builds renders every plot with no
network: headless Chromium loads the page behind a proxy that refuses everything."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.devtools import plots_template
from tests.helpers import CHROMIUM, REPO, copy_tiny, headless_chromium, plain_env, sh

pytestmark = [pytest.mark.slow]
DVC = str(Path(sys.executable).parent / "dvc")


def rendered_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, with every network request refused."""
    proc = subprocess.run(
        headless_chromium(
            page.parent / "profile",
            "--proxy-server=127.0.0.1:9",  # nothing listens: any CDN request fails
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.as_uri(),
        ),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def page_plots(root: Path, out: Path) -> tuple[str, int]:
    """Render `dvc plots show` into ``out``; the DOM and the number of Vega plots in it."""
    sh([DVC, "plots", "show", "-o", str(out)], root, plain_env())
    html = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in html
    return rendered_dom(out / "index.html"), len(re.findall(r"vegaEmbed\('#", html))


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (apt-get install chromium)")
@pytest.mark.skipif(
    not plots_template.template_path(REPO).is_file(),
    reason="no tools/vega/dvc_plots.html: run `make setup` with npm available",
)
def test_every_dvc_plot_renders_offline(tiny_built, tmp_path):
    root = copy_tiny(tiny_built, tmp_path / "proj")
    shutil.copy2(plots_template.template_path(REPO), plots_template.template_path(root))
    plots_template.configure(root)
    dom, n_plots = page_plots(root, tmp_path / "page")
    models = yaml.safe_load((root / "params.yaml").read_text())["models"]
    assert len(models) == 8 and "ensemble" in models  # the tiny project's, the ensemble's too
    # the accuracy bars, then per model: accuracy per epoch, confusion
    assert n_plots == 1 + 2 * len(models)
    # vega-embed draws each plot into a canvas inside its div: an offline page without the
    # libraries leaves them empty
    assert dom.count("<canvas") == n_plots, dom[:2000]
    assert dom.count('class="vega-embed') == n_plots
    # a heading per group of dvc.yaml's top-level plots (tools/vega/template.html)
    headings = re.findall(r'<h2 class="plot-group">([^<]+)</h2>', dom)
    assert headings[0] == "compare" and sorted(headings[1:]) == sorted(models)
