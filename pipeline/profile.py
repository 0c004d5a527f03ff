"""``python -m pipeline.profile``, a documented entry point: see pipeline/devtools/profile.py."""

import sys

from pipeline.devtools.profile import main

if __name__ == "__main__":
    sys.exit(main())
