"""Runs a dead process left RUNNING (SIGKILL, the OOM killer, a lost machine), found and ended as KILLED.

Every tracked run records the process that runs it (`WORKER_TAG`: host, pid and the process's start time, so
a pid the system gave to a new process does not pass for the old one). A RUNNING run of another Dagster run is
stale when that process is gone from this host, or when Dagster says that run is over. A worker on another
host is never guessed dead.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import psutil
from mlflow import MlflowClient
from mlflow.entities import Run

from videodit.tracking.mlflow_store import PARENT_RUN_TAG

WORKER_TAG = "videodit.worker"


def _started(process: psutil.Process) -> str:
    return f"{process.create_time():.2f}"


def worker_tag(pid: int | None = None) -> str:
    """Process `pid` (this one by default) as a worker tag value: `host:pid:start time`."""
    process = psutil.Process(pid)
    return f"{socket.gethostname()}:{process.pid}:{_started(process)}"


def _on_this_host(worker: str | None) -> tuple[int, str] | None:
    """(pid, start time) of a worker tag written on this host; None for another host or no tag."""
    host, _, rest = (worker or "").partition(":")  # a host name holds no colon
    pid, _, started = rest.partition(":")
    return (int(pid), started) if host == socket.gethostname() and pid.isdigit() and started else None


def worker_pid(worker: str | None) -> int | None:
    """The pid of a worker that ran on this host, or None."""
    found = _on_this_host(worker)
    return found[0] if found else None


def worker_is_gone(worker: str | None) -> bool:
    """True only when `worker` ran on this host and its process has ended (exited, killed, a zombie)."""
    found = _on_this_host(worker)
    if found is None:
        return False
    pid, started = found
    try:
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE or _started(process) != started
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # another user's process, alive
        return False


def end_stale_runs(
    client: MlflowClient, experiment_id: str, dagster_run_id: str, dagster_run_is_over: Callable[[str], bool]
) -> list[Run]:
    """End as KILLED the RUNNING runs of other Dagster runs whose worker is gone or whose Dagster run is over."""
    running = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{PARENT_RUN_TAG}` != '{dagster_run_id}'"
    )
    stale = [
        run for run in running
        if worker_is_gone(run.data.tags.get(WORKER_TAG)) or dagster_run_is_over(run.data.tags[PARENT_RUN_TAG])
    ]  # fmt: skip
    for run in stale:
        client.set_terminated(run.info.run_id, "KILLED")
    return stale
