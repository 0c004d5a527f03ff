"""The numeric environment of this process: what decides which floating-point kernels run.

Two runs with the same ``fingerprint`` take the same kernel path and give the same numbers
byte for byte; runs with different fingerprints agree only within noise (README,
"Reproducibility"). The probe is cheap: it imports neither TensorFlow nor mlflow (versions
come from package metadata), and reads /proc/cpuinfo and threadpoolctl.

Fields: ``cpu_model``, ``cpu_isa`` (avx2, avx512f, amx where present), ``cpus`` (the CPUs
this process may use), ``blas`` (NumPy's BLAS library and version), ``blas_kernel`` (the
core type it picked, e.g. Haswell or SkylakeX), ``blas_threads``, ``onednn`` (on or off:
``TF_ENABLE_ONEDNN_OPTS``, else TensorFlow's default, on for Linux x86-64), ``onednn_isa``
(``ONEDNN_MAX_CPU_ISA`` when set, else the best instruction set oneDNN finds in the CPU
flags), ``threads`` (the thread-count variables set), the versions of python, numpy,
tensorflow and keras, and ``fingerprint``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

# The fields that change numbers; cpu_model and python do not (the same kernels on another
# model of CPU give the same bytes).
FINGERPRINT_FIELDS = (
    "cpu_isa",
    "cpus",
    "blas",
    "blas_kernel",
    "blas_threads",
    "onednn",
    "onednn_isa",
    "threads",
    "numpy",
    "tensorflow",
    "keras",
)
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "OPENBLAS_CORETYPE",
)
TAG_PREFIX = "env."
CPUINFO = Path("/proc/cpuinfo")


def cpu_info(path: Path = CPUINFO) -> tuple[str, set[str]]:
    """The first CPU's model name and flags from ``path`` ("unknown", {} where absent)."""
    model, flags = "unknown", set()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        if model != "unknown" and flags:
            break
    return model, flags


def isa_names(flags: set[str]) -> list[str]:
    """avx2, avx512f and amx (any amx_* flag), those the CPU has."""
    names = [name for name in ("avx2", "avx512f") if name in flags]
    if any(f.startswith("amx") for f in flags):
        names.append("amx")
    return names


def onednn_isa(flags: set[str], env: dict[str, str]) -> str:
    """oneDNN's instruction set: ``ONEDNN_MAX_CPU_ISA`` when set (lower case), else the best
    of its levels that the CPU flags allow (oneDNN dispatches to the best one by default)."""
    capped = env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA")
    if capped:
        return capped.lower()
    avx512_core = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    if avx512_core and {"amx_tile", "amx_bf16", "amx_int8"} <= flags:
        return "avx512_core_amx"
    if avx512_core and "avx512_bf16" in flags:
        return "avx512_core_bf16"
    if avx512_core and "avx512_vnni" in flags:
        return "avx512_core_vnni"
    if avx512_core:
        return "avx512_core"
    if "avx2" in flags:
        return "avx2_vnni" if "avx_vnni" in flags else "avx2"
    if "avx" in flags:
        return "avx"
    return "sse41" if "sse4_1" in flags else "unknown"


def onednn_state(env: dict[str, str], machine: str | None = None, system: str | None = None) -> str:
    """ "on" or "off": ``TF_ENABLE_ONEDNN_OPTS`` when set, else TensorFlow's default (on for
    Linux x86-64 builds, off elsewhere)."""
    value = env.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower()
    if value in ("0", "false", "off", "no"):
        return "off"
    if value in ("1", "true", "on", "yes"):
        return "on"
    machine = (machine or platform.machine()).lower()
    system = system or platform.system()
    return "on" if system == "Linux" and machine in ("x86_64", "amd64") else "off"


def _version(dist: str, *others: str) -> str:
    for name in (dist, *others):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "absent"


def blas_info() -> dict[str, str]:
    """NumPy's BLAS as threadpoolctl sees it: library and version, kernel, threads."""
    import numpy  # noqa: F401  (loads the BLAS that threadpoolctl inspects)

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"blas": "unknown", "blas_kernel": "unknown", "blas_threads": "unknown"}
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    pools.sort(key=lambda p: "numpy" not in str(p.get("filepath", "")))  # NumPy's first
    if not pools:
        return {"blas": "none", "blas_kernel": "none", "blas_threads": "none"}
    pool = pools[0]
    return {
        "blas": f"{pool.get('internal_api', 'unknown')} {pool.get('version') or ''}".strip(),
        "blas_kernel": str(pool.get("architecture") or pool.get("threading_layer") or "unknown"),
        "blas_threads": str(pool.get("num_threads", "unknown")),
    }


def fingerprint(env: dict[str, str]) -> str:
    """A 12-hex-digit hash of the fields that change numbers (FINGERPRINT_FIELDS)."""
    payload = json.dumps({k: env.get(k, "") for k in FINGERPRINT_FIELDS}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def probe(environ: dict[str, str] | None = None, cpuinfo: Path = CPUINFO) -> dict[str, str]:
    """The numeric environment of this process, every value a string, with its fingerprint."""
    environ = dict(os.environ if environ is None else environ)
    model, flags = cpu_info(cpuinfo)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 0
    env = {
        "cpu_model": model,
        "cpu_isa": " ".join(isa_names(flags)) or "none",
        "cpus": str(cpus),
        **blas_info(),
        "onednn": onednn_state(environ),
        "onednn_isa": onednn_isa(flags, environ),
        "threads": " ".join(f"{v}={environ[v]}" for v in THREAD_VARS if environ.get(v))
        or "default",
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "tensorflow": _version("tensorflow", "tensorflow-cpu"),
        "keras": _version("keras"),
    }
    env["fingerprint"] = fingerprint(env)
    return env


def as_tags(env: dict[str, str]) -> dict[str, str]:
    """``env`` as MLflow tags, each key under ``env.``."""
    return {f"{TAG_PREFIX}{key}": value for key, value in env.items()}


def from_tags(tags: dict[str, str]) -> dict[str, str]:
    """The environment recorded in a run's or version's tags ({} when none was)."""
    return {k[len(TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}


def differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """The fields whose values differ, fingerprint fields first, then cpu_model and python."""
    keys = [*FINGERPRINT_FIELDS, "cpu_model", "python"]
    return [k for k in keys if (k in a or k in b) and a.get(k) != b.get(k)]


def write(path: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """Write ``env`` (default: :func:`probe`) to ``path`` as sorted JSON; the environment."""
    from pipeline.core.io import atomic_write

    env = probe() if env is None else env
    atomic_write(path, json.dumps(env, indent=2, sort_keys=True) + "\n")
    return env


def read(path: Path) -> dict[str, str]:
    """The environment a sidecar file recorded; a missing or unreadable file is one clear
    ValueError naming it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no numeric environment recorded (missing file)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a numeric-environment JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a numeric-environment JSON object")
    return {str(k): str(v) for k, v in data.items()}


def describe(env: dict[str, str]) -> str:
    """One line: the fields that matter most, for logs and reports."""
    return (
        f"{env.get('blas', '?')} {env.get('blas_kernel', '?')} x{env.get('blas_threads', '?')}, "
        f"oneDNN {env.get('onednn', '?')} ({env.get('onednn_isa', '?')}), "
        f"{env.get('cpus', '?')} CPUs [{env.get('cpu_isa', '?')}], "
        f"numpy {env.get('numpy', '?')}, tensorflow {env.get('tensorflow', '?')}, "
        f"fingerprint {env.get('fingerprint', '?')}"
    )


if __name__ == "__main__":
    print(json.dumps(probe(), indent=2, sort_keys=True))
