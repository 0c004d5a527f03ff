"""Runs left RUNNING by a process that died (SIGKILL, power loss): each open run carries
tags naming its process, and a run whose process is surely gone is marked KILLED."""

from __future__ import annotations

import logging
import os
import socket

import mlflow

from pipeline.core.procfs import boot_id, proc_start
from pipeline.tracking.store import active_experiment, with_retry

log = logging.getLogger(__name__)

PID_TAG, HOST_TAG, BOOT_TAG, START_TAG = (
    "pipeline.pid",
    "pipeline.host",
    "pipeline.boot_id",
    "pipeline.proc_start",
)

# --------------------------------------------------------------------------- orphans


def process_tags() -> dict[str, str]:
    """Who holds a run open: pid, its start time (pids are reused), host and boot id."""
    pid = os.getpid()
    return {
        PID_TAG: str(pid),
        HOST_TAG: socket.gethostname(),
        BOOT_TAG: boot_id(),
        START_TAG: proc_start(pid) or "",
    }


def process_gone(tags: dict[str, str]) -> bool:
    """True when the process the tags name surely no longer runs: same host, and either
    another boot or no process with that pid and start time. Runs of other hosts, or
    without the tags, are never judged gone."""
    pid = tags.get(PID_TAG, "")
    if not pid.isdigit() or tags.get(HOST_TAG) != socket.gethostname():
        return False
    if tags.get(BOOT_TAG) and tags.get(BOOT_TAG) != boot_id():
        return True
    start = proc_start(int(pid))
    return start is None or (bool(tags.get(START_TAG)) and start != tags.get(START_TAG))


def kill_orphan_runs(preset: str | None = None) -> list[str]:
    """Mark KILLED the runs of ``preset`` (None: of any preset or stage) in the active
    experiment that are still RUNNING although their process is gone (SIGKILL, power loss);
    one log line each. Runs of live processes (other queued experiments) are left alone."""
    client = mlflow.MlflowClient()
    exp_id = active_experiment()
    running = "attributes.status = 'RUNNING'"
    where = f"tags.preset = '{preset}' and {running}" if preset else running
    runs = with_retry(lambda: client.search_runs([exp_id], filter_string=where))
    killed = []
    for run in runs:
        tags = run.data.tags
        if process_gone(tags):
            with_retry(lambda r=run: client.set_terminated(r.info.run_id, "KILLED"))
            killed.append(run.info.run_id)
            log.warning(
                "marked MLflow run %s of %s KILLED: its process %s on %s is gone",
                run.info.run_id,
                tags.get("preset") or run.info.run_name,
                tags.get(PID_TAG),
                tags.get(HOST_TAG),
            )
    return killed
