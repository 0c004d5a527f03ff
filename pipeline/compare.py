"""``python -m pipeline.compare``, a documented entry point: see pipeline/tools/compare.py."""

import sys

from pipeline.tools.compare import main

if __name__ == "__main__":
    sys.exit(main())
