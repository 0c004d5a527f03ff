"""The team tracking server for real: PostgreSQL (Debian's package, a cluster of its own)
and `mlflow server` with proxied artifacts, on free ports of 127.0.0.1, started by
pipeline/server/cli.py (what `make server` runs) and stopped by pid.

A one-model project (the tiny profile with dense_mlp and its dataset alone, built here
from the first stage: it does not wait for the shared tiny build, so this module runs while
that build does) logs to the server: runs, the registry and the champion alias are read back
through the server's REST API and from PostgreSQL itself; 8 trainings at once while
PostgreSQL restarts, a server stopped during train@ and, on the restarted server, three
queued experiments on two workers are exercised. The test users' passwords are stored as
cheap hashes (cheap_password_checks): MLflow checks one on every request.
Without PostgreSQL (and no root to install it) these tests skip, saying why.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipeline.devtools import workspace
from pipeline.server import cli as server_mod
from pipeline.tracking import file_md5
from tests.helpers import (
    REPO,
    free_port,
    plain_env,
    run_queue,
    sh,
    start_trainings,
    trained_run_ids,
)

pytestmark = [pytest.mark.slow, pytest.mark.network]
MODEL = "dense_mlp"  # the fastest preset of the tiny profile
LEARNING_RATES = ("0.03", "0.04", "0.05")  # the queued experiments' (params.yaml: 0.01)
BIN = Path(sys.executable).parent


class Rest:
    """The server's REST API (what `mlflow ui` and every client read), as ``user``
    ((name, password); None: anonymous)."""

    def __init__(self, uri: str, user: tuple[str, str] | None = None):
        self.uri = uri
        self.headers = {}
        if user:
            token = base64.b64encode(":".join(user).encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def get(self, endpoint: str, **query) -> dict:
        url = f"{self.uri}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        req = urllib.request.Request(url, headers=self.headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def post(self, endpoint: str, body: dict) -> dict:
        req = urllib.request.Request(
            f"{self.uri}/api/2.0/mlflow/{endpoint}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **self.headers},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def status(self, method: str, endpoint: str, body: dict | None = None) -> int:
        """The HTTP status of one call (no exception on 4xx)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", **self.headers}
        url = f"{self.uri}/api/2.0/mlflow/{endpoint}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def experiment_id(self) -> str:
        return self.get("experiments/get-by-name", experiment_name="mnist")["experiment"][
            "experiment_id"
        ]

    def runs(self) -> list[dict]:
        body = {"experiment_ids": [self.experiment_id()], "max_results": 1000}
        return self.post("runs/search", body).get("runs", [])

    def artifacts(self, run_id: str, path: str = "") -> set[str]:
        listed = self.get("artifacts/list", run_id=run_id, path=path)
        return {f["path"] for f in listed.get("files", [])}

    def artifact_bytes(self, run_id: str, path: str) -> bytes:
        url = f"{self.uri}/get-artifact?{urllib.parse.urlencode({'run_id': run_id, 'path': path})}"
        with urllib.request.urlopen(urllib.request.Request(url, headers=self.headers)) as resp:
            return resp.read()

    def versions(self, name: str) -> list[dict]:
        found = self.get("model-versions/search", filter=f"name = '{name}'")
        return found.get("model_versions", [])

    def champion(self, name: str) -> dict:
        return self.get("registered-models/alias", name=name, alias="champion")["model_version"]


def tags(entity: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("tags", [])}


def run_data(run: dict, kind: str) -> dict:
    return {x["key"]: x["value"] for x in run["data"].get(kind, [])}


