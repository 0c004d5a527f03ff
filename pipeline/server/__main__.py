"""``python -m pipeline.server``: see pipeline/server/cli.py."""

import sys

from pipeline.server.cli import main

sys.exit(main())
