"""Resources injected into the assets: where the project lives, DVC and MLflow."""


import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
import yaml
from dagster import (
    AssetExecutionContext, ConfigurableResource, DagsterEventType, DagsterExecutionInterruptedError, DagsterInstance,
    DagsterRunStatus, Definitions, Failure, InitResourceContext, definitions, in_process_executor,
)  # fmt: skip
from mlflow import MlflowClient

from dagster_project.deployment import executor_from_env
from dagster_project.project_lock import ProjectLockHeld, project_lock
from videodit.data.versioning import DataSnapshot, version_data
from videodit.config import ProjectConfig, load_preset
from videodit.tracking.mlflow_store import (
    ASSET_TAG,
    EXPERIMENT_NAME,
    PARENT_RUN_TAG,
    TrackingStoreUnavailable,
    check_tracking_store,
    child_run_id,
    default_tracking_uri,
    ensure_experiment,
    git_commit,
    parent_run_id,
)
from videodit.tracking.stale_runs import WORKER_TAG, end_stale_runs, worker_is_gone, worker_pid, worker_tag

DEFAULT_DVC_REMOTE = "~/.cache/videodit/dvc-remote"


class Workspace(ConfigurableResource):
    """The project folder every asset reads and writes, and the preset that sizes the whole graph.

    A run holds the project's lock (`project_lock.py`) from its first step to its end, so two runs never
    write one project at once: the second waits up to `lock_timeout_s`, then fails naming the holder.
    """

    project_dir: str = os.environ.get("VIDEODIT_PROJECT_DIR", os.getcwd())
    preset: str = os.environ.get("VIDEODIT_PRESET", "demo")
    lock_timeout_s: float = float(os.environ.get("VIDEODIT_LOCK_TIMEOUT_S", "0"))

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator["Workspace"]:
        try:
            with project_lock(self.root, context.run_id or "none", self.lock_timeout_s):
                yield self
        except ProjectLockHeld as exc:
            raise Failure(description=str(exc), metadata={"project": str(self.root)}, allow_retries=False) from None

    @property
    def root(self) -> Path:
        return Path(self.project_dir).expanduser().resolve()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def gx_root(self) -> Path:
        return self.root / "great_expectations"

    def artifacts(self, asset_name: str) -> Path:
        path = self.root / "artifacts" / asset_name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def config(self, overrides: dict | None = None) -> ProjectConfig:
        """The preset with an asset's launchpad `overrides` ({section: {field: value}}) applied and checked as a whole:
        a wrong value or combination fails the run here, naming the fields, before anything is read or trained."""
        try:
            return load_preset(self.preset).with_overrides(overrides or {})
        except (TypeError, ValueError) as exc:
            raise Failure(description=f"{exc}", metadata={"preset": self.preset, "overrides": overrides or {}}, allow_retries=False) from None


class DVCResource(ConfigurableResource):
    """Versions `data/` with DVC and pushes it to `remote_url` (a folder, or s3://, gs://, ... URL)."""

    remote_url: str = os.environ.get("VIDEODIT_DVC_REMOTE", DEFAULT_DVC_REMOTE)

    def version(self, project_dir: Path, data_rel: str = "data") -> DataSnapshot:
        remote = self.remote_url if "://" in self.remote_url else str(Path(self.remote_url).expanduser())
        return version_data(project_dir, data_rel, remote)


class TrackedRun:
    """One MLflow child run for one asset materialization, plus the client and URI to use with it."""

    def __init__(self, client: MlflowClient, run_id: str, tracking_uri: str, tags: dict[str, str]):
        self.client, self.run_id, self.tracking_uri, self.tags = client, run_id, tracking_uri, tags

    def log_params(self, params: dict) -> None:
        flat = pd.json_normalize(params, sep=".").iloc[0].to_dict() if params else {}
        for key, value in flat.items():
            self.client.log_param(self.run_id, key, str(value)[:6000])