def cheap_password_checks(auth_db: Path, users: dict[str, str]) -> None:
    """Store the passwords of ``users`` (name: password) as 1-round PBKDF2 instead of
    MLflow's default scrypt (N=32768): the server checks the password of every request, and
    a model logged with its code/ is ~120 requests; at 0.1 s of CPU a check on an idle core
    (0.4-2 s under load) the checks alone took minutes of this module. Same passwords,
    still checked on every request: the 401 and 403 answers are unchanged."""
    import sqlite3

    from werkzeug.security import generate_password_hash

    conn = sqlite3.connect(auth_db)
    try:
        for name, password in users.items():
            cheap = generate_password_hash(password, method="pbkdf2:sha256:1")
            conn.execute("UPDATE users SET password_hash = ? WHERE username = ?", (cheap, name))
        conn.commit()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server():
    """PostgreSQL + mlflow server on free ports; state in a folder the postgres user can
    reach (pytest's tmp folders are private to root)."""
    try:
        server_mod.install_postgres()
    except server_mod.ServerError as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    state = Path(tempfile.mkdtemp(prefix="pipeline-server-test-"))
    state.chmod(0o755)
    srv = server_mod.Server(state, port=free_port(), pg_port=free_port(), workers=1)
    try:
        srv.start_postgres()
        srv.start_mlflow()
        # what `make server-user` does: CI's own user logs; a reader may only read
        srv.ci = ("ci", srv.add_user("ci", "edit"))
        srv.reader = ("reader", srv.add_user("reader", "read", "a-reader-password"))
        admin = srv.admin_password_file.read_text().strip()
        users = {"admin": admin, "ci": srv.ci[1], "reader": srv.reader[1]}
        cheap_password_checks(state / "basic_auth.db", users)
        yield srv
    finally:
        srv.stop_mlflow()
        srv.stop_postgres()
        shutil.rmtree(state, ignore_errors=True)


def only_model(root: Path, epochs: int | None = None) -> None:
    """Keep MODEL and its dataset alone in params.yaml (the plot compares it with itself)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["models"] = {MODEL: params["models"][MODEL]}
    dataset = params["models"][MODEL]["dataset"]
    params["datasets"] = {dataset: params["datasets"][dataset]}
    params["plot"]["compare_curves"] = [MODEL]
    sweeps = params.get("sweeps") or {}  # a sweep of a preset left out would be refused
    params["sweeps"] = {k: v for k, v in sweeps.items() if v["model"] == MODEL}
    if epochs is not None:
        params["models"][MODEL]["train"]["epochs"] = epochs
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project on the tiny profile with MODEL alone, committed; nothing run."""
    root = tmp_path_factory.mktemp("server") / "proj"
    root.mkdir()
    workspace.copy_project(root, REPO)
    sh(["bin/python", "-m", "pipeline.profile", "tiny"], root, plain_env())
    only_model(root)
    workspace.commit_all(root, "tiny profile, one model")
    return root


def timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> str:
    """Run ``cmd`` like ``sh``; each line of its output, with the seconds since the start,
    goes to ``log`` too (where the module's time goes: DVC's "Running stage" lines)."""
    start, lines = time.monotonic(), []
    with (
        subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
        log.open("a") as f,
    ):
        for line in proc.stdout:
            lines.append(line)
            f.write(f"{time.monotonic() - start:7.1f} {line}")
    out = "".join(lines)
    assert proc.wait() == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def on_server(server, project):
    """The whole pipeline of the project (fetch to plot) run against the server."""
    env = plain_env(MLFLOW_TRACKING_URI=server.uri, MLFLOW_TRACKING_USERNAME=server.ci[0])
    env["MLFLOW_TRACKING_PASSWORD"] = server.ci[1]
    out = timed([str(BIN / "dvc"), "repro"], project, env, project.parent / "repro-times.log")
    return project, env, out


