"""The documentation stays true to the repository: the generated layout of
docs/architecture.md matches the code, README.md stays short, every file, link, section,
make target and module the docs cite exists, and docs/benchmarks.md's sections are written
in place."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from pipeline.devtools import architecture, benchmarks

ROOT = Path(__file__).resolve().parents[3]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# A path of the repository cited in any text: under a source folder, or a top-level file.
CITED = re.compile(
    r"(?<![\w./~-])((?:pipeline|tests|docs|tools|bin|profiles|\.github)/[\w./-]*\w/?"
    r"|(?:README|CHANGELOG|DESIGN|CONTRIBUTING)\.md)(?![\w/])"
)
# A section cited by its heading: README or a file of docs/, then the heading in quotes.
SECTION = re.compile(r"(README|docs/[\w/.-]+\.md)(?:\.md)?,? \"([^\"]+)\"")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def repo_text_files() -> dict[str, str]:
    """Every text file git tracks or would track (new files included), by relative path."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    texts = {}
    for rel in filter(None, out.split("\0")):
        path = ROOT / rel
        if "node_modules" in path.parts or not path.is_file() or path.suffix == ".png":
            continue
        if path.name.endswith((".lock", "-lock.json")):  # pins, not prose (npm's name bin/)
            continue
        try:
            texts[rel] = path.read_text()
        except UnicodeDecodeError:
            continue
    return texts


def ignored(rel: str) -> bool:
    """A git-ignored path: an output made by a command (e.g. tools/vega/dvc_plots.html)."""
    proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", rel], check=False)
    return proc.returncode == 0


def test_architecture_layout_is_what_the_command_writes_now():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert architecture.render(text, ROOT) == text, (
        "docs/architecture.md's generated layout is stale: run "
        "`python -m pipeline.devtools.architecture` and commit the result"
    )


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= 260, f"README.md has {lines} lines (at most 260): move detail to docs/"


def test_no_file_cites_a_file_outside_the_repository():
    design = "DESIGN" + ".md"  # spelled apart so this file does not cite it
    citing = [rel for rel, text in repo_text_files().items() if design in text]
    assert not citing, f"{design} is not in this repository; cited by {citing}"


def test_cited_repository_paths_exist():
    missing = set()
    for rel, text in repo_text_files().items():
        for match in CITED.finditer(text):
            cited = match.group(1)
            # a folder (trailing /) or a file with an extension; "pipeline/s" is a unit
            if not (cited.endswith("/") or "." in cited.rsplit("/", 1)[-1]):
                continue
            if not (ROOT / cited).exists() and not ignored(cited):
                missing.add(f"{rel}: {cited}")
    assert not missing, "files cite paths that do not exist:\n" + "\n".join(sorted(missing))


def test_markdown_links_resolve():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor
            if not (doc.parent / target.split("#")[0]).exists():
                broken.append(f"{doc.relative_to(ROOT)}: ]({target})")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def _headings(path: Path) -> set[str]:
    return {m.strip() for m in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}


def test_cited_sections_exist():
    missing = []
    for rel, text in repo_text_files().items():
        flat = re.sub(r"\n[ \t]*(?:#[ \t]*)?", " ", text)  # citations wrap across comment lines
        for doc, section in SECTION.findall(flat):
            path = ROOT / ("README.md" if doc == "README" else doc)
            if not path.is_file() or section not in _headings(path):
                missing.append(f'{rel}: {doc}, "{section}"')
    assert not missing, "citations of sections that do not exist:\n" + "\n".join(missing)


def test_commands_in_the_docs_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z][\w-]*):", makefile, re.M))
    problems = []
    for doc in DOCS:
        text = doc.read_text()
        for target in re.findall(r"`make ([a-z][\w-]*)", text):
            if target not in targets:
                problems.append(f"{doc.name}: make {target}: no such target")
        for module in re.findall(r"python -m (pipeline(?:\.\w+)*)(?![\w.<])", text):
            base = ROOT / module.replace(".", "/")
            if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
                problems.append(f"{doc.name}: python -m {module}: no such module")
    assert not problems, "\n".join(problems)


# docs/benchmarks.md sections


def test_write_section_replaces_in_place_and_keeps_the_rest(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written text.\n")
    machine = benchmarks.Machine("Some CPU", 2, 4)
    benchmarks.write_section("one", "| a |\n| --- |\n| 1 |", machine, title="One", path=doc,
                             date=dt.date(2026, 1, 2))  # fmt: skip
    benchmarks.write_section("two", "second", "Other CPU, 8 cores", path=doc, date="2026-01-03")
    benchmarks.write_section("one", "| a |\n| --- |\n| 2 |", machine, title="One", path=doc,
                             date=dt.date(2026, 1, 4))  # fmt: skip
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written text.\n")
    assert text.count("<!-- benchmarks:begin one -->") == 1
    assert "| 2 |" in text and "| 1 |" not in text
    assert "*Measured 2026-01-04 on Some CPU, 2 cores (4 threads).*" in text
    assert text.index("benchmarks:begin one") < text.index("benchmarks:begin two")
    assert "*Measured 2026-01-03 on Other CPU, 8 cores.*\n\nsecond\n" in text
    with pytest.raises(ValueError, match="section name"):
        benchmarks.write_section("Bad Name", "x", machine, path=doc)


def test_this_machine_names_a_cpu():
    machine = benchmarks.this_machine()
    assert machine.model and machine.cores >= 1 and machine.threads >= machine.cores


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _project(tmp_path: Path, metrics: bytes) -> Path:
    """A project with one evaluated model as the last repro left it (no DVC cache)."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "dense_mlp.json").write_bytes(metrics)
    model = tmp_path / "models" / "dense_mlp"
    model.mkdir(parents=True)
    (model / "history.csv").write_text(
        "epoch,val_accuracy,epoch_seconds,images_per_second\n1,0.9,2.0,5000\n2,0.95,4.0,2500\n"
    )
    lock = {"stages": {"evaluate@dense_mlp": {"outs": [
        {"path": "metrics/dense_mlp.json", "md5": _md5(b'{"accuracy": 0.9913}')}]}}}  # fmt: skip
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))
    return tmp_path


def test_default_run_table_comes_from_the_recorded_outputs(tmp_path):
    root = _project(tmp_path, b'{"accuracy": 0.9913}')
    title, md, when = benchmarks.default_run(root)
    assert "make repro" in title
    assert "| `dense_mlp` | keras | digits025 | 2 | 99.13% | 3.0 | 3,750 | 6 s |" in md
    assert "Not checked against `dvc.lock`" in md  # no DVC cache to read the model listing
    assert when == dt.date.today()


def test_default_run_refuses_metrics_that_dvc_lock_does_not_record(tmp_path):
    root = _project(tmp_path, b'{"accuracy": 0.5}')
    with pytest.raises(benchmarks.BenchmarkError, match=r"metrics/dense_mlp.json: not the file"):
        benchmarks.default_run(root)
