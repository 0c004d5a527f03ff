"""``python -m pipeline.promote``: see pipeline/promote/cli.py."""

import sys

from pipeline.promote.cli import main

sys.exit(main())
