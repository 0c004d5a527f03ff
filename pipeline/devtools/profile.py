"""Apply a params profile: deep-merge profiles/<name>.yaml onto params.yaml.

    python -m pipeline.profile tiny            # rewrites params.yaml in place
    python -m pipeline.profile tiny --check    # only parse the merged params
    python -m pipeline.profile tiny --set      # print the profile as `dvc exp run -S` flags

params.yaml is rewritten by a round-trip YAML parser (ruamel.yaml): its comments, key order
and flow-style mappings stay as they were, only the values the profile sets change. The
merged file is parsed with the params schema before it is written, so a profile with an
unknown key fails without touching params.yaml.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
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


def _round_trip():
    from ruamel.yaml import YAML

    rt = YAML()  # round trip: keeps comments, order, flow style and anchors
    rt.width = 4096  # never re-wrap a long line
    rt.preserve_quotes = True
    rt.indent(mapping=2, sequence=4, offset=2)  # params.yaml's own layout
    rt.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    rt.representer.add_representer(float, _represent_float)
    return rt


def _represent_float(representer, value: float):
    """Floats as PyYAML (YAML 1.1, what the stages read) also reads floats: ruamel writes
    0.00001 as ``1e-05``, which YAML 1.1 reads as a string; ``1.0e-05`` is a float to both."""
    if not math.isfinite(value):
        return representer.represent_float(value)  # .inf / .nan, read alike by both
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def merge_in_place(base: Any, overlay: Any) -> None:
    """Set every value of ``overlay`` into ``base`` (ruamel's commented mappings), keeping
    the nodes around them and so their comments."""
    for key, value in overlay.items():
        if key in base and isinstance(base[key], dict) and isinstance(value, dict):
            merge_in_place(base[key], value)
        elif key in base:
            base[key] = value
        else:  # a new key goes last: what followed the old last one (blank line) follows it
            last = next(reversed(base), None) if len(base) else None
            base[key] = _flow(value)  # one line, as params.yaml writes its small mappings
            after = base.ca.items.pop(last, None) if last is not None else None
            if after is not None:
                base.ca.items[key] = after


def _flow(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    from ruamel.yaml.comments import CommentedMap

    flow = CommentedMap((k, _flow(v)) for k, v in value.items())
    flow.fa.set_flow_style()
    return flow


def set_flags(overlay: Any, prefix: str = "") -> list[str]:
    """The overlay as ``-S key=value`` flags of ``dvc exp run`` (leaves only)."""
    flags = []
    for key, value in overlay.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flags += set_flags(value, path + ".")
        else:
            flags += ["-S", f"{path}={json.dumps(value)}"]
    return flags


def profile_path(name: str, root: Path = config.ROOT) -> Path:
    return root / "profiles" / f"{name}.yaml"


def apply(name: str, root: Path = config.ROOT, write: bool = True) -> dict:
    path = profile_path(name, root)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise params.ParamsError(f"{path}: no such profile (known: {', '.join(known)})")
    target = config.params_path(root)
    overlay = yaml.safe_load(path.read_text())
    merged = merge(yaml.safe_load(target.read_text()), overlay)
    params.parse(merged)
    if write:
        import io

        rt = _round_trip()
        doc = rt.load(target.read_text())
        merge_in_place(doc, overlay)
        buf = io.StringIO()
        rt.dump(doc, buf)
        if yaml.safe_load(buf.getvalue()) != merged:  # the round trip must mean the same
            raise params.ParamsError(f"{target}: round trip of the merged params differs")
        atomic_write(target, buf.getvalue())
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="profile name: profiles/<name>.yaml")
    parser.add_argument("--check", action="store_true", help="parse only, write nothing")
    parser.add_argument(
        "--set", action="store_true", help="print `dvc exp run -S` flags, write nothing"
    )
    args = parser.parse_args(argv)
    try:
        apply(args.name, write=not (args.check or args.set))
        if args.set:
            print(shlex.join(set_flags(yaml.safe_load(profile_path(args.name).read_text()))))
            return 0
    except params.ParamsError as exc:
        print(f"profile: error: {exc}", file=sys.stderr)
        return 1
    print(f"profile {args.name}: {'ok' if args.check else 'applied to params.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
