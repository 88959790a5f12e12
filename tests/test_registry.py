"""The tracking store's errors and artifact location, how asset runs end, and stale runs, on real SQLite stores
(champion/challenger policy: test_promotion.py)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from dagster import DagsterExecutionInterruptedError, DagsterInstance, DagsterRunStatus, RetryPolicy, asset, materialize
from mlflow import MlflowClient

from dagster_project.defs.resources import MLflowTracking, Workspace
from videodit.tracking.mlflow_store import (
    PARENT_RUN_TAG, TrackingStoreUnavailable, check_tracking_store, child_run_id, default_tracking_uri, ensure_experiment,
    parent_run_id,
)  # fmt: skip
from videodit.tracking.registry import fingerprint
from videodit.tracking.stale_runs import WORKER_TAG, end_stale_runs, worker_tag


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = default_tracking_uri(root)
    before = os.environ.get("MLFLOW_TRACKING_URI")  # what MLflow's process-wide URI was (it mirrors it there)
    mlflow.set_tracking_uri(uri)  # the SQLite registry looks a `models:/<id>` source up through the process-wide URI
    yield MlflowClient(uri, registry_uri=uri), root
    mlflow.set_tracking_uri(before)


def test_runs_nest_under_one_parent_per_dagster_run(client):
    client, root = client
    experiment = ensure_experiment(client, "nesting", default_tracking_uri(root))
    assert ensure_experiment(client, "nesting", default_tracking_uri(root)) == experiment
    assert client.get_experiment(experiment).artifact_location == (root / "mlartifacts" / "nesting").as_uri()
    parent = parent_run_id(client, experiment, "run-123", {"git_commit": "abc"})
    assert parent_run_id(client, experiment, "run-123", {}) == parent
    child = child_run_id(client, experiment, parent, "vae_model", {})
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert parent_run_id(client, experiment, "run-456", {}) != parent


def test_fingerprint_is_stable_and_order_free():
    assert fingerprint(a=1, b={"x": [1, 2]}) == fingerprint(b={"x": [1, 2]}, a=1)
    assert fingerprint(a=1) != fingerprint(a=2)


def test_a_server_that_is_down_is_named_in_the_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingStoreUnavailable, match=rf"http://127\.0\.0\.1:{port} is not reachable"):
        check_tracking_store(f"http://127.0.0.1:{port}")
    with pytest.raises(TrackingStoreUnavailable, match="does not exist"):
        check_tracking_store(f"sqlite:///{tmp_path}/missing/mlflow.db")
    check_tracking_store(default_tracking_uri(tmp_path))


@asset
def tracked(context, workspace: Workspace, mlflow_tracking: MLflowTracking) -> None:
    """One tracked run with one artifact: the project's name."""
    with mlflow_tracking.asset_run(context, workspace) as run:
        run.client.log_text(run.run_id, workspace.root.name, "project.txt")


def _resources(root, uri):
    return {"workspace": Workspace(project_dir=str(root), preset="tiny"), "mlflow_tracking": MLflowTracking(tracking_uri=uri)}


def _runs(uri):
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("videodit").experiment_id])


@asset
def fails(context, workspace: Workspace, mlflow_tracking: MLflowTracking) -> None:
    with mlflow_tracking.asset_run(context, workspace):
        raise RuntimeError("the asset failed")


@asset(retry_policy=RetryPolicy(max_retries=1))
def fails_once(context, workspace: Workspace, mlflow_tracking: MLflowTracking) -> None:
    with mlflow_tracking.asset_run(context, workspace):
        if context.retry_number == 0:
            raise RuntimeError("the first attempt failed")


def _interrupted_by(interrupt: type[BaseException]):
    @asset(name="interrupted")
    def interrupted(context, workspace: Workspace, mlflow_tracking: MLflowTracking) -> None:
        with mlflow_tracking.asset_run(context, workspace):
            raise interrupt()

    return interrupted


