"""dvc.yaml's code deps cover every pipeline file each stage can import.

For each stage, the closure of its module's imports inside ``pipeline/`` is followed through
every import statement (top level or lazy, inside functions) and every string naming a
``pipeline.*`` module (``importlib.import_module`` tables), plus the ``__init__.py`` of each
package on the way. Each file of the closure must lie under one of the stage's deps; when
one does not, a change to it would leave the stage "up to date" on stale results.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

MODULE_NAME = re.compile(r"^pipeline(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def module_file(name: str, root: Path = REPO) -> Path | None:
    path = root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}  # submodules imported by name
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MODULE_NAME.match(node.value)
        ):
            names.add(node.value)  # import_module("pipeline....") tables
    return {n for n in names if n == "pipeline" or n.startswith("pipeline.")}


def closure(module: str, root: Path = REPO) -> set[Path]:
    """Every file of ``pipeline/`` that importing ``module`` can load."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the packages on the way, then the module
            f = module_file(".".join(parts[:i]), root)
            if f is not None and f not in seen:
                seen.add(f)
                todo += sorted(_imported_names(f))
    return seen


def stage_commands(root: Path = REPO) -> dict[str, tuple[str, list[str]]]:
    """{stage: (module its cmd runs, deps)} from dvc.yaml (foreach stages by their template)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        module = re.search(r"-m\s+([\w.]+)", body["cmd"]).group(1)
        out[name] = (module, [d for d in body.get("deps", []) if isinstance(d, str)])
    return out


def uncovered(module: str, deps: list[str], root: Path = REPO) -> list[str]:
    dep_paths = [root / d for d in deps]
    missing = []
    for f in sorted(closure(module, root)):
        if f.name == "__init__.py" and not f.read_text().strip():
            continue  # an empty package marker runs nothing
        if not any(f == d or d in f.parents for d in dep_paths):
            missing.append(str(f.relative_to(root)))
    return missing


@pytest.mark.parametrize("stage", list(stage_commands()))
def test_stage_deps_cover_its_imports(stage):
    module, deps = stage_commands()[stage]
    assert module_file(module) is not None, f"{stage}: {module} does not exist"
    assert uncovered(module, deps) == [], f"{stage}: dvc.yaml deps miss these imported files"


def test_the_check_sees_lazy_imports_and_import_module_strings():
    files = {str(f.relative_to(REPO)) for f in closure("pipeline.stages.train")}
    # models/family.py names the families only as strings for importlib.import_module
    assert "pipeline/models/numpy_cnn/family.py" in files
    assert "pipeline/models/keras/family.py" in files
    assert "pipeline/models/keras/layers.py" in files
    # numpy_cnn/family.py imports tracking inside log_model()
    assert "pipeline/tracking/models.py" in files
    # a stage without report/ in its deps would be caught
    module, deps = stage_commands()["evaluate"]
    missing = uncovered(module, [d for d in deps if d != "pipeline/report"])
    assert "pipeline/report/metrics.py" in missing


def test_no_stage_imports_another_stage():
    for stage, (module, _) in stage_commands().items():
        others = {
            str(f.relative_to(REPO))
            for f in closure(module)
            if f.parent.name == "stages" and f.name not in ("__init__.py", f"{stage}.py")
        }
        assert others == set(), f"{stage} imports other stages: {others}"
