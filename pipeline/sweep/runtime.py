"""Starting Ray (or joining a cluster) and where Tune keeps a sweep's state.

With ``RAY_ADDRESS`` unset, a local Ray on this machine's cores, bound to 127.0.0.1
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray on loopback: its ports have no
authentication beyond the token) and without the dashboard. With ``RAY_ADDRESS`` set,
that cluster as it is (token auth: ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` as
for the cluster's own processes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.core import config

QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


def storage_dir(root: Path = config.ROOT) -> Path:
    """Tune's experiment folders and the parent run ids (git-ignored: data/cache/)."""
    return config.cache_dir(root) / "sweeps"


def loopback() -> None:
    """Without ``RAY_ADDRESS``, keep the local Ray on 127.0.0.1. Call it before Ray is
    imported: Ray reads the variable once, at import (set later, Ray listens on all
    interfaces)."""
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def start_ray(num_cpus: int | None = None) -> float:
    """Start or join Ray; the seconds it took."""
    loopback()  # in effect only if Ray was not imported yet
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "1")  # ASHA sees every epoch
    for k, v in QUIET.items():
        os.environ.setdefault(k, v)
    import ray

    t = time.perf_counter()
    runtime_env = {"env_vars": dict(QUIET)}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(
            address="local",  # a new Ray of our own, never another one found on the machine
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            object_store_memory=256 * 1024**2,
            runtime_env=runtime_env,
            log_to_driver=False,
        )
    return time.perf_counter() - t


def multi_node() -> bool:
    import ray

    return len([n for n in ray.nodes() if n.get("Alive")]) > 1