def _run_worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid Dagster logged for the process executing the run's steps (its first engine event naming one)."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        pid = entry.dagster_event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def _fail_if_worker_is_gone(instance: DagsterInstance, run_id: str, worker: str | None, by_run_id: str) -> bool:
    """Mark a STARTED Dagster run failed when its run worker is `worker` and that process is gone (no daemon noticed)."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.status != DagsterRunStatus.STARTED or not worker_is_gone(worker):
        return False
    if _run_worker_pid(instance, run_id) != worker_pid(worker):  # only a step process died, not the run worker
        return False
    instance.report_run_failed(run, f"run worker {worker} is gone (killed?); marked failed by run {by_run_id}")
    return True


def _end_stale_runs(context: AssetExecutionContext, client: MlflowClient, experiment: str) -> None:
    """What killed runs left behind: their MLflow runs end KILLED, a Dagster run still STARTED ends failed."""
    instance = context.instance

    def dagster_run_is_over(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.is_finished

    ended = end_stale_runs(client, experiment, context.run_id, dagster_run_is_over)
    for run in ended:
        context.log.warning(f"MLflow run {run.info.run_id} of Dagster run {run.data.tags[PARENT_RUN_TAG]} was left RUNNING: ended KILLED")
    for run_id, worker in {(r.data.tags[PARENT_RUN_TAG], r.data.tags.get(WORKER_TAG)) for r in ended}:
        if _fail_if_worker_is_gone(instance, run_id, worker, context.run_id):
            context.log.warning(f"Dagster run {run_id} was left STARTED by its dead worker {worker}: marked failed")


INTERRUPTS = (KeyboardInterrupt, DagsterExecutionInterruptedError)  # a run terminated from the UI, Ctrl-C
# How a parent run ends from its children's endings: the worst of them, a kill worst of all.
ENDED_STATUSES = ("FINISHED", "FAILED", "KILLED")


def _ended_status(error: BaseException) -> str:
    return "KILLED" if isinstance(error, INTERRUPTS) else "FAILED"


def _parent_status(client: MlflowClient, experiment: str, parent: str) -> str:
    """The worst ending among the last child run of each asset under `parent` (an asset retried into success counts
    as a success); children still running do not count yet."""
    children = client.search_runs(
        [experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", order_by=["attributes.start_time ASC"]
    )
    last = {child.data.tags.get(ASSET_TAG): child.info.status for child in children}
    return max((s for s in last.values() if s in ENDED_STATUSES), key=ENDED_STATUSES.index, default="FINISHED")


class MLflowTracking(ConfigurableResource):
    """MLflow tracking and registry: `sqlite:///<project>/mlflow.db` by default, any server by URI."""

    tracking_uri: str = os.environ.get("MLFLOW_TRACKING_URI", "")
    experiment_name: str = EXPERIMENT_NAME

    def uri(self, workspace: Workspace) -> str:
        return self.tracking_uri or default_tracking_uri(workspace.root)

    def client(self, workspace: Workspace) -> MlflowClient:
        uri = self.uri(workspace)
        try:
            check_tracking_store(uri)
        except TrackingStoreUnavailable as exc:  # a wrong or dead URI: say so now rather than retry into it
            raise Failure(description=str(exc), allow_retries=False) from exc
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        return MlflowClient(uri, registry_uri=uri)

    @contextmanager
    def asset_run(self, context: AssetExecutionContext, workspace: Workspace) -> Iterator[TrackedRun]:
        """A child run under this Dagster run's parent run, tagged with run id, asset, data version and commit.

        The child ends FINISHED, FAILED when the asset raised, KILLED when it was interrupted; the parent ends as
        the worst of its assets' last children (`_parent_status`)."""
        uri = self.uri(workspace)
        client = self.client(workspace)
        experiment = ensure_experiment(client, self.experiment_name, uri)
        _end_stale_runs(context, client, experiment)
        dvc_file = workspace.root / "data.dvc"
        tags = {
            PARENT_RUN_TAG: context.run_id,
            WORKER_TAG: worker_tag(),
            "dvc.data_version": yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"] if dvc_file.is_file() else "none",
            "git.commit": git_commit(workspace.root),
            "videodit.preset": workspace.preset,
        }
        parent = parent_run_id(client, experiment, context.run_id, tags)
        asset = context.asset_key.to_user_string()
        run_id = child_run_id(client, experiment, parent, asset, tags)
        context.log.info(f"MLflow run {run_id} (parent {parent}) at {uri}")
        mlflow.start_run(run_id=run_id, log_system_metrics=True)  # system metrics (CPU, memory, GPU) are sampled meanwhile
        status = "FINISHED"
        try:
            yield TrackedRun(client, run_id, uri, tags)
        except BaseException as error:
            status = _ended_status(error)
            raise
        finally:
            mlflow.end_run(status)
            client.set_terminated(parent, _parent_status(client, experiment, parent))


@definitions
def resources() -> Definitions:
    return Definitions(
        resources={"workspace": Workspace(), "dvc": DVCResource(), "mlflow_tracking": MLflowTracking()},
        # One machine by default: steps share one process instead of re-importing torch, GX and DVC each.
        # VIDEODIT_EXECUTOR=multiprocess or k8s (dagster_k8s.k8s_job_executor) scales out: dagster_project/deployment.py.
        executor=executor_from_env(),
    )