def _statuses(uri, dagster_run_id):
    """(the parent run's status, each child run's (asset, status) in start order) of one Dagster run."""
    runs = sorted(_runs(uri), key=lambda r: r.info.start_time)
    runs = [r for r in runs if r.data.tags[PARENT_RUN_TAG] == dagster_run_id]
    (parent,) = [r.info.status for r in runs if r.data.tags["videodit.role"] == "pipeline"]
    return parent, [(r.info.run_name, r.info.status) for r in runs if r.data.tags["videodit.role"] == "asset"]


def test_an_asset_that_raises_ends_its_run_and_the_parent_failed(tmp_path):
    uri = default_tracking_uri(tmp_path)
    result = materialize([tracked, fails], resources=_resources(tmp_path, uri), raise_on_error=False)
    parent, children = _statuses(uri, result.run_id)
    assert sorted(children) == [("fails", "FAILED"), ("tracked", "FINISHED")] and parent == "FAILED"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, DagsterExecutionInterruptedError])
def test_an_interrupted_asset_ends_its_run_and_the_parent_killed(tmp_path, interrupt):
    uri = default_tracking_uri(tmp_path)
    result = materialize([_interrupted_by(interrupt)], resources=_resources(tmp_path, uri), raise_on_error=False)
    assert _statuses(uri, result.run_id) == ("KILLED", [("interrupted", "KILLED")])


def test_an_asset_retried_into_success_ends_the_parent_finished(tmp_path):
    uri = default_tracking_uri(tmp_path)
    result = materialize([fails_once], resources=_resources(tmp_path, uri))
    assert _statuses(uri, result.run_id) == ("FINISHED", [("fails_once", "FAILED"), ("fails_once", "FINISHED")])


def test_projects_sharing_a_sqlite_store_keep_artifacts_beside_the_store(tmp_path):
    store = tmp_path / "shared"
    store.mkdir()
    uri = default_tracking_uri(store)
    for name in ("project1", "project2"):
        (tmp_path / name).mkdir()
        assert materialize([tracked], resources=_resources(tmp_path / name, uri)).success
    experiment = MlflowClient(uri).get_experiment_by_name("videodit")
    assert experiment.artifact_location == (store / "mlartifacts" / "videodit").as_uri()
    artifacts = {r.info.run_id: r.info.artifact_uri for r in _runs(uri) if r.data.tags["videodit.role"] == "asset"}
    assert len(artifacts) == 2
    for run_id, artifact_uri in artifacts.items():
        assert artifact_uri == f"{experiment.artifact_location}/{run_id}/artifacts"
    written = sorted(p.read_text() for p in (store / "mlartifacts").rglob("project.txt"))
    assert written == ["project1", "project2"]
    assert not (tmp_path / "project1" / "mlartifacts").exists() and not (tmp_path / "project2" / "mlartifacts").exists()


