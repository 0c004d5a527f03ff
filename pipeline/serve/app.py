"""The serving app: MLflow's scoring app for ``<preset>-serving@champion`` inside an app of
the project's own, which adds the page at ``/``, a request size cap, one-line JSON errors,
the model version in every response, and a new champion without a restart.

- ``POST /invocations``: MLflow's (``dataframe_split`` / ``dataframe_records`` with a column
  ``image`` of base64 PNG/JPEG); the answer gains ``"model": {"name", "version"}`` and the
  header ``X-Model-Version: <name>/<version>``. Errors: ``{"error": "<one line>"}`` with a 4xx
  status (413 over ``max_body`` bytes, 415 without a JSON/CSV Content-Type, 400 otherwise);
  MLflow's own messages, which quote the whole input and may carry a stack trace, never
  reach the client.
- ``GET /ping``, ``/health``, ``/version``: MLflow's; ``GET /model``: name and version.
- Hot swap: a thread polls the alias every ``poll`` seconds; a new version is loaded beside
  the serving one, then put in place by one reference assignment. A request keeps the
  version it started with, so none fails during the swap.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from pipeline.tracking import serving

PAGE = Path(__file__).with_name("page.html")
MAX_BODY = 8 * 1024 * 1024  # bytes of one request body: 413 beyond
DRAIN = 8  # bodies up to DRAIN x MAX_BODY are read (and dropped) before the 413
MAX_ERROR = 300  # characters of an error message
log = logging.getLogger("pipeline.serve")


@dataclass(frozen=True)
class Loaded:
    name: str
    version: str
    app: object  # MLflow's FastAPI scoring app for this version

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def load(name: str, version: str) -> Loaded:
    return Loaded(name, version, serving.scoring_app(serving.load_serving(name, version)))


class Champion:
    """The version of ``name`` being served, following ``name@champion``."""

    def __init__(self, name: str, poll: float = 5.0):
        self.name, self.poll = name, poll
        self.current = load(name, serving.champion_version(name))
        self._stop = threading.Event()

    def check(self) -> bool:
        """Load and swap in the champion if it moved; True when it did."""
        version = serving.champion_version(self.name)
        if version == self.current.version:
            return False
        new = load(self.name, version)  # the old one keeps serving meanwhile
        old, self.current = self.current, new  # the swap: one reference assignment
        log.warning("champion %s: version %s -> %s", self.name, old.version, version)
        return True

    def run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.check()
            except Exception as exc:  # store down, bad version: keep serving the old one
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning(
                    "champion %s: still version %s (%s)",
                    self.name,
                    self.current.version,
                    first[:200],
                )

    def start(self) -> None:
        threading.Thread(target=self.run, name="champion-poll", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def error(status: int, message: str, version: str = "") -> JSONResponse:
    """``{"error": message}``: one line, at most ``MAX_ERROR`` characters."""
    message = " ".join(message.split())
    if len(message) > MAX_ERROR:
        message = message[: MAX_ERROR - 3] + "..."
    headers = {"X-Model-Version": version} if version else None
    return JSONResponse({"error": message or "bad request"}, status_code=status, headers=headers)


def mlflow_message(raw: bytes) -> str:
    """The reason in an error body of MLflow's scoring app, without the input it quotes."""
    try:
        doc = json.loads(raw)
        message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
    except ValueError:
        message = raw.decode("utf-8", "replace")
    if "\nError: " in message:  # "Failed to predict data '<the whole input>'. \nError: ..."
        message = message.rsplit("\nError: ", 1)[1]
    if "Input: \n" in message or "Input:\n" in message:  # "... Input: \n<the body>"
        message = message.split("Input:", 1)[0]
    if message.startswith("Failed to enforce schema") or "Model is missing inputs" in message:
        if "missing inputs" in message:
            return "the input needs a column named 'image' (base64 PNG/JPEG)"
        return "the column 'image' must hold base64 PNG/JPEG files"
    if "Invalid input. Data is not compatible" in message or "Failed to parse input" in message:
        return "the body must be JSON with dataframe_split or dataframe_records of 'image'"
    return message.splitlines()[0] if message.strip() else "bad request"


async def _body(receive, limit: int) -> bytes | None:
    """The whole request body, or None past ``limit`` bytes. A body up to ``DRAIN`` times
    the limit is read to its end (and dropped), so that the client, still sending, gets the
    413 rather than a reset connection."""
    body, size, more = bytearray(), 0, True
    while more and size <= DRAIN * limit:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size <= limit:
            body += chunk
        more = msg.get("more_body", False)
    return bytes(body) if size <= limit else None


class Scoring:
    """ASGI endpoint: the request goes to the scoring app of the version current when it
    arrived; its answer gets the version, its errors become one line."""

    def __init__(self, champion: Champion, max_body: int = MAX_BODY):
        self.champion, self.max_body = champion, max_body

    async def __call__(self, scope, receive, send) -> None:
        cur = self.champion.current  # this request's version, fixed
        headers = dict(scope["headers"])
        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        too_big = f"request body over {self.max_body} bytes"
        if length > DRAIN * self.max_body:
            return await error(413, too_big, cur.label)(scope, receive, send)
        body = await _body(receive, self.max_body)
        if body is None:
            return await error(413, too_big, cur.label)(scope, receive, send)
        kind = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip()
        if kind not in ("application/json", "text/csv", "application/vnd.apache.parquet"):
            msg = f"Content-Type must be application/json (got {kind or 'none'})"
            return await error(415, msg, cur.label)(scope, receive, send)
        if not body.strip():
            return await error(400, "empty request body", cur.label)(scope, receive, send)
        status, out = await _call(cur.app, scope, body)
        if status == 200:
            try:
                doc = json.loads(out)
                doc["model"] = {"name": cur.name, "version": cur.version}
                resp = JSONResponse(doc, headers={"X-Model-Version": cur.label})
            except (ValueError, TypeError):
                resp = error(400, "the model's answer is not JSON", cur.label)
        else:
            resp = error(status if 400 <= status < 500 else 400, mlflow_message(out), cur.label)
        await resp(scope, receive, send)


async def _call(app, scope, body: bytes) -> tuple[int, bytes]:
    """Run ``app`` on a request with ``body``; (status, response body)."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status, parts = 500, []

    async def capture(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    try:
        await app(scope, replay, capture)
    except Exception as exc:  # never a traceback to the client
        log.exception("scoring failed")
        return 500, json.dumps({"message": f"scoring failed ({type(exc).__name__})"}).encode()
    return status, b"".join(parts)


class Forward:
    """ASGI endpoint: MLflow's own answer (``/ping``, ``/health``, ``/version``)."""

    def __init__(self, champion: Champion):
        self.champion = champion

    async def __call__(self, scope, receive, send) -> None:
        await self.champion.current.app(scope, receive, send)


def build(champion: Champion, max_body: int = MAX_BODY) -> Starlette:
    page = PAGE.read_text()

    async def index(request):
        return HTMLResponse(page, headers={"X-Model-Version": champion.current.label})

    async def model(request):
        cur = champion.current
        return JSONResponse(
            {"name": cur.name, "version": cur.version}, headers={"X-Model-Version": cur.label}
        )

    routes = [
        Route("/", index),
        Route("/model", model),
        Route("/invocations", Scoring(champion, max_body), methods=["POST"]),
        *(Route(p, Forward(champion), methods=["GET"]) for p in ("/ping", "/health", "/version")),
    ]
    return Starlette(routes=routes)
