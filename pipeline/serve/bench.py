"""Serving latency and throughput per preset (``make bench-serve``; last line JSON).

    python -m pipeline.serve.bench [--presets a,b] [--requests 200] [--untrained] [--no-write]

For each preset: ``<preset>-serving@champion`` of the project's store, or, when it has
none (or with ``--untrained``), the preset's architecture with untrained weights logged to a
temporary store (latency does not depend on the weights; the output says which). The
server (pipeline/serve/app.py) runs alone on a free port of 127.0.0.1, then the in-process
figures are taken with the server stopped:

- single picture (a 200x200 PNG) over HTTP, keep-alive: p50 / p99 with 1 and 8 clients;
- batches of 256 PNGs: pictures per second over HTTP, in-process through the same pyfunc
  (decode + preprocess + network), and in-process ``predict_proba`` of the model's family
  on the already preprocessed arrays (the network alone); both ratios.
The load average is recorded with the figures (other processes skew them).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

BATCH = 256
CLIENTS = 8
GOAL_P99_MS = 30.0  # keras_small_cnn, one picture, 2 idle cores (issue #25)
GOAL_RATIO = 0.7  # HTTP batch throughput over in-process


def pictures(n: int, size: int = 200, seed: int = 0) -> list[bytes]:
    """``n`` photo-like PNGs: a dark digit (Pillow's font) on white, jittered."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = Image.new("RGB", (size, size), (250, 248, 240))
        font = ImageFont.load_default(size=int(size * rng.uniform(0.5, 0.75)))
        xy = (size * rng.uniform(0.4, 0.6), size * rng.uniform(0.4, 0.6))
        ImageDraw.Draw(img).text(xy, str(i % 10), fill=(20, 20, 30), font=font, anchor="mm")
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def body(pngs: list[bytes]) -> bytes:
    data = [[base64.b64encode(p).decode()] for p in pngs]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": data}}).encode()


def percentile(ms: list[float], q: float) -> float:
    return round(float(np.percentile(ms, q)), 2)


def _client(port: int, payload: bytes, n: int, out: list[float], errors: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json"}
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", "/invocations", payload, headers)
        resp = conn.getresponse()
        resp.read()
        out.append((time.perf_counter() - t) * 1000)
        if resp.status != 200:
            errors.append(resp.status)
    conn.close()


def http_latency(port: int, payload: bytes, clients: int, requests: int) -> dict:
    _client(port, payload, 10, [], [])  # warm-up
    times: list[float] = []
    errors: list[int] = []
    each = max(1, requests // clients)
    threads = [
        threading.Thread(target=_client, args=(port, payload, each, times, errors))
        for _ in range(clients)
    ]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return {
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "requests_per_s": round(len(times) / wall, 1),
        "errors": len(errors),
    }


def best_rate(fn, n_pictures: int, repeat: int) -> float:
    """Pictures per second of ``fn()`` (median of ``repeat`` timed calls after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(n_pictures / float(np.median(times)), 1)


def start_server(preset: str, env: dict) -> tuple[subprocess.Popen, int]:
    from pipeline.serve.cli import port_free

    port = next(p for p in range(5300, 5400) if port_free(p))
    cmd = [sys.executable, "-m", "pipeline.serve", "--model", preset, "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{preset}: the server exited: {proc.stderr.read().decode()[-500:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"{preset}: the server did not answer in 300 s")


def untrained_model(preset: str, folder: Path) -> tuple[Path, list[int]]:
    """The preset's architecture, untrained, saved as its family saves it; its classes."""
    from pipeline.core import params as params_mod

    params = params_mod.load()
    mp = params.models[preset]
    folder.mkdir(parents=True, exist_ok=True)
    if mp.family == "scratch":
        from pipeline.models.numpy_cnn.network import Network

        Network(mp.arch, (28, 28, 1), seed=0).save(folder / "model.npz")
    else:
        from pipeline.models.keras.build import build_keras_model

        model = build_keras_model(mp.arch, custom=mp.family == "custom")
        model.save(folder / "model.keras")
    return folder, list(params.datasets[mp.dataset].classes)


def bench_preset(preset: str, env: dict, requests: int, pngs: list[bytes]) -> dict:
    from pipeline.predict.preprocess import load_image_bytes, to_mnist
    from pipeline.tracking import serving

    proc, port = start_server(preset, env)
    try:
        one = body(pngs[:1])
        row = {
            "http_1_client": http_latency(port, one, 1, requests),
            f"http_{CLIENTS}_clients": http_latency(port, one, CLIENTS, requests),
        }
        batch = body(pngs[:BATCH])
        errors: list[int] = []
        row["http_batch_pictures_per_s"] = best_rate(
            lambda: _client(port, batch, 1, [], errors), BATCH, 5
        )
        row["http_batch_errors"] = len(errors)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    try:
        name = serving.serving_name(preset)
        pyfunc = serving.load_serving(name, serving.champion_version(name))
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    import pandas as pd

    frame = pd.DataFrame({"image": pngs[:BATCH]})
    inner = pyfunc.unwrap_python_model()
    x = np.stack([to_mnist(load_image_bytes(p)) for p in pngs[:BATCH]])
    row["inprocess_pyfunc_pictures_per_s"] = best_rate(lambda: pyfunc.predict(frame), BATCH, 5)
    row["inprocess_predict_proba_pictures_per_s"] = best_rate(
        lambda: inner.family.predict_proba(inner.model, x), BATCH, 5
    )
    http_rate = row["http_batch_pictures_per_s"]
    row["ratio_vs_predict_proba"] = round(
        http_rate / row["inprocess_predict_proba_pictures_per_s"], 3
    )
    row["ratio_vs_pyfunc"] = round(http_rate / row["inprocess_pyfunc_pictures_per_s"], 3)
    return row


def main(argv: list[str] | None = None) -> int:
    from pipeline.core import params as params_mod
    from pipeline.tracking import serving

    ap = argparse.ArgumentParser(prog="python -m pipeline.serve.bench", description=__doc__)
    ap.add_argument("--presets", help="comma-separated (default: every preset of params.yaml)")
    ap.add_argument("--requests", type=int, default=200, help="single-picture requests a run")
    ap.add_argument("--untrained", action="store_true", help="untrained weights for all")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    presets = args.presets.split(",") if args.presets else list(params_mod.load().models)
    project_uri = serving.tracking_uri()
    pngs = pictures(BATCH)
    results, load = {}, {"before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp_uri = f"sqlite:///{tmp}/mlflow.db"
        for preset in presets:
            source = "champion"
            uri = project_uri
            if args.untrained or not _has_champion(preset, project_uri):
                source, uri = "untrained", tmp_uri
                os.environ["MLFLOW_TRACKING_URI"] = tmp_uri
                try:
                    model_dir, classes = untrained_model(preset, Path(tmp) / preset)
                    serving.publish(preset, model_dir, classes, Path(tmp) / "artifacts")
                finally:
                    os.environ["MLFLOW_TRACKING_URI"] = project_uri
            env = dict(os.environ, MLFLOW_TRACKING_URI=uri, TF_CPP_MIN_LOG_LEVEL="2")
            print(f"{preset} ({source} weights) ...", file=sys.stderr, flush=True)
            try:
                results[preset] = {"weights": source} | bench_preset(
                    preset, env, args.requests, pngs
                )
            except Exception as exc:  # one preset's failure does not lose the others
                results[preset] = {"weights": source, "error": str(exc).splitlines()[0][:200]}
            print(f"  {json.dumps(results[preset])}", file=sys.stderr, flush=True)
    load["after"] = os.getloadavg()[0]
    summary = _summary(results, load)
    if not args.no_write:
        _write(summary)
    print(json.dumps(summary))
    return 0


def _has_champion(preset: str, uri: str) -> bool:
    from pipeline.tracking import serving

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        return False  # no store yet: do not create one
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        serving.champion_version(serving.serving_name(preset))
        return True
    except Exception:
        return False
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _summary(results: dict, load: dict) -> dict:
    small = results.get("keras_small_cnn", {})
    p99 = small.get("http_1_client", {}).get("p99_ms")
    ratios = [r.get("ratio_vs_predict_proba") for r in results.values() if "error" not in r]
    ratios_pf = [r.get("ratio_vs_pyfunc") for r in results.values() if "error" not in r]
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1min_before": round(load["before"], 2),
            "loadavg_1min_after": round(load["after"], 2),
        },
        "presets": results,
        "goals": {
            "keras_small_cnn_p99_ms": p99,
            "p99_le_30ms": p99 is not None and p99 <= GOAL_P99_MS,
            "ratio_vs_predict_proba_ge_0.7_all": bool(ratios) and min(ratios) >= GOAL_RATIO,
            "ratio_vs_pyfunc_ge_0.7_all": bool(ratios_pf) and min(ratios_pf) >= GOAL_RATIO,
        },
    }


def _write(summary: dict) -> None:
    from pipeline.devtools.benchmarks import this_machine, write_section

    m = summary["machine"]
    lines = [
        "`make bench-serve` (pipeline/serve/bench.py): one 200x200 PNG per request over HTTP "
        f"(keep-alive; 1 and {CLIENTS} clients), batches of {BATCH} PNGs over HTTP and "
        "in-process. Ratio: HTTP batch throughput over in-process, against the network alone "
        "(`predict_proba` on preprocessed arrays) and against the same pyfunc (decode + "
        "preprocess + network).",
        "",
        f"Machine: {m['cpus']} CPUs, load average {m['loadavg_1min_before']} before, "
        f"{m['loadavg_1min_after']} after (other processes share the cores).",
        "",
        "| preset | weights | 1 client p50 / p99 ms | 8 clients p50 / p99 ms | HTTP batch pict/s "
        "| pyfunc pict/s | predict_proba pict/s | ratio vs proba | ratio vs pyfunc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, r in summary["presets"].items():
        if "error" in r:
            lines.append(f"| {preset} | {r['weights']} | error: {r['error']} | | | | | | |")
            continue
        one, many = r["http_1_client"], r[f"http_{CLIENTS}_clients"]
        lines.append(
            f"| {preset} | {r['weights']} | {one['p50_ms']} / {one['p99_ms']} "
            f"| {many['p50_ms']} / {many['p99_ms']} | {r['http_batch_pictures_per_s']} "
            f"| {r['inprocess_pyfunc_pictures_per_s']} "
            f"| {r['inprocess_predict_proba_pictures_per_s']} "
            f"| {r['ratio_vs_predict_proba']} | {r['ratio_vs_pyfunc']} |"
        )
    g = summary["goals"]
    lines += [
        "",
        f"Goals (2 idle cores): keras_small_cnn p99 {g['keras_small_cnn_p99_ms']} ms "
        f"(≤ 30: {g['p99_le_30ms']}); HTTP ≥ 0.7x in-process predict_proba: "
        f"{g['ratio_vs_predict_proba_ge_0.7_all']}; ≥ 0.7x the in-process pyfunc: "
        f"{g['ratio_vs_pyfunc_ge_0.7_all']}.",
    ]
    machine = f"{this_machine()}, load average {m['loadavg_1min_before']}"
    write_section("serving", "\n".join(lines), machine, title="Serving (make bench-serve)")


if __name__ == "__main__":
    sys.exit(main())
