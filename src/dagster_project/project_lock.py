"""One run at a time writes a project: `data/` and its DVC version, `artifacts/`, the GX project, the local stores.

The lock is the operating system's (flock on `<project>/.videodit.lock`), so it is released when its process
dies however it dies: a killed run never leaves a stale lock behind. The file records who holds it, so a
second run can say which run it waits for. It guards one machine's folder; runs spread over machines
coordinate through Dagster's run queue and its concurrency limits instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = ".videodit.lock"
POLL_S = 0.5


class ProjectLockHeld(Exception):
    """Another run holds the project lock; the message names it."""


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except json.JSONDecodeError:  # the holder is between truncating and writing its record
        return {}


@contextmanager
def project_lock(project_dir: Path, run_id: str, timeout_s: float) -> Iterator[None]:
    """Hold the project's lock for the block; waits up to `timeout_s` for another holder, then raises."""
    path = Path(project_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held = _holder(fd)
                    raise ProjectLockHeld(
                        f"another run (id {held.get('run_id', 'unknown')}, pid {held.get('pid', '?')} on "
                        f"{held.get('host', '?')}, since {held.get('since', '?')}) holds the project lock {path}; "
                        f"waited {timeout_s:g} s. Run again when it has finished, or raise the workspace's lock_timeout_s."
                    ) from None
                time.sleep(POLL_S)
        record = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
