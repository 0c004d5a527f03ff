"""Move alias ``champion`` of a registered model by hand:
``python -m pipeline.promote <preset> <version>``.

The promotion gate of the plot stage (pipeline/tracking/gate.py) leaves a version at alias
``challenger`` when its gain is not significant, a class's recall drops, it was tested on
another split, or its run was a ``dvc exp run`` or had uncommitted changes. A person who has
looked at it promotes it here: the gate's numbers against the current champion are printed
first (settings from ``registry:`` in params.yaml), then the alias moves and the version's
``gate.*`` tags and description record that it was promoted by hand. The store is the
project's (``MLFLOW_TRACKING_URI``, else ``mlflow.db``).
"""

from __future__ import annotations

import argparse
import sys

from pipeline import tracking
from pipeline.core import params as params_mod


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.promote",
        description="Move alias champion of a registered model to one of its versions, "
        "printing the promotion gate's numbers against the current champion first.",
    )
    parser.add_argument("preset", help="the registered model (a preset of params.yaml)")
    parser.add_argument("version", help="the version number to make champion")
    args = parser.parse_args(argv)
    if not args.version.isdigit():
        print(f"promote: error: version must be a number, got {args.version!r}", file=sys.stderr)
        return 1
    try:
        params = params_mod.load()
        tracking.setup(params.mlflow.experiment)
        lines = tracking.promote_by_hand(args.preset, args.version, params.registry)
    except (LookupError, ValueError, OSError, tracking.TrackingError) as exc:
        print(f"promote: error: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(f"promote: {line}")
    return 0
