"""``python -m pipeline.predict``, a documented entry point: see pipeline/tools/predict.py."""

import sys

from pipeline.tools.predict import main

if __name__ == "__main__":
    sys.exit(main())
