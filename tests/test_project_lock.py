"""Two runs in one project never write it at once: the second waits for the lock or fails naming the holder."""

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, Failure, materialize
from dagster._core.errors import DagsterResourceFunctionError
from dvc.repo import Repo

from dagster_project.defs.ingestion import raw_videos
from dagster_project.project_lock import project_lock
from dagster_project.defs.resources import DVCResource, Workspace
from videodit.data.shards import ClipShards

RUN_DATA_ASSETS = """
import json, sys, time
from dagster import DagsterInstance, materialize
from dagster_project.definitions import defs
from dagster_project.defs.jobs import DATA_STAGES
data_assets = [a for a in defs.assets if set(a.group_names_by_key.values()) <= set(DATA_STAGES)]
from dagster_project.defs.resources import DVCResource, Workspace
root, remote, out = sys.argv[1:4]
instance = DagsterInstance.ephemeral()
result = materialize(data_assets, instance=instance, resources={
    "workspace": Workspace(project_dir=root, preset="tiny", lock_timeout_s=300), "dvc": DVCResource(remote_url=remote)})
steps = [e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.event_type_value in ("STEP_START", "STEP_SUCCESS")]
(raw,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["raw_videos"]]
json.dump({"success": result.success, "md5": raw.materialization.metadata["dvc_md5"].value,
           "first_step": steps[0].timestamp, "last_step": steps[-1].timestamp}, open(out, "w"))
"""


def _ingest(root, remote, **workspace):
    return materialize(
        [raw_videos],
        instance=DagsterInstance.ephemeral(),
        resources={"workspace": Workspace(project_dir=str(root), preset="tiny", **workspace), "dvc": DVCResource(remote_url=str(remote))},
    )


def test_a_run_fails_at_once_naming_the_run_that_holds_the_lock(project):
    root, remote = project
    with project_lock(root, "run-that-holds-it", timeout_s=0):
        with pytest.raises(DagsterResourceFunctionError) as raised:
            _ingest(root, remote)
    failure = raised.value.__cause__  # Dagster reports a resource that cannot start with this wrapper
    assert isinstance(failure, Failure) and not failure.allow_retries
    assert re.match(r"another run \(id run-that-holds-it, pid \d+ on .*\) holds the project lock", failure.description)
    assert not (root / "data").exists()
    assert _ingest(root, remote).success  # released with its block


def test_a_run_waits_for_the_lock_when_told_to(project):
    root, remote = project
    held = threading.Event()

    def hold_for_a_moment():
        with project_lock(root, "earlier-run", timeout_s=0):
            held.set()
            time.sleep(2)

    holder = threading.Thread(target=hold_for_a_moment)
    holder.start()
    held.wait()
    start = time.monotonic()
    assert _ingest(root, remote, lock_timeout_s=60).success
    assert time.monotonic() - start >= 1.5
    holder.join()


def test_two_concurrent_runs_take_turns_and_leave_one_consistent_version(project, tmp_path):
    root, remote = project
    outs = [tmp_path / f"run{i}.json" for i in range(2)]
    children = [
        subprocess.Popen([sys.executable, "-c", RUN_DATA_ASSETS, str(root), str(remote), str(out)], stderr=subprocess.PIPE, text=True)
        for out in outs
    ]  # fmt: skip
    for child in children:
        _, stderr = child.communicate(timeout=600)
        assert child.returncode == 0, stderr[-3000:]
    first, second = sorted((json.loads(out.read_text()) for out in outs), key=lambda r: r["first_step"])
    assert first["success"] and second["success"]
    assert first["last_step"] <= second["first_step"]  # one after the other, never interleaved
    # The same config twice is the same data: one version, which data.dvc, the remote and the shards agree on.
    assert first["md5"] == second["md5"] == yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]
    assert Repo(str(root)).status(cloud=True) == {}
    assert len(ClipShards(Path(root) / "artifacts" / "training_clips").index) == 34  # the tiny set, every bucket
