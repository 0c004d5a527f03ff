"""``python -m pipeline.serve``: see pipeline/serve/cli.py."""

import sys

from pipeline.serve.cli import main

sys.exit(main())
