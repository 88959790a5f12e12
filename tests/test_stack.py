"""The production stack (`infra/stack.py`, what `make up` starts) with the tiny graph run through it, on loopback.

One module-scoped stack: the machine's PostgreSQL (two databases of this test's own), SeaweedFS (S3), an MLflow server
(PostgreSQL backend, artifacts proxied into the S3 bucket), and Dagster (PostgreSQL instance from
infra/dagster/dagster.yaml, daemon with the queued run coordinator, webserver, code server), every port free and
chosen here. ONE run of `full_pipeline`, submitted through the webserver into the run queue, is what the other tests
read; the faults after it (a service stopped or killed, two runs at once) add three runs of `vae_model` alone.
Also holds what tests/test_mlflow_server.py asserted (every registration through a server): that server is
this stack's.
"""

import hashlib
import importlib.util
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import psycopg2
import pytest
import torch
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster_graphql import DagsterGraphQLClientError
from mlflow import MlflowClient

from videodit.tracking.registry import CHALLENGER, CHAMPION, missing_model_files

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("videodit_stack", REPO / "infra" / "stack.py")
stack_module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = stack_module  # dataclasses look their module up there
spec.loader.exec_module(stack_module)

MODELS = ("videodit-vae", "videodit-dit", "videodit-onnx")
# Versions each model registers in one graph run: videodit-onnx has the fp32 bundle (v1) and its int8 copy (v2).
VERSIONS = {"videodit-vae": 1, "videodit-dit": 1, "videodit-onnx": 2}
# What is under test is the stack's traffic, not the models' quality: the fewest steps that train and evaluate.
FEWEST_STEPS = {"ops": {
    "vae_model": {"config": {"vae_train": {"max_steps": 4}}},
    "dit_model": {"config": {"dit_train": {"max_steps": 4}}},
    "model_evaluation": {"config": {"evaluation": {"n_prompts": 4}, "sampler": {"steps": 2}}},
}}  # fmt: skip
RUN_TIMEOUT_S = 400


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int, grpc_offset: int) -> list[int]:
    """n consecutive free loopback ports whose +grpc_offset twins (SeaweedFS's gRPC listeners) are free too."""
    for _ in range(200):
        base = random.randrange(12000, 30000)
        ports = list(range(base, base + n))
        if all(_bindable(p) and _bindable(p + grpc_offset) for p in ports):
            return ports
    raise RuntimeError("no free loopback ports")


