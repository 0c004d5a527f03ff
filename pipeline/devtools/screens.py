"""Screenshots of MLflow's UI on the project's store, taken in headless Chromium
(``make screens``): what a person sees first.

    python -m pipeline.devtools.screens [--url http://127.0.0.1:5000] [--run RUN_ID]
                                        [--out reports/screens] [--experiment NAME]

Without ``--url`` it walks the tracking server ``MLFLOW_TRACKING_URI`` names, else serves the
store as ``make ui`` does (pipeline/devtools/ui.py) on a free port of 127.0.0.1 and stops it
at the end. Each page opens in a fresh browser profile
(Debian's Chromium, the flags the tests use, driven over the DevTools protocol) and is
drawn once it shows what it is for (a run's name; the confusion matrix, loaded). It writes,
under ``--out``:

- ``landing.png``: the address ``make ui`` prints, as a fresh browser opens it (the
  experiment's training runs on MLflow's "Model training" view: pipeline/devtools/ui.py says
  why the address, not the ``mlflow.experimentKind`` tag, picks the view);
- ``runs.png``: the runs table (``#/experiments/<id>/runs``);
- ``figures.png``: the experiment's saved view "Figures" (pipeline/tracking/views.py): the
  runs' charts with the confusion matrix drawn as a picture;
- ``run.png``: one training run's charts (``.../runs/<id>/model-metrics``): ``--run``, else
  the newest finished run with a ``preset`` tag and a ``test_accuracy``;
- ``bare.png``: the bare experiment address (``#/experiments/<id>``) in a fresh browser.

It prints each file it wrote, then one line per problem (a page that did not render, the
landing view without the runs, training runs with the same name, no confusion-matrix image
shown in the "Figures" view) and exits 1 when there was one. What MLflow 3.17.2 cannot be told
to do (docs/decisions/0006-mlflow-ui-figures-and-landing.md) is one ``limit:`` line each, when
seen: the run page's image card drawing its params over the picture, the bare address opening
on the GenAI view.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import config
from pipeline.devtools import ui
from pipeline.devtools.chromium import Browser, BrowserError, blank, chromium

OUT = Path("reports/screens")
READY_TIMEOUT = 120.0  # seconds for the UI to answer its experiments API
PAGE_TIMEOUT = 60.0  # seconds for a page to show what it is for
RUN_HEIGHT = 6000  # tall enough that every chart of a run is drawn (they draw when seen)
SETTLE = 1.5  # seconds more, for charts and tables to finish drawing
CONFUSION_KEY = "confusion_matrix"  # the MLflow image key of the figure (tracking.log_images)
WIDTH = 1600
KIND_TAG = "mlflow.experimentKind"  # pipeline/tracking/store.py sets it on the experiment


class ScreensError(RuntimeError):
    """Nothing to walk: no browser, no server, no experiment; the message says which."""


# --------------------------------------------------------------------------- MLflow's REST API


def api(base: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """``GET`` (or ``POST`` ``body`` to) ``<base>/api/2.0/mlflow/<path>``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise
        raise ScreensError(f"{req.full_url} answered {exc.code} {exc.reason}") from None


def _tags(entity: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in entity.get("tags", [])}


@dataclass
class Run:
    run_id: str
    name: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Run:
        data = raw.get("data", {})
        return cls(
            run_id=raw["info"]["run_id"],
            name=raw["info"].get("run_name", ""),
            status=raw["info"].get("status", ""),
            tags=_tags(data),
            metrics={m["key"]: m["value"] for m in data.get("metrics", [])},
        )