def predict(root: Path, env: dict, model: str, pictures: Path) -> list[dict]:
    proc = sh(["bin/python", "-m", "pipeline.predict", "--model", model, "--json",
               str(pictures)], root, env)  # fmt: skip
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def pictures(on_server, tmp_path_factory) -> Path:
    """Three test digits of the model's dataset as PNG files named <digit>_<i>.png."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("pictures")
    data = on_server[0] / "data" / "prepared" / "digits025"
    classes = json.loads((data / "meta.json").read_text())["classes"]
    test = np.load(data / "test.npz")
    for i in range(3):
        image = (test["x"][i, :, :, 0] * 255).astype("uint8")
        Image.fromarray(image).save(folder / f"{classes[int(test['y'][i])]}_{i}.png")
    return folder


# --------------------------------------------------------------------------- the server


def test_runs_land_on_the_server_in_postgresql(server, on_server):
    import psycopg

    root, _, out = on_server
    rest = Rest(server.uri, server.ci)
    runs = [r for r in rest.runs() if tags(r["data"]).get("preset") == MODEL]
    assert len(runs) == 1, out
    run = runs[0]
    run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED"
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")  # proxied
    metrics = json.loads((root / "metrics" / f"{MODEL}.json").read_text())
    assert run_data(run, "metrics")["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert run_data(run, "params")["model.train.epochs"] == "2"
    head = sh(["git", "rev-parse", "HEAD"], root, plain_env()).stdout.strip()
    run_tags = tags(run["data"])
    assert run_tags["mlflow.source.git.commit"] == head and "git_commit" not in run_tags
    assert run_tags["git_dirty"] == "false"
    # the figures at the top level (the compare view), the PNG served by the server
    top = rest.artifacts(run_id)
    assert {"confusion_matrix.png", "curves.png", "evaluation", "history.csv"} <= top
    assert rest.artifact_bytes(run_id, "confusion_matrix.png").startswith(b"\x89PNG")
    assert "evaluation/images" in rest.artifacts(run_id, "evaluation")
    # the logged model, named after the preset
    found = rest.post("logged-models/search", {"experiment_ids": [rest.experiment_id()]})
    named = [m["info"]["name"] for m in found["models"] if m["info"]["source_run_id"] == run_id]
    assert sorted(named) == sorted([MODEL, "serving"])  # the model and its servable
    # dataset lineage: the splits, with DVC's md5 of each file as digest
    inputs = {d["dataset"]["name"]: d["dataset"] for d in run["inputs"]["dataset_inputs"]}
    assert set(inputs) == {"digits025/train", "digits025/val", "digits025/test"}
    train_npz = root / "data" / "prepared" / "digits025" / "train.npz"
    assert inputs["digits025/train"]["digest"] == file_md5(train_npz)
    # and the backend really is PostgreSQL
    with psycopg.connect(server.backend_uri().replace("+psycopg", "")) as conn:
        rows = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,)).fetchall()
    assert rows == [("FINISHED",)]


def test_registry_version_and_champion_on_the_server(server, on_server):
    root, _, out = on_server
    rest = Rest(server.uri, server.ci)
    versions = rest.versions(MODEL)
    assert len(versions) == 1
    champion = rest.champion(MODEL)
    assert champion["version"] == versions[0]["version"]
    vtags = tags(champion)
    metrics = json.loads((root / "metrics" / f"{MODEL}.json").read_text())
    assert float(vtags["test_accuracy"]) == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert vtags["preset"] == MODEL
    assert vtags["git_commit"] == sh(["git", "rev-parse", "HEAD"], root, plain_env()).stdout.strip()
    assert vtags["dataset_dvc_md5"].endswith(".dir")
    assert f"plot: {MODEL}: champion -> v1" in out  # the decision, one line


def test_anonymous_401_and_a_reader_cannot_write(server, on_server):
    """basic-auth: no credentials, no access; a read-only user reads but cannot create
    experiments, log runs or move the champion alias (a 403 each)."""
    anonymous, reader = Rest(server.uri), Rest(server.uri, server.reader)
    assert anonymous.status("GET", "experiments/search?max_results=3") == 401
    assert anonymous.status("POST", "experiments/create", {"name": "anon"}) == 401
    exp_id = reader.experiment_id()  # reading works
    assert reader.champion(MODEL)["version"] == "1"
    assert reader.status("POST", "experiments/create", {"name": "mine"}) == 403
    assert reader.status("POST", "runs/create", {"experiment_id": exp_id}) == 403
    alias = {"name": MODEL, "alias": "champion", "version": "1"}
    assert reader.status("POST", "registered-models/alias", alias) == 403
    # a stage without credentials fails in one line saying what to set
    env = plain_env(MLFLOW_TRACKING_URI=server.uri)
    code = "from pipeline import tracking; tracking.setup('mnist')"
    proc = subprocess.run([str(BIN / "python"), "-c", code], cwd=on_server[0], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert "(401, not authenticated): set MLFLOW_TRACKING_USERNAME" in proc.stderr
    assert oct(server.admin_password_file.stat().st_mode & 0o777) == "0o600"


def test_champion_predicts_through_the_server(server, on_server, pictures):
    root, env, _ = on_server
    items = predict(root, env, f"models:/{MODEL}@champion", pictures)
    assert len(items) == 3
    right = sum(item["digit"] == int(Path(item["path"]).name.split("_")[0]) for item in items)
    assert right >= 1, items


def test_eight_trainings_at_once_and_a_postgresql_restart_lose_no_run(server, on_server, tmp_path):
    """8 trainings (train@'s code, each its own process) log to the server at once while
    PostgreSQL is stopped and started again: all 8 end FINISHED as 8 distinct runs with a
    registered version each, and the runs logged before are all still there, unchanged."""
    root, env, _ = on_server
    rest = Rest(server.uri, server.ci)
    before = {r["info"]["run_id"]: run_data(r, "metrics") for r in rest.runs()}
    versions_before = {v["version"] for v in rest.versions(MODEL)}
    procs = start_trainings(root, MODEL, 8, env, tmp_path)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            new = [r for r in rest.runs() if r["info"]["run_id"] not in before]
            if any(r["info"]["status"] == "RUNNING" for r in new):
                break  # mid-run: at least one training logs now
            time.sleep(0.5)
        assert all(p.poll() is None for p in procs), "a training ended before the restart"
        pid = server.postgres_running() and server_mod.read_pid(server.pgdata / "postmaster.pid")
        assert server.stop_postgres() and not server_mod.alive(pid)
        server.start_postgres()
        run_ids = trained_run_ids(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert len(set(run_ids)) == 8, run_ids
    runs = {r["info"]["run_id"]: r for r in rest.runs()}
    assert {i: run_data(runs[i], "metrics") for i in before} == before  # none lost
    assert [runs[i]["info"]["status"] for i in run_ids] == ["FINISHED"] * 8
    new_versions = [v for v in rest.versions(MODEL) if v["version"] not in versions_before]
    assert sorted(v["run_id"] for v in new_versions) == sorted(run_ids)  # one each
    assert rest.champion(MODEL)["version"] == "1"  # registered, never promoted by train@


def test_server_stopped_during_train_fails_the_stage_cleanly(server, on_server):
    root, env, _ = on_server
    rest = Rest(server.uri, server.ci)
    model_dir = root / "models" / MODEL
    kept = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    before = {r["info"]["run_id"] for r in rest.runs()}
    committed = (root / "params.yaml").read_bytes()
    only_model(root, epochs=300)  # long enough to stop the server between two epochs
    stage_env = env | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro", f"train@{MODEL}"],
        cwd=root,
        env=stage_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            new = [r for r in rest.runs() if r["info"]["run_id"] not in before]
            if new and "val_accuracy" in run_data(new[0], "metrics"):
                break  # training has logged an epoch
            time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        server.stop_mlflow()
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if server.mlflow_pid() is None:
            server.start_mlflow()
        (root / "params.yaml").write_bytes(committed)  # the next test queues experiments on them
    assert proc.returncode != 0
    line = f"train@{MODEL}: error: MLflow tracking server {server.uri} is unreachable"
    assert line in out, out[-3000:]
    assert "Traceback" not in out
    # DVC removed models/<m> before running the stage; the failing stage put the previous
    # complete model back from DVC's cache, byte for byte, with nothing half-written beside it
    assert f"train@{MODEL}: models/{MODEL}: restored from DVC's cache" in out, out[-3000:]
    assert {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()} == kept
    assert not list(model_dir.parent.glob(".*.tmp"))

    # with the params back, the model's stages are up to date: nothing to rerun, nothing
    # lost (check_params, which passed on the 300-epoch params, would check them again)
    status = json.loads(sh([str(BIN / "dvc"), "status", "--json"], root, env).stdout)
    assert set(status) <= {"check_params"}, status


def test_three_queued_experiments_finish_on_the_server(server, on_server):
    """After the previous test stopped and restarted the server: three experiments queued
    and run by two DVC queue workers (`dvc queue start -j 2`: one waits) land there, each
    trained, evaluated, registered."""
    root, env, _ = on_server
    rest = Rest(server.uri, server.ci)
    before = {r["info"]["run_id"] for r in rest.runs()}
    versions_before = len(rest.versions(MODEL))
    dvc = str(root / "bin" / "dvc")  # the project's DVC: its queue workers find `dvc` too
    for lr in LEARNING_RATES:
        sh([dvc, "exp", "run", "--queue", "-S", f"models.{MODEL}.train.learning_rate={lr}"],
           root, env)  # fmt: skip
    status = run_queue(dvc, root, env, jobs=2)
    assert "Failed" not in status and "Success" in status, status
    new = [r for r in rest.runs() if r["info"]["run_id"] not in before]
    new = [r for r in new if tags(r["data"]).get("preset") == MODEL]  # not plot's compare runs
    lrs = sorted(run_data(r, "params")["model.train.learning_rate"] for r in new)
    assert lrs == list(LEARNING_RATES), status
    for run in new:
        run_id = run["info"]["run_id"]
        assert run["info"]["status"] == "FINISHED"
        assert tags(run["data"]).get("dvc_exp_name")
        assert {"test_accuracy", "test_macro_f1", "val_accuracy"} <= set(run_data(run, "metrics"))
        assert {"confusion_matrix.png", "evaluation"} <= rest.artifacts(run_id)
    # all registered, all evaluated; a dvc exp run never becomes champion (the gate):
    # the champion stays the committed run's version 1, however good the experiments are
    versions = rest.versions(MODEL)
    assert len(versions) == versions_before + 3
    new_ids = {r["info"]["run_id"] for r in new}
    mine = [v for v in versions if v["run_id"] in new_ids]
    assert len(mine) == 3 and all("test_accuracy" in tags(v) for v in mine), mine
    assert rest.champion(MODEL)["version"] == "1"


def test_two_node_sweep_logs_to_the_server_under_one_parent(server, tmp_path, monkeypatch):
    """Issue #24: a sweep on a two-node Ray cluster on this machine (one CPU a node) against
    the team server: every trial under one parent run on the server, trials on both nodes.
    The driver logs every run (the trials never write to MLflow), as the CI user."""
    from tests.integration.sweep_project import env_for, make_project, runs, sweep

    root = make_project(tmp_path, trials=4, epochs=4, asha=None)
    login = {"MLFLOW_TRACKING_USERNAME": server.ci[0], "MLFLOW_TRACKING_PASSWORD": server.ci[1]}
    env = env_for(root, **login) | {"MLFLOW_TRACKING_URI": server.uri}
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_TMPDIR", *login):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # both nodes on 127.0.0.1
    from ray.cluster_utils import Cluster  # after the settings: Ray reads them on import

    store = 150 * 1024**2
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": store},
    )
    try:
        cluster.add_node(num_cpus=1, object_store_memory=store)
        cluster.wait_for_nodes()
        # the driver must also keep to loopback, or it advertises the host address
        loopback = {"RAY_ADDRESS": cluster.address, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        out = sweep(root, env=env | loopback, timeout=300)
    finally:
        cluster.shutdown()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "multi-node Ray with 2 CPUs" in out.stdout
    assert not (root / "mlflow.db").exists()  # nothing went to a local store
    parents, kids = runs(root, server.uri)
    assert len(parents) == 1 and len(kids) == 4
    assert {k.data.tags["mlflow.parentRunId"] for k in kids} == {parents[0].info.run_id}
    assert {k.info.status for k in kids} == {"FINISHED"}
    assert len({k.data.tags["node_id"] for k in kids}) == 2  # trials ran on both nodes