def _stack_cli(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "infra" / "stack.py"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _drop_databases(*names: str) -> None:
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def _query(db: str, sql: str, *params):
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`infra/stack.py up` on free loopback ports with this module's own databases; `down` (by its PIDs) after."""
    root = tmp_path_factory.mktemp("stack")
    project = root / "project"
    project.mkdir()
    s3, master, volume, filer, admin, mlflow_port, web, code = _free_ports(8, 10000)
    suffix = uuid.uuid4().hex[:8]
    variables = {
        "VIDEODIT_STACK_DIR": str(root / "stack"), "VIDEODIT_PROJECT_DIR": str(project), "VIDEODIT_PRESET": "tiny",
        "VIDEODIT_DAGSTER_DB": f"videodit_test_dagster_{suffix}", "VIDEODIT_MLFLOW_DB": f"videodit_test_mlflow_{suffix}",
        "VIDEODIT_S3_BUCKET": "videodit-test", "AWS_ACCESS_KEY_ID": "videodit-test",
        "AWS_SECRET_ACCESS_KEY": f"secret-{suffix}", "VIDEODIT_S3_PORT": str(s3), "VIDEODIT_WEED_MASTER_PORT": str(master),
        "VIDEODIT_WEED_VOLUME_PORT": str(volume), "VIDEODIT_WEED_FILER_PORT": str(filer),
        "VIDEODIT_WEED_ADMIN_PORT": str(admin), "VIDEODIT_WEED_GRPC_OFFSET": "10000",
        "VIDEODIT_MLFLOW_PORT": str(mlflow_port), "VIDEODIT_MLFLOW_WORKERS": "1", "VIDEODIT_DAGSTER_PORT": str(web),
        "VIDEODIT_CODE_SERVER_PORT": str(code), "VIDEODIT_S3_ENDPOINT": "", "PGHOST": "127.0.0.1", "PGPORT": "5432",
        "PGUSER": "postgres",
        "VIDEODIT_STACK_STOP_TIMEOUT_S": "3",  # `weed mini` ignores SIGTERM: `down` waits this long, then kills
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DAGSTER_", "AWS_"))}
    env.update(variables)
    settings = stack_module.Settings.from_env(env)
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "VIDEODIT_DAGSTER_PG_URL")}
    try:
        started = time.monotonic()
        up = _stack_cli(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        print(f"stack up in {time.monotonic() - started:.1f}s:\n{up.stdout}")
        # This process opens the same instance as the daemon: DAGSTER_HOME and the PostgreSQL URL its yaml reads.
        os.environ.update(DAGSTER_HOME=str(settings.dagster_home), VIDEODIT_DAGSTER_PG_URL=settings.client_env()["VIDEODIT_DAGSTER_PG_URL"])
        instance = DagsterInstance.from_config(str(settings.dagster_home))
        yield settings, env, instance
        instance.dispose()
    finally:
        down = _stack_cli(env, "down")
        print(down.stdout, down.stderr)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        _drop_databases(settings.dagster_db, settings.mlflow_db)


@pytest.fixture(scope="module")
def pipeline(stack):
    """ONE run of the whole tiny graph, submitted through the webserver's GraphQL API into the daemon's run queue."""
    settings, _, instance = stack
    started = time.monotonic()
    run_id = stack_module.submit(settings, "full_pipeline", FEWEST_STEPS)
    state = stack_module.wait_for_run(settings, run_id, RUN_TIMEOUT_S)
    print(f"full_pipeline through the stack: {state} in {time.monotonic() - started:.1f}s")
    if state != "SUCCESS":
        failures = [e.message for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.is_failure]
        pytest.fail(f"run {run_id} ended {state}: {failures[-3:]}")
    # The registry URI too: left out, MLflow takes the process-wide one, which an earlier test may have pointed elsewhere.
    return run_id, MlflowClient(settings.mlflow_uri, registry_uri=settings.mlflow_uri), Path(settings.project_dir)


def _stop(settings, instance, run_id: str) -> str:
    """Terminate a run and return its final status. Dagster refuses while the run is STARTING (and the daemon's view
    of that can lag the instance's), so a refusal is retried until it goes through or the run is over."""
    deadline = time.monotonic() + 120
    while not instance.get_run_by_id(run_id).is_finished:
        try:
            stack_module.terminate(settings, run_id)
            break
        except DagsterGraphQLClientError as refused:
            assert "STARTING" in str(refused) and time.monotonic() < deadline, refused
            time.sleep(1)
    return stack_module.wait_for_run(settings, run_id, 120)


def _s3_keys(settings, prefix: str) -> list[str]:
    client = stack_module._s3_client(settings)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_the_run_went_through_the_queue_and_the_daemon_into_postgres(stack, pipeline):
    settings, _, instance = stack
    run_id, _, _ = pipeline
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(instance.run_storage, PostgresRunStorage) and isinstance(instance.event_log_storage, PostgresEventLogStorage)
    run = instance.get_run_by_id(run_id)
    assert run.status == DagsterRunStatus.SUCCESS and run.tags["videodit/gpu"] == "1"  # the run queue's GPU limit applies
    events = instance.all_logs(run_id)
    kinds = [e.dagster_event_type for e in events if e.dagster_event]
    # Enqueued by the webserver, then launched by the daemon's QueuedRunCoordinatorDaemon (its log says so).
    order = [DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS]
    assert [k for k in kinds if k in order] == order
    assert re.search(r"QueuedRunCoordinatorDaemon - \S*INFO\S* - Launched 1 runs", (settings.root / "logs" / "daemon.log").read_text())
    assert DagsterEventType.STEP_UP_FOR_RETRY not in kinds  # first try
    checks = [e.dagster_event.event_specific_data for e in events if e.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION]
    assert checks and all(c.passed for c in checks)
    # The events are rows in this stack's PostgreSQL database, not in a SQLite file.
    ((rows,),) = _query(settings.dagster_db, "SELECT count(*) FROM event_logs WHERE run_id = %s", run_id)
    assert rows == len(events)
    assert _query(settings.dagster_db, "SELECT status FROM runs WHERE run_id = %s", run_id) == [("SUCCESS",)]
    assert not list(settings.dagster_home.glob("**/*.db"))


def test_the_mlflow_server_runs_without_mlflow_s_job_runner(stack):
    """MLflow 3's server would start a job runner and its Huey consumers (8 more processes, ~1.9 GB) for GenAI jobs
    that nothing here submits; infra/stack.py turns it off."""
    settings, _, _ = stack
    server = psutil.Process(stack_module._started_pid(settings, "mlflow"))
    commands = [" ".join(child.cmdline()) for child in server.children(recursive=True)]
    assert commands and not [c for c in commands if "mlflow.server.jobs" in c], commands


def test_every_model_registers_through_the_server_with_its_aliases(pipeline):
    _, client, _ = pipeline
    for name in MODELS:
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == VERSIONS[name]
        assert all(v.status == "READY" and v.source.startswith("models:/m-") for v in versions)
    for name in ("videodit-vae", "videodit-dit"):
        assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"
    dit = client.get_model_version_by_alias("videodit-dit", CHALLENGER)
    assert "eval.overall" in dit.tags and dit.tags["promotion.promoted"] == "True"
    onnx = client.get_model_version_by_alias("videodit-onnx", CHAMPION)  # the version served_bundle chose
    assert onnx.tags["dit_version"] == dit.version and onnx.tags["serving.served_version"] == str(onnx.version)


def test_runs_finish_and_no_logged_model_is_left_unregistered(stack, pipeline):
    settings, _, _ = stack
    run_id, client, root = pipeline
    experiment = client.get_experiment_by_name("videodit")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags["dagster.run_id"] for r in runs} == {run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    children = {r.data.tags["dagster.asset_key"] for r in runs if r.data.tags["videodit.role"] == "asset"}
    assert children == {"vae_model", "dit_model", "model_evaluation", "onnx_models", "served_bundle", "generated_videos",
                        "conditioned_videos"}  # fmt: skip
    logged = {m.model_id for m in client.search_logged_models(experiment_ids=[experiment.experiment_id])}
    registered = {v.source.removeprefix("models:/") for name in MODELS for v in client.search_model_versions(f"name = '{name}'")}
    assert logged == registered and len(logged) == sum(VERSIONS.values())
    # Artifacts went through the server into the S3 bucket, none into the project.
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert [k for k in _s3_keys(settings, "mlartifacts/") if k.endswith("/MLmodel")] and not (root / "mlartifacts").exists()
    # Runs and registry are rows in the MLflow server's PostgreSQL database.
    assert {name for (name,) in _query(settings.mlflow_db, "SELECT name FROM registered_models")} == set(MODELS)
    assert {rid for (rid,) in _query(settings.mlflow_db, "SELECT run_uuid FROM runs")} == {r.info.run_id for r in runs}


def test_dvc_pushed_to_s3_and_pulled_back_into_a_fresh_checkout(stack, pipeline, tmp_path):
    settings, env, _ = stack
    _, _, root = pipeline
    assert _s3_keys(settings, "dvc/files/md5/")  # DVC 3's remote layout
    fresh = tmp_path / "checkout"
    fresh.mkdir()
    (fresh / "data.dvc").write_bytes((root / "data.dvc").read_bytes())
    client_env = {**env, **settings.client_env()}
    dvc = [sys.executable, "-m", "dvc"]
    for args in (["init", "--no-scm", "-q"], ["remote", "add", "-d", "stack", f"s3://{settings.s3_bucket}/dvc"], ["pull", "-q"]):
        out = subprocess.run(dvc + args, cwd=fresh, env=client_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr

    def digests(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}

    pulled = digests(fresh / "data")
    assert pulled and pulled == digests(root / "data")


def test_the_champion_loads_through_the_server_and_predicts(stack, pipeline):
    settings, _, _ = stack
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    model = mlflow.pyfunc.load_model("models:/videodit-onnx@champion")
    videos = np.asarray(model.predict(pd.DataFrame({"prompt": ["a red circle moves left"]}), params={"steps": 2}))
    assert videos.ndim == 5 and videos.shape[0] == 1 and videos.shape[-1] == 3 and videos.dtype == np.uint8


def test_wrong_s3_credentials_fail_with_a_sentence_naming_the_bucket(stack, pipeline):
    settings, env, _ = stack
    wrong = replace(settings, secret_key="not-the-secret")
    with pytest.raises(SystemExit, match=f"s3://{settings.s3_bucket} at {settings.endpoint}"):
        stack_module.check_bucket(wrong)
    # DVC, as the raw_videos step calls it: a DataVersioningError naming the remote (and so the bucket).
    script = (
        "import shutil, sys\n"
        "from videodit.data.versioning import DataVersioningError, version_data\n"
        "try:\n"
        "    version_data(sys.argv[1], 'data', sys.argv[2])\n"
        "except DataVersioningError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    copy = Path(settings.stack_dir) / "wrong-credentials"
    (copy / "data").mkdir(parents=True)
    (copy / "data" / "clip.txt").write_text("one more file: a new data version to push")
    client_env = {**env, **settings.client_env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    out = subprocess.run([sys.executable, "-c", script, str(copy), f"s3://{settings.s3_bucket}/dvc"], env=client_env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"to remote s3://{settings.s3_bucket}/dvc" in out.stdout and "Traceback" not in out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------------- faults
# Each run below trains only `vae_model` (the smallest selection of a job that carries the GPU tag). A run worker costs
# ~15 s to start here, so the faults share runs: the run queued while the daemon is down is the one the MLflow kill
# fails; its re-execution and a second run are submitted at once; the schedule's and the sensor's runs are queued
# behind those two and cancelled there.

LAUNCH = """mutation Launch($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
REEXECUTE = """mutation Reexecute($p: ReexecutionParams!) { launchRunReexecution(reexecutionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


def _launched(answer: dict) -> str:
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def _submit_vae(settings, vae_model_config: dict) -> str:
    """training_job cut down to vae_model, into the run queue through the webserver; it keeps the job's GPU tag."""
    selector = {"repositoryLocationName": stack_module.LOCATION, "repositoryName": "__repository__", "jobName": "training_job",
                "assetSelection": [{"path": ["vae_model"]}]}  # fmt: skip
    params = {"selector": selector, "runConfigData": {"ops": {"vae_model": {"config": vae_model_config}}}}
    return _launched(stack_module.graphql(settings, LAUNCH, {"p": params})["launchRun"])


def _vae_versions(client) -> dict[str, object]:
    return {v.version: v for v in client.search_model_versions("name = 'videodit-vae'")}


def _wait_for_message(instance, run_id: str, text: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in (e.user_message or "") for e in instance.all_logs(run_id)):
        assert time.monotonic() < deadline, f"run {run_id} logged no {text!r} within {timeout_s}s"
        time.sleep(0.3)


def _event_times(instance, run_id: str) -> tuple[float, float]:
    """When the daemon launched the run (RUN_STARTING) and when it ended."""
    events = [e for e in instance.all_logs(run_id) if e.dagster_event]
    starting = next(e.timestamp for e in events if e.dagster_event_type == DagsterEventType.RUN_STARTING)
    return starting, max(e.timestamp for e in events if e.dagster_event_type in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE))


@pytest.fixture(scope="module")
def queued_while_the_daemon_was_down(stack, pipeline):
    """A vae_model run with a config of its own (a new fingerprint: it trains and registers) submitted while the
    daemon is stopped; returned once the restarted daemon has launched it, with its status while the daemon was down
    and the VAE versions before it."""
    settings, env, instance = stack
    _, client, _ = pipeline
    versions = _vae_versions(client)
    assert _stack_cli(env, "down", "daemon").returncode == 0
    # Long enough (a few seconds of tiny steps) that the server killed once the step opened its MLflow run is killed
    # before the step is done with it: at 12 steps a busy machine saw the step finish and register first.
    run_id = _submit_vae(settings, {"vae_train": {"max_steps": 150}})
    time.sleep(5)  # > 2 dequeue intervals: nothing may launch it
    while_down = instance.get_run_by_id(run_id).status
    up = _stack_cli(env, "up", "daemon")
    assert up.returncode == 0, up.stdout + up.stderr
    deadline = time.monotonic() + 120
    while instance.get_run_by_id(run_id).status == DagsterRunStatus.QUEUED and time.monotonic() < deadline:
        time.sleep(1)
    return run_id, while_down, versions


def test_a_run_queued_while_the_daemon_is_down_is_launched_after_it_restarts(stack, queued_while_the_daemon_was_down):
    _, env, instance = stack
    run_id, while_down, _ = queued_while_the_daemon_was_down
    assert while_down == DagsterRunStatus.QUEUED
    kinds = [e.dagster_event_type for e in instance.all_logs(run_id) if e.dagster_event]
    assert DagsterEventType.RUN_ENQUEUED in kinds and DagsterEventType.RUN_STARTING in kinds  # launched by the new daemon
    status = _stack_cli(env, "status")
    assert status.returncode == 0 and status.stdout.count("healthy") == 5, status.stdout


@pytest.fixture(scope="module")
def killed_run(stack, queued_while_the_daemon_was_down):
    """That run's MLflow server killed (SIGKILL) as soon as its step has opened its MLflow run; the server started
    again once the run failed."""
    settings, env, instance = stack
    run_id, _, versions = queued_while_the_daemon_was_down
    _wait_for_message(instance, run_id, f"at {settings.mlflow_uri}")  # "MLflow run … (parent …) at <uri>"
    stack_module.stop(settings, ["mlflow"], timeout_s=0)
    state = stack_module.wait_for_run(settings, run_id, RUN_TIMEOUT_S)
    up = _stack_cli(env, "up", "mlflow")
    assert up.returncode == 0, up.stdout + up.stderr
    return run_id, state, versions


def test_a_killed_mlflow_server_fails_the_step_naming_its_uri(stack, killed_run):
    settings, _, instance = stack
    run_id, state, _ = killed_run
    assert state == "FAILURE"
    (failure,) = [e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event_type == DagsterEventType.STEP_FAILURE]
    message = failure.event_specific_data.error.message.strip()
    assert failure.step_key == "vae_model" and settings.mlflow_uri in message and "\n" not in message, message


def test_the_object_store_restarts_without_losing_anything(stack, pipeline):
    """SeaweedFS killed and started again on its folder: every object written before (DVC's, MLflow's) is still
    listed and reads back whole, and the MLflow server writes and reads artifacts through it again. (The runs below
    write their models through it too.)"""
    settings, env, _ = stack
    _, client, _ = pipeline
    s3 = stack_module._s3_client(settings)

    def listing() -> dict[str, tuple[str, int]]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket)
        return {o["Key"]: (o["ETag"].strip('"'), o["Size"]) for page in pages for o in page.get("Contents", [])}

    before = listing()
    assert any(k.startswith("dvc/") for k in before) and any(k.startswith("mlartifacts/") for k in before)
    # weed mini's own shutdown stalls once its S3 gateway has stopped: killed after 2 s, the harsher fault anyway.
    stack_module.stop(settings, ["seaweedfs"], timeout_s=2)
    up = _stack_cli(env, "up", "seaweedfs")
    assert up.returncode == 0, up.stdout + up.stderr
    assert listing() == before
    for key, (etag, size) in before.items():
        body = s3.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()
        assert len(body) == size and ("-" in etag or hashlib.md5(body).hexdigest() == etag), key  # multipart ETags are no MD5
    run = client.create_run(client.create_experiment("object-store-restart"))
    client.log_text(run.info.run_id, "written after the restart", "note.txt")
    downloaded = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="note.txt", tracking_uri=settings.mlflow_uri)
    assert Path(downloaded).read_text() == "written after the restart"
    client.set_terminated(run.info.run_id)


@pytest.fixture(scope="module")
def two_runs(stack, killed_run):
    """Two GPU-tagged runs submitted at once, the server back: the killed run re-executed from its failure, and a run
    forcing a new VAE version. Returned while they are queued or running."""
    settings, _, _ = stack
    killed, _, _ = killed_run
    params = {"parentRunId": killed, "strategy": "FROM_FAILURE"}
    rerun = _launched(stack_module.graphql(settings, REEXECUTE, {"p": params})["launchRunReexecution"])
    forced = _submit_vae(settings, {"vae_train": {"max_steps": 4}, "force_new_version": True})
    return rerun, forced


def test_the_daemons_schedule_tick_queues_a_training_run(stack, two_runs):
    """`weekly_retraining` (Mondays 03:00) started and evaluated by the scheduler daemon's own code with its clock set
    to the next tick: the tick creates one training_job run, held in the queue behind the two GPU runs."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._daemon.daemon import get_default_daemon_logger
    from dagster._scheduler.scheduler import launch_scheduled_runs

    settings, _, instance = stack
    target = WorkspaceFileTarget(paths=[str(settings.dagster_home / "workspace.yaml")])
    with WorkspaceProcessContext(instance, target) as workspace:
        location = workspace.create_request_context().get_code_location(stack_module.LOCATION)
        schedule = location.get_repository("__repository__").get_schedule("weekly_retraining")
        instance.start_schedule(schedule)
        try:
            tick_time = next(schedule.execution_time_iterator(time.time()))
            clock = tick_time.astimezone(timezone.utc) + timedelta(seconds=1)
            list(launch_scheduled_runs(workspace, get_default_daemon_logger("SchedulerDaemon"), clock, iteration_times={}))
            (tick,) = instance.get_ticks(schedule.get_remote_origin_id(), schedule.selector_id)
        finally:
            instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)
    assert tick.status.value == "SUCCESS" and tick.timestamp == tick_time.timestamp() and len(tick.run_ids) == 1, tick
    run = instance.get_run_by_id(tick.run_ids[0])
    assert _stop(settings, instance, run.run_id) == "CANCELED"  # cancelled in the queue: it never trains
    assert run.job_name == "training_job" and run.tags["dagster/schedule_name"] == "weekly_retraining"
    assert run.tags["videodit/gpu"] == "1" and run.status == DagsterRunStatus.QUEUED  # a GPU run is ahead of it
    assert datetime.fromisoformat(run.tags[".dagster/scheduled_execution_time"]) == tick_time


SENSOR = "retrain_on_new_data"
SENSOR_TICKS = """query Ticks($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename ... on Sensor { sensorState { status ticks(limit: 10) { timestamp status runIds skipReason } } } } }"""


def _sensor_ticks(settings) -> list[dict]:
    data = stack_module.graphql(settings, SENSOR_TICKS, {"selector": stack_module.sensor_selector(SENSOR)})
    return data["sensorOrError"]["sensorState"]["ticks"]


def _next_finished_tick(settings, after: float, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [t for t in _sensor_ticks(settings) if t["timestamp"] > after and t["status"] != "STARTED"]
        if done:
            return min(done, key=lambda t: t["timestamp"])
        time.sleep(2)
    raise TimeoutError(f"the daemon evaluated no tick of {SENSOR} within {timeout_s}s")


def test_the_daemon_runs_the_sensor_once_per_data_version(stack, two_runs):
    """A new data version of raw_videos starts exactly one retraining run; the same version again starts none.
    The versions are reported as runless materializations (what the sensor reads), so no second ingestion is needed;
    the run waits in the queue behind the two GPU runs, and is cancelled there."""
    from dagster import AssetMaterialization
    from dagster._core.storage.dagster_run import RunsFilter

    settings, _, instance = stack
    version = f"test-version-{uuid.uuid4().hex[:8]}"
    instance.report_runless_asset_event(AssetMaterialization("raw_videos", tags={"dagster/data_version": version}))
    started = time.time()
    mutation = "mutation Start($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename } }"
    assert stack_module.graphql(settings, mutation, {"s": stack_module.sensor_selector(SENSOR)})["startSensor"]["__typename"] == "Sensor"
    first = _next_finished_tick(settings, started - 1)
    assert first["status"] == "SUCCESS" and len(first["runIds"]) == 1, first
    (run,) = instance.get_runs(RunsFilter(tags={"dagster/sensor_name": SENSOR}))
    assert run.run_id == first["runIds"][0] and run.job_name == "retraining_job"
    assert run.tags["dagster/run_key"] == version and run.tags["videodit/gpu"] == "1"
    _stop(settings, instance, run.run_id)  # what it would train is not under test here
    # The same version again: the sensor asks, the run key is taken, no run.
    instance.report_runless_asset_event(AssetMaterialization("raw_videos", tags={"dagster/data_version": version}))
    again = _next_finished_tick(settings, first["timestamp"])
    assert not again["runIds"], again
    assert len(instance.get_runs(RunsFilter(tags={"dagster/sensor_name": SENSOR}))) == 1


def test_two_gpu_runs_at_once_take_turns_and_register_apart(stack, pipeline, killed_run, two_runs):
    """The GPU limit held (one run launched only after the other ended), each registered its own version with its own
    artifacts, both load and reconstruct; and the re-executed run registered its model exactly once."""
    settings, _, instance = stack
    _, client, _ = pipeline
    _, _, versions_before = killed_run
    for run_id in two_runs:
        assert stack_module.wait_for_run(settings, run_id, RUN_TIMEOUT_S) == "SUCCESS", run_id
    first, second = sorted(_event_times(instance, run_id) for run_id in two_runs)
    assert first[1] <= second[0], (first, second)  # the second was launched after the first had ended
    new = {v: mv for v, mv in _vae_versions(client).items() if v not in versions_before}
    assert len(new) == 2 and len({mv.source for mv in new.values()}) == 2 and len({mv.run_id for mv in new.values()}) == 2
    # The killed run stopped before registering, or after: either way its re-execution left one version of its model.
    rerun, forced = (
        next(e.asset_materialization.metadata for e in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION))
        for run_id in two_runs
    )
    assert [mv.tags["videodit.fingerprint"] for mv in _vae_versions(client).values()].count(rerun["fingerprint"].value) == 1
    # Each trained in a folder of its own (the forced version's is keyed by its run): neither overwrote the other's.
    checkpoints = {Path(m["checkpoint"].path) for m in (rerun, forced)}
    assert len(checkpoints) == 2 and all(c.is_file() for c in checkpoints)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    video = np.zeros((1, 5, 32, 32, 3), dtype=np.uint8)
    for version in new:
        assert not missing_model_files("videodit-vae", version)
        reconstructed = mlflow.pytorch.load_model(f"models:/videodit-vae/{version}")(torch.from_numpy(video))
        assert tuple(reconstructed.shape) == video.shape
