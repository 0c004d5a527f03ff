"""``python -m pipeline.bench``, a documented entry point: see pipeline/devtools/bench.py."""

import sys

from pipeline.devtools.bench import main

if __name__ == "__main__":
    sys.exit(main())
