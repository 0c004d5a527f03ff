"""``python -m pipeline.profile``, a documented entry point: see pipeline/tools/profile.py."""

import sys

from pipeline.tools.profile import main

if __name__ == "__main__":
    sys.exit(main())
