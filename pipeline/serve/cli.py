"""Serve a preset's champion on 127.0.0.1 (``make serve``).

    python -m pipeline.serve [--model PRESET] [--port 5002] [--poll 5] [--pid-file FILE]

``--model``: a preset of params.yaml; by default the preset whose champion has the best
``test_accuracy`` tag among those with ``<preset>-serving@champion`` in the store. Serves
``<preset>-serving@champion`` through pipeline/serve/app.py, and follows the alias.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from pipeline.serve import app as serve_app
from pipeline.tracking import serving


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.serve",
        description="Serve <preset>-serving@champion over HTTP on 127.0.0.1, with a page at /.",
    )
    ap.add_argument("--model", help="preset (default: the best champion by test accuracy)")
    ap.add_argument("--port", type=int, default=5002)
    ap.add_argument("--poll", type=float, default=5.0, help="seconds between alias checks")
    ap.add_argument("--max-body", type=int, default=serve_app.MAX_BODY, help="bytes")
    ap.add_argument("--pid-file", type=Path, help="write the server's pid here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is not a port number (1-65535)", file=sys.stderr)
        return 2
    if not port_free(args.port):
        print(f"error: port {args.port} on 127.0.0.1 is in use (--port / PORT=)", file=sys.stderr)
        return 1
    try:
        preset = args.model or serving.best_served_preset()
        champion = serve_app.Champion(serving.serving_name(preset), poll=args.poll)
    except Exception as exc:  # ServingError, TrackingError, BadModelFile: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: {first}", file=sys.stderr)
        return 2
    import uvicorn

    champion.start()
    if args.pid_file:
        args.pid_file.parent.mkdir(parents=True, exist_ok=True)
        args.pid_file.write_text(f"{os.getpid()}\n")
    print(
        f"serving {champion.current.label} on http://127.0.0.1:{args.port}/ "
        f"(POST /invocations; alias checked every {args.poll:g} s)",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(
            serve_app.build(champion, args.max_body),
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            limit_concurrency=64,
            timeout_keep_alive=5,
        )
    finally:
        champion.stop()
        if args.pid_file and args.pid_file.is_file():
            args.pid_file.unlink(missing_ok=True)
    return 0