def test_only_runs_whose_worker_is_gone_or_whose_dagster_run_is_over_end_killed(client):
    client, root = client
    experiment = ensure_experiment(client, "stale", default_tracking_uri(root))
    sleeper = subprocess.Popen(["sleep", "60"])
    dead = worker_tag(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    alive = worker_tag()
    cases = {  # name: (Dagster run id, worker, status afterwards)
        "dead worker": ("run-a", dead, "KILLED"),
        "its pid now another process's": ("run-b", f"{alive.rpartition(':')[0]}:1.00", "KILLED"),
        "live worker": ("run-c", alive, "RUNNING"),
        "dead worker on another host": ("run-d", dead.replace(socket.gethostname(), "elsewhere"), "RUNNING"),
        "no worker recorded": ("run-e", None, "RUNNING"),
        "Dagster run over": ("run-over", alive, "KILLED"),
        "this Dagster run": ("run-now", dead, "RUNNING"),
    }
    runs = {
        name: client.create_run(experiment, tags={PARENT_RUN_TAG: run, **({WORKER_TAG: worker} if worker else {})}).info.run_id
        for name, (run, worker, _) in cases.items()
    }
    finished = client.create_run(experiment, tags={PARENT_RUN_TAG: "run-a", WORKER_TAG: dead}).info.run_id
    client.set_terminated(finished, "FINISHED")
    ended = end_stale_runs(client, experiment, "run-now", lambda run_id: run_id == "run-over")
    assert {r.info.run_id for r in ended} == {runs[name] for name, case in cases.items() if case[2] == "KILLED"}
    assert {name: client.get_run(run_id).info.status for name, run_id in runs.items()} == {n: c[2] for n, c in cases.items()}
    assert client.get_run(finished).info.status == "FINISHED"


HANGING_RUN = """
import time
from dagster import Definitions, asset, in_process_executor
from dagster_project.defs.resources import MLflowTracking, Workspace

@asset
def hangs(context, workspace: Workspace, mlflow_tracking: MLflowTracking) -> None:
    with mlflow_tracking.asset_run(context, workspace):
        (workspace.root / "tracking").touch()
        time.sleep(600)

defs = Definitions(assets=[hangs], resources={"workspace": Workspace(), "mlflow_tracking": MLflowTracking()},
                   executor=in_process_executor)
"""


def _kill_inside_its_asset(root, uri, home, script):
    """`dagster asset materialize` of an asset that hangs in its MLflow run, SIGKILLed there."""
    script.write_text(HANGING_RUN)
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIDEODIT_PROJECT_DIR": str(root), "MLFLOW_TRACKING_URI": uri}
    dagster = Path(sys.executable).parent / "dagster"
    log = script.with_suffix(".log")
    run = subprocess.Popen([dagster, "asset", "materialize", "-f", str(script), "--select", "hangs"], env=env,
                           stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while not (root / "tracking").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert (root / "tracking").exists(), f"the run to kill never opened its MLflow run: {log.read_text()[-2000:]}"
    return run.pid


def test_the_next_run_ends_what_a_killed_run_left_running(tmp_path):
    root, home = tmp_path / "project", tmp_path / "dagster_home"
    root.mkdir()
    home.mkdir()
    uri = default_tracking_uri(root)
    # A run worker SIGKILLed inside its asset: Dagster's run stays STARTED, its MLflow parent and child RUNNING.
    pid = _kill_inside_its_asset(root, uri, home, tmp_path / "hanging_run.py")
    instance = DagsterInstance.local_temp(str(home))
    (killed,) = instance.get_runs()
    assert killed.status == DagsterRunStatus.STARTED
    assert {r.info.status for r in _runs(uri)} == {"RUNNING"}
    done = materialize([tracked], resources=_resources(root, uri), instance=instance)
    statuses = {r.info.run_id: (r.data.tags[PARENT_RUN_TAG], r.info.status) for r in _runs(uri)}
    assert sorted(s for d, s in statuses.values() if d == killed.run_id) == ["KILLED", "KILLED"]  # parent and child
    assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
    warnings = [e.message for e in instance.all_logs(done.run_id) if e.message and "marked failed" in e.message]
    assert len(warnings) == 1 and f"Dagster run {killed.run_id} was left STARTED by its dead worker {socket.gethostname()}:{pid}:" in warnings[0]

    # A finished Dagster run whose MLflow run was left RUNNING, and a RUNNING run of a Dagster run this
    # instance does not know (another project's, perhaps alive): only the first is stale.
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("videodit").experiment_id
    left = client.create_run(experiment, tags={PARENT_RUN_TAG: done.run_id, WORKER_TAG: worker_tag()}).info.run_id
    unknown = client.create_run(experiment, tags={PARENT_RUN_TAG: "elsewhere", WORKER_TAG: worker_tag()}).info.run_id
    after = materialize([tracked], resources=_resources(root, uri), instance=instance)
    statuses = {r.info.run_id: (r.data.tags[PARENT_RUN_TAG], r.info.status) for r in _runs(uri)}
    assert statuses[left] == (done.run_id, "KILLED") and statuses[unknown] == ("elsewhere", "RUNNING")
    assert {s for d, s in statuses.values() if d in (done.run_id, after.run_id) and s != "KILLED"} == {"FINISHED"}
