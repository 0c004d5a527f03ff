"""The validate stage's report page renders offline: headless Chromium with every host name
unresolvable and every request sent to a closed proxy still shows the run, each suite and
each expectation's row (GX's data docs loaded Bootstrap, jQuery and Vega from CDNs)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.core.params import RowBounds, ShareBounds, ValidateParams
from pipeline.data.idx import encode_idx
from pipeline.stages import validate
from tests.helpers import CHROMIUM, headless_chromium

N_TRAIN, N_TEST = 100, 30


def _raw(folder: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    arrays = []
    for n in (N_TRAIN, N_TEST):
        ink = rng.random((n, 28, 28)) < 0.2
        arrays += [
            (rng.integers(1, 256, (n, 28, 28)) * ink).astype(np.uint8),
            rng.permutation(np.arange(n) % 10).astype(np.uint8),
        ]
    for name, arr in zip(config.RAW_FILES, arrays, strict=True):
        (folder / name).write_bytes(encode_idx(arr))
    return folder


def _params(max_share: float = 0.15) -> params_mod.Params:
    v = ValidateParams(
        rows={"train": RowBounds(min=N_TRAIN, max=N_TRAIN), "test": RowBounds(min=1, max=N_TEST)},
        labels=tuple(range(10)),
        pixel_min=0,
        pixel_max=255,
        class_share=ShareBounds(min=0.05, max=max_share),
        min_nonzero_pixels=1,
        max_train_test_overlap=0.001,
        image_shape=(28, 28),
    )
    return params_mod.load().model_copy(update={"validate": v})


def _dom(page: Path) -> str:
    """The page's DOM as headless Chromium renders it with no network at all."""
    proc = subprocess.run(
        headless_chromium(
            page.parent.parent / "profile",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",  # nothing listens there
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_page_is_self_contained_and_names_run_and_suites(tmp_path):
    out = tmp_path / "validation"
    summary = validate.run(_params(), _raw(tmp_path / "raw"), out)
    page = (out / "index.html").read_text()
    # nothing to fetch: no script, no stylesheet link, no image, no URL at all
    assert not re.search(r"<script|<link|<img|https?://|//cdn", page, re.I)
    assert (out / config.SUMMARY_JSON).is_file()
    name = validate.run_name("mnist", summary["raw_sha256"])
    assert re.fullmatch(r"mnist @ [0-9a-f]{12}", name) and name in page
    assert "__none__" not in page and "Data asset: None" not in page
    # deterministic: the same files give the same page (a DVC output)
    again = tmp_path / "again"
    validate.run(_params(), _raw(tmp_path / "raw2"), again)
    assert (again / "index.html").read_text() == page


def test_failed_run_page_names_the_failure(tmp_path):
    out = tmp_path / "validation"
    with pytest.raises(validate.ValidationFailed):
        validate.run(_params(max_share=0.09), _raw(tmp_path / "raw"), out)  # every class 10%
    page = (out / "index.html").read_text()
    assert "FAILED" in page and "Suite class_share: 0 of 1 passed" in page
    assert "share of its split in [0.05, 0.09]" in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (apt-get install chromium)")
def test_page_renders_its_tables_with_the_network_blocked(tmp_path):
    out = tmp_path / "validation"
    validate.run(_params(), _raw(tmp_path / "raw"), out)
    dom = _dom(out / "index.html")
    assert "<h1>Data validation: mnist</h1>" in dom
    for suite, n in (("train", 7), ("test", 8), ("class_share", 1)):
        assert f"Suite {suite}: {n} of {n} passed" in dom
    assert "PASSED</span>: 16 of 16 expectations passed" in dom
    assert dom.count("<tr>") >= 16 + 10  # an expectation a row, a class a row
    assert "label in {0..9}" in dom and "0 of 100 rows unexpected" in dom
