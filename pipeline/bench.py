"""``python -m pipeline.bench``, a documented entry point: see pipeline/tools/bench.py."""

import sys

from pipeline.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
