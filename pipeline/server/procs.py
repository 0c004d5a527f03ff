"""Processes and ports of the team server: is a port taken, is a pid alive, a pid file's pid,
a log's last line; ``ServerError`` says in one line why something cannot start or stop."""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST = "127.0.0.1"  # never another interface by default: share it through a tunnel


class ServerError(RuntimeError):
    """The server cannot be started or stopped; the message says why."""


def port_busy(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat")
    return not (state.is_file() and state.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(empty log)"
