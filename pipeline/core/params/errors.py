"""A pydantic validation error as the one line params.yaml users see, key path first."""

from __future__ import annotations

import re
from typing import Any

from pipeline.core.params.models import LAYER_TYPES

_EXPECTED = {  # pydantic error type -> what the key should have held
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _key_path(loc: tuple[int | str, ...]) -> str:
    """``('models', 'x', 'arch', 3, 'conv', 'units')`` -> ``models.x.arch[3].units``
    (pydantic puts the layer's tag after its index; the key path has none)."""
    path = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif i == 2 and loc[0] == "models" and part in ("preset", "ensemble"):
            continue  # the tag of models.<name> (a preset or an ensemble)
        elif part != "[key]" and not (i and isinstance(loc[i - 1], int) and part in LAYER_TYPES):
            path += f".{part}" if path else str(part)
    return path


def error_line(err: Any) -> str:
    """One line for one pydantic error, in the words params.yaml users see."""
    path, kind, value, ctx = _key_path(err["loc"]), err["type"], err["input"], err.get("ctx", {})
    match kind:
        case "value_error":  # our validators: "msg", or "subkey: msg" for a key below path
            msg = str(ctx["error"])
            if path and re.match(r"^[a-z_]+: ", msg):
                return f"{path}.{msg}"
            return f"{path}: {msg}" if path else msg
        case _ if kind in _EXPECTED and value is None:
            what = "must not be null"
        case _ if kind in _EXPECTED:
            what = f"expected {_EXPECTED[kind]}, got {value!r}"
        case "extra_forbidden":
            what = "unknown key"
        case "missing":
            what = "missing item" if isinstance(err["loc"][-1], int) else "missing required key"
        case "too_long":
            what = f"expected at most {ctx['max_length']} items, got {len(value)}"
        case "literal_error":
            what = f"{value!r} is not one of {ctx['expected']}"
        case "greater_than":
            what = f"must be > {ctx['gt']}, got {value}"
        case "greater_than_equal":
            what = f"must be >= {ctx['ge']}, got {value}"
        case "union_tag_not_found":
            what = "a layer is a mapping with a 'type' key"
        case "union_tag_invalid":
            path, what = f"{path}.type", f"{ctx['tag']!r} is not one of {ctx['expected_tags']}"
        case _:
            what = err["msg"]  # pydantic's own words, still after the key path
    return f"{path}: {what}"
