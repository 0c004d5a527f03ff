"""``python -m pipeline.predict``: see pipeline/predict/cli.py."""

import sys

from pipeline.predict.cli import main

sys.exit(main())
