"""The generated layout of docs/architecture.md: ``python -m pipeline.devtools.architecture``.

Writes, between ``<!-- architecture:begin layout -->`` and ``<!-- architecture:end layout -->``,
every package and module of ``pipeline/`` with the first sentence of its docstring (no line
counts: the layout goes stale when the structure changes, not on every edit), which packages
each package imports, which modules import mlflow and TensorFlow, and each stage's deps as
dvc.yaml lists them. The text around the markers is kept.
``--check`` writes nothing and exits 1 when the file differs from what would be written
(tests/unit/devtools/test_docs.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

from pipeline.core import config
from pipeline.core.io import atomic_write

DOC = config.ROOT / "docs" / "architecture.md"
BEGIN = "<!-- architecture:begin layout -->"
END = "<!-- architecture:end layout -->"
_SENTENCE = re.compile(r"(.+?[.!?])(?=\s+[A-Z`(\"]|$)")
_FOREACH = {"${datasets}": "dataset", "${models}": "model"}
_HEAVY = {"mlflow": "mlflow", "tensorflow": "TensorFlow", "keras": "TensorFlow"}


def summary(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line ('' when none)."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    match = _SENTENCE.match(para)
    return (match.group(1) if match else para).replace("|", "\\|")


def _modules(root: Path) -> list[Path]:
    return sorted(
        (p for p in (root / "pipeline").rglob("*.py") if "__pycache__" not in p.parts),
        key=lambda p: p.relative_to(root).parts,
    )


def _unit(module: Path, root: Path) -> str:
    """What a module belongs to under pipeline/: a subpackage (``core``) or a top-level
    module (``bench.py``); ``__init__.py`` for pipeline/__init__.py itself."""
    return module.relative_to(root / "pipeline").parts[0]


def _imports(tree: ast.AST) -> set[str]:
    """Every module name imported anywhere in the file (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _pipeline_unit(name: str, units: set[str]) -> str | None:
    parts = name.split(".")
    if parts[0] != "pipeline" or len(parts) < 2:
        return None
    if parts[1] in units:
        return parts[1]
    return f"{parts[1]}.py" if f"{parts[1]}.py" in units else None


def modules_table(root: Path) -> tuple[str, dict[str, set[str]], dict[str, list[str]]]:
    """The modules table; which units each unit imports; which modules import mlflow or
    TensorFlow (by label)."""
    files = _modules(root)
    trees = {f: ast.parse(f.read_text(), filename=str(f)) for f in files}
    units = {_unit(f, root) for f in files}
    uses: dict[str, set[str]] = {u: set() for u in units}
    heavy: dict[str, list[str]] = {label: [] for label in _HEAVY.values()}
    for f, tree in trees.items():
        names = _imports(tree)
        uses[_unit(f, root)] |= {u for n in names if (u := _pipeline_unit(n, units))}
        tops = {n.split(".")[0] for n in names}
        for label in dict.fromkeys(_HEAVY[t] for t in sorted(tops) if t in _HEAVY):
            heavy[label].append(str(f.relative_to(root)))
    rows = ["| path | what it is |", "| --- | --- |"]
    for f in files:
        what = summary(ast.get_docstring(trees[f]))
        if f.name == "__init__.py":  # the package, by its docstring
            rows.append(f"| `{f.parent.relative_to(root)}/` | {what} |")
        else:
            rows.append(f"| `{f.relative_to(root)}` | {what} |")
    uses.pop("__init__.py", None)
    for u in uses:
        uses[u].discard(u)
    return "\n".join(rows), uses, heavy


def _placeholders(text: str, foreach: str | None) -> str:
    text = text.replace("${key}", f"<{foreach}>") if foreach else text
    text = re.sub(r"\$\{item\.(\w+)\}", r"<\1>", text)
    return re.sub(r"\$\{data\.(\w+)\}", r"<\1>", text)


def _dep_path(dep) -> str:
    return next(iter(dep)) if isinstance(dep, dict) else str(dep)


def stages_table(root: Path) -> str:
    """Each stage of dvc.yaml: its command, code deps (pipeline/) and other deps."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    rows = ["| stage | command | code deps | other deps |", "| --- | --- | --- | --- |"]
    for name, stage in stages.items():
        foreach = _FOREACH.get(stage.get("foreach", ""), "item") if "foreach" in stage else None
        body = stage.get("do", stage)
        label = f"{name}@<{foreach}>" if foreach else name
        deps = [_placeholders(_dep_path(d), foreach) for d in body.get("deps", [])]
        code = ", ".join(f"`{d}`" for d in deps if d.startswith("pipeline/")) or "-"
        other = ", ".join(f"`{d}`" for d in deps if not d.startswith("pipeline/")) or "-"
        cmd = _placeholders(body["cmd"], foreach)
        rows.append(f"| `{label}` | `{cmd}` | {code} | {other} |")
    return "\n".join(rows)


def layout(root: Path = config.ROOT) -> str:
    """The generated section, markers included."""
    modules, uses, heavy = modules_table(root)
    dep_rows = ["| package | imports of the package |", "| --- | --- |"]
    for unit in sorted(uses):
        used = ", ".join(f"`{u}`" for u in sorted(uses[unit])) or "-"
        dep_rows.append(f"| `{unit}` | {used} |")
    importers = "\n".join(
        f"- {label}: " + ", ".join(f"`{m}`" for m in mods) for label, mods in heavy.items()
    )
    return "\n".join([
        BEGIN,
        "<!-- written by `python -m pipeline.devtools.architecture`; edits here are lost -->",
        "",
        "### Modules",
        "",
        "The first sentence of each docstring (line counts: `wc -l`).",
        "",
        modules,
        "",
        "### What each package imports",
        "",
        "Imports of other parts of `pipeline/`, lazy ones included.",
        "",
        "\n".join(dep_rows),
        "",
        "Modules that import mlflow or TensorFlow (Keras counts as TensorFlow):",
        "",
        importers,
        "",
        "### Stage deps (dvc.yaml)",
        "",
        stages_table(root),
        END,
    ])  # fmt: skip


def render(text: str, root: Path = config.ROOT) -> str:
    """``text`` (docs/architecture.md) with its generated section replaced."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"docs/architecture.md: markers {BEGIN} ... {END} not found")
    return text[:start] + layout(root) + text[stop + len(END) :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.devtools.architecture", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when stale")
    args = ap.parse_args(argv)
    try:
        old = DOC.read_text()
        new = render(old)
    except (OSError, ValueError) as exc:
        print(f"architecture: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print("architecture: docs/architecture.md is stale: run "
                  "`python -m pipeline.devtools.architecture`", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    if new != old:
        atomic_write(DOC, new)
    print(f"architecture: docs/architecture.md {'updated' if new != old else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
