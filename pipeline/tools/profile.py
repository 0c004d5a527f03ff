"""Apply a params profile: deep-merge profiles/<name>.yaml onto params.yaml.

    python -m pipeline.profile tiny            # rewrites params.yaml in place
    python -m pipeline.profile tiny --check    # only parse the merged params

The merged file is parsed with the params schema before it is written, so a profile with
an unknown key fails without touching params.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.core import config, params
from pipeline.core.io import atomic_write


def merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for key, value in overlay.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return overlay


def profile_path(name: str, root: Path = config.ROOT) -> Path:
    return root / "profiles" / f"{name}.yaml"


def apply(name: str, root: Path = config.ROOT, write: bool = True) -> dict:
    path = profile_path(name, root)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise params.ParamsError(f"{path}: no such profile (known: {', '.join(known)})")
    target = config.params_path(root)
    merged = merge(yaml.safe_load(target.read_text()), yaml.safe_load(path.read_text()))
    params.parse(merged)
    if write:
        atomic_write(target, yaml.safe_dump(merged, sort_keys=False, default_flow_style=None))
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="profile name: profiles/<name>.yaml")
    parser.add_argument("--check", action="store_true", help="parse only, write nothing")
    args = parser.parse_args(argv)
    try:
        apply(args.name, write=not args.check)
    except params.ParamsError as exc:
        print(f"profile: error: {exc}", file=sys.stderr)
        return 1
    print(f"profile {args.name}: {'ok' if args.check else 'applied to params.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
