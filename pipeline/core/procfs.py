"""What ``/proc`` says about a process: this boot's id, a process's start time (pids are
reused, so a pid plus its start time names one process) and its parent and command line.
Used by the stage runner's markers (pipeline/core/runner.py) and by the orphan-run clean-up
(pipeline/tracking/orphans.py)."""

from __future__ import annotations

from pathlib import Path


def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``); "" when unreadable."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks (pids are reused); None: no such."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks
    except (OSError, IndexError):
        return None


def proc_parent(pid: int) -> tuple[int, list[bytes]] | None:
    """The parent pid and the command line (``argv``) of process ``pid``; None: unreadable."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return ppid, cmd