def experiment(base: str, name: str) -> tuple[str, dict[str, str]]:
    """The id and tags of experiment ``name``."""
    query = urllib.parse.urlencode({"experiment_name": name})
    try:
        exp = api(base, f"experiments/get-by-name?{query}")["experiment"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ScreensError(
                f"no experiment {name!r} in the store: run the pipeline first (make repro)"
            ) from None
        raise
    return exp["experiment_id"], _tags(exp)


def runs(base: str, exp_id: str) -> list[Run]:
    """The experiment's active runs, newest first."""
    found: list[Run] = []
    token = None
    while True:
        body = {
            "experiment_ids": [exp_id],
            "max_results": 1000,
            "order_by": ["attributes.start_time DESC"],
        }
        if token:
            body["page_token"] = token
        page = api(base, "runs/search", body)
        found += [Run.parse(r) for r in page.get("runs", [])]
        token = page.get("next_page_token")
        if not token:
            return found


def pick_run(all_runs: list[Run]) -> Run | None:
    """The newest finished training run with a test accuracy, else the newest training run."""
    trained = [r for r in all_runs if "preset" in r.tags]
    evaluated = [r for r in trained if r.status == "FINISHED" and "test_accuracy" in r.metrics]
    return (evaluated or trained or [None])[0]


# --------------------------------------------------------------------------- the server


def wait_ready(base: str, proc: subprocess.Popen | None, timeout: float = READY_TIMEOUT) -> float:
    """Seconds until ``base`` answers its experiments API with 200 (``proc``: the server
    started for it, whose exit ends the wait)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise ScreensError(f"the MLflow UI exited ({proc.returncode}) before it answered")
        try:
            api(base, "experiments/search?max_results=1")
            return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise ScreensError(f"{base} did not answer within {timeout:.0f} s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((ui.HOST, 0))
        return s.getsockname()[1]


def start_ui(log: Path) -> tuple[subprocess.Popen, str]:
    """``make ui``'s server on a free port, in a session of its own; it and its base URL."""
    port = free_port()
    cmd, env = ui.command(port)
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, f"http://{ui.HOST}:{port}"


def stop(proc: subprocess.Popen) -> None:
    """Stop the server ``start_ui`` started: SIGTERM (mlflow passes it to uvicorn), then its
    process group is killed if it is still there after 15 s."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the server this module started
    proc.wait()


# --------------------------------------------------------------------------- the walk


# JavaScript run in the page: true once it shows what it is for
SHOWS_ANY_TEXT = "(names => names.some(n => document.body && document.body.innerText.includes(n)))"
SHOWS_IMAGE = (  # loaded, and on top where it is drawn (not under a card's text)
    "(key => [...document.images].some(i => i.complete && i.naturalWidth > 0"
    " && decodeURIComponent(i.currentSrc || i.src).includes(key)"
    " && (r => r.width > 50 && r.height > 50"
    " && document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === i)"
    "(i.getBoundingClientRect())))"
)

LOADED_IMAGE = (
    f"[...document.images].some(i => i.complete && i.naturalWidth > 0"
    f" && decodeURIComponent(i.currentSrc || i.src).includes({json.dumps(CONFUSION_KEY)}))"
)
ADR = "docs/decisions/0006-mlflow-ui-figures-and-landing.md"
# MLflow 3.17's image card lists every param of the run (key=value) above the image and cuts
# what does not fit; its settings' "Show run parameters" switch hides it, and the run page keeps
# its charts' settings in the browser only (local storage), so nothing the store holds can.
CLIPPED = (
    "run.png: the {key} image of run {run!r} is loaded but drawn under the card's list of "
    "the run's params: MLflow's run page starts every image card with 'Show run parameters' on "
    "and keeps the switch in the browser only; the saved view 'Figures' (figures.png) draws it "
    f"({ADR})"
)

# MLflow 3.17's UI picks the view from ?workflowType= in the URL, else the browser's "GenAI |
# Model training" switch (local storage mlflow.workflowType, default genai), not from the tag:
# make ui prints an address that names the view (ui.landing_url).
LANDING_MISSING = "make ui's address opened without the experiment's training runs"
ON_RUNS = f"(h => h.includes('/runs') && h.includes({ui.TRAINING_VIEW!r}))(location.hash)"
# The bare address redirects to a tab of the view the browser's switch holds (genai: overview)
ON_A_TAB = "/\\/experiments\\/[^/?]+\\/[a-z-]+/.test(location.hash)"
BARE_GENAI = (
    "bare.png: the bare address {url} opened {hash} (MLflow's GenAI view) in a fresh browser: "
    "MLflow 3.17.2 picks the view from ?workflowType= in the address, else the browser's saved "
    f"switch (default genai), never from the experiment's tags; make ui prints {{landing}} ({ADR})"
)


def walk(base: str, out: Path, name: str, run_id: str | None) -> list[str]:
    """Screenshot the pages of experiment ``name``, printing each file written; the problems
    seen, one line each."""
    from pipeline.tracking import views  # imports mlflow: only for a walk

    problems: list[str] = []
    limits: list[str] = []
    exp_id, exp_tags = experiment(base, name)
    if KIND_TAG not in exp_tags:
        problems.append(
            f"experiment {name!r} has no {KIND_TAG} tag: MLflow does not know it holds model "
            "training (any training run sets it)"
        )
    all_runs = runs(base, exp_id)
    trained = [r for r in all_runs if "preset" in r.tags]
    for run_name, count in sorted(Counter(r.name for r in trained).items()):
        if count > 1:
            problems.append(f"{count} training runs are named {run_name!r}: the table cannot tell")
    if run_id:
        chosen = next((r for r in all_runs if r.run_id == run_id), None)
        if chosen is None:
            problems.append(f"no active run {run_id} in experiment {name!r}")
    else:
        chosen = pick_run(all_runs)
        if chosen is None:
            problems.append(f"no training run in experiment {name!r} (no run has a preset tag)")
    names = json.dumps([r.name for r in trained[:20] if r.name])
    shows_matrix = f"{SHOWS_IMAGE}({json.dumps(CONFUSION_KEY)})"
    landing = ui.landing_url(base, exp_id)
    pages = [
        ("landing.png", landing, 1000,
         f"experiment {name!r} as make ui's address opens it",
         f"{ON_RUNS} && {SHOWS_ANY_TEXT}({names})", LANDING_MISSING),
        ("runs.png", f"experiments/{exp_id}/runs", 1000, f"the runs table ({len(all_runs)} runs)",
         f"{SHOWS_ANY_TEXT}({names})", "the runs table shows no training run"),
    ]  # fmt: skip
    if views.VIEW_TAG not in exp_tags:
        problems.append(
            f"experiment {name!r} has no saved view {views.VIEW_NAME!r} (tag {views.VIEW_TAG}): "
            "evaluate@ adds it when it logs the figures (tracking.log_images)"
        )
    elif CONFUSION_KEY not in views.image_keys(exp_tags[views.VIEW_TAG]):
        print(f"note: the saved view {views.VIEW_NAME!r} was saved over; drawing it as it is")
    if views.VIEW_TAG in exp_tags:
        pages.append((
            "figures.png", views.query(exp_id), 1400,
            f"the saved view {views.VIEW_NAME!r}: the runs' charts with their figures",
            shows_matrix,
            f"no {CONFUSION_KEY} image drawn in the saved view {views.VIEW_NAME!r}",
        ))  # fmt: skip
    if chosen is not None:
        pages.append((
            "run.png", f"experiments/{exp_id}/runs/{chosen.run_id}/model-metrics", RUN_HEIGHT,
            f"the charts of run {chosen.name!r} ({chosen.run_id})", shows_matrix,
            f"no {CONFUSION_KEY} image in the charts of run {chosen.name!r}",
        ))  # fmt: skip
    pages.append((
        "bare.png", f"experiments/{exp_id}", 1000,
        f"the bare address of experiment {name!r} in a fresh browser", ON_A_TAB,
        "the bare experiment address opened no tab of the experiment",
    ))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screens-profile-") as profile:
        browser = Browser(Path(profile))
        try:
            for file, route, height, what, shows, missing in pages:
                png = out / file
                png.unlink(missing_ok=True)
                url = route if "://" in route else f"{base}/#/{route}"
                try:
                    session = browser.page(url, WIDTH, height)
                    if not browser.wait_for(session, shows, PAGE_TIMEOUT):
                        if file == "run.png" and browser.evaluate(session, LOADED_IMAGE):
                            limits.append(CLIPPED.format(key=CONFUSION_KEY, run=chosen.name))
                        else:
                            problems.append(f"{file}: {missing} ({url})")
                    time.sleep(SETTLE)  # charts and tables finish drawing
                    if file == "bare.png":
                        where = browser.evaluate(session, "location.hash") or ""
                        if "workflowType=genai" in where or "/runs" not in where:
                            limits.append(BARE_GENAI.format(url=url, hash=where, landing=landing))
                    browser.screenshot(session, png)
                except (ScreensError, BrowserError) as exc:
                    problems.append(f"{file}: {exc}")
                    continue
                print(f"wrote {png}: {what}", flush=True)
                if blank(png):
                    problems.append(f"{file}: the page drew nothing ({url})")
        finally:
            browser.close()
    for line in limits:
        print(f"limit: {line}", flush=True)
    return problems


def _serve_and_walk(args: argparse.Namespace, name: str, tmp: Path) -> list[str]:
    """Walk ``--url``, the tracking server ``MLFLOW_TRACKING_URI`` names, or the store served
    here for the walk."""
    store = ui.store_uri()
    url = args.url or (store if store.startswith(("http://", "https://")) else None)
    if url:
        base = url.rstrip("/")
        wait_ready(base, None, timeout=10)
        return walk(base, args.out, name, args.run)
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///") :]).is_file():
        # mlflow ui would create an empty one
        raise ScreensError(f"no MLflow store at {store}: run the pipeline first (make repro)")
    log = tmp / "ui.log"
    proc, base = start_ui(log)
    try:
        try:
            took = wait_ready(base, proc)
        except (ScreensError, BrowserError) as exc:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise ScreensError(f"{exc}: {' '.join(tail)}") from None
        print(f"MLflow UI of {ui.store_uri()} answered on {base} in {took:.1f} s", flush=True)
        return walk(base, args.out, name, args.run)
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.devtools.screens",
        description="Screenshots of MLflow's UI on the project's store, in headless Chromium.",
    )
    parser.add_argument("--url", help="a running MLflow UI (default: serve the store here)")
    parser.add_argument("--out", type=Path, default=config.ROOT / OUT)
    parser.add_argument("--experiment", help="default: params.yaml's mlflow.experiment")
    parser.add_argument("--run", help="the run whose charts to draw (default: the newest trained)")
    args = parser.parse_args(argv)
    name = args.experiment
    if name is None:
        from pipeline.core import params

        name = params.load().mlflow.experiment
    with tempfile.TemporaryDirectory(prefix="screens-") as tmp:
        try:
            chromium()
            problems = _serve_and_walk(args, name, Path(tmp))
        except (ScreensError, BrowserError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
