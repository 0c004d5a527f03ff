"""The shape of pipeline/tracking/: who may import mlflow, a downward import order inside
the package, and the package shipped beside logged models."""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline
from pipeline.tracking import models

PIPELINE = Path(pipeline.__file__).resolve().parent
MLFLOW_IMPORTERS = {
    "models/numpy_cnn/flavor.py",
    "models/keras/flavor.py",
    "models/ensemble/flavor.py",
    "serve/flavor.py",
}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement of ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
    return found


def test_only_tracking_and_the_flavors_import_mlflow():
    outside = []
    for f in sorted(PIPELINE.rglob("*.py")):
        rel = f.relative_to(PIPELINE)
        if rel.parts[0] == "tracking" or str(rel) in MLFLOW_IMPORTERS:
            continue
        outside += [f"{rel}: {m}" for m, _ in _imports(f) if m.split(".")[0] == "mlflow"]
    assert outside == []


def test_no_private_names_are_imported_from_mlflow():
    private = [
        f"{f.name}: from {m} import {n}"
        for f in sorted((PIPELINE / "tracking").glob("*.py"))
        for m, names in _imports(f)
        if m.split(".")[0] == "mlflow"
        for n in names
        if n.startswith("_")
    ]
    assert private == []


def test_the_tracking_modules_import_each_other_without_a_cycle():
    prefix = "pipeline.tracking."
    graph = {
        f.stem: {m[len(prefix) :] for m, _ in _imports(f) if m.startswith(prefix)}
        for f in (PIPELINE / "tracking").glob("*.py")
    }
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in graph[name]:
                visit(dep, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_logged_models_ship_the_whole_pipeline_package():
    assert models.PACKAGE_DIR == PIPELINE
