"""The tracking store: an embedded SQLite file by default, any MLflow server by URI.

Every Dagster run gets one parent MLflow run; each asset materialization inside it gets a nested
child run, so the MLflow UI groups a pipeline run the way the Dagster UI does. A SQLite store keeps its
artifacts beside itself (`<store folder>/mlartifacts/`), so every project that shares the store shares them;
a server keeps them where it was told to (`--artifacts-destination`).
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from mlflow import MlflowClient

EXPERIMENT_NAME = "videodit"
PARENT_RUN_TAG = "dagster.run_id"
ASSET_TAG = "dagster.asset_key"
ROLE_TAG = "videodit.role"
HEALTH_TIMEOUT_S = 3.0
ARTIFACTS_DIR = "mlartifacts"
SQLITE_PREFIX = "sqlite:///"


class TrackingStoreUnavailable(Exception):
    """The tracking store named by a URI cannot be reached; the message names the URI."""


def default_tracking_uri(project_dir: Path) -> str:
    return f"{SQLITE_PREFIX}{Path(project_dir).resolve() / 'mlflow.db'}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI; None for any other store."""
    return Path(uri.removeprefix(SQLITE_PREFIX)).resolve() if uri.startswith(SQLITE_PREFIX) else None


def check_tracking_store(uri: str) -> None:
    """Fail fast with a readable error instead of MLflow's retries and stack traces."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S) as response:
                if response.status == 200:
                    return
                reason = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
        raise TrackingStoreUnavailable(
            f"MLflow tracking server {uri} is not reachable ({reason}); start it or point MLFLOW_TRACKING_URI elsewhere"
        )
    database = sqlite_file(uri)
    if database is not None:
        folder = database.parent
        if not folder.is_dir():
            raise TrackingStoreUnavailable(f"MLflow tracking store {uri}: folder {folder} does not exist")


def experiment_artifact_location(tracking_uri: str, name: str) -> str | None:
    """Where a new experiment keeps its artifacts: `mlartifacts/<name>` beside a SQLite store, the server's choice else."""
    database = sqlite_file(tracking_uri)
    return (database.parent / ARTIFACTS_DIR / name).as_uri() if database else None


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment's id, created (when new) with its artifacts where the store at `tracking_uri` keeps them."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=experiment_artifact_location(tracking_uri, name))


def parent_run_id(client: MlflowClient, experiment_id: str, dagster_run_id: str, tags: dict[str, str]) -> str:
    """The MLflow run standing for one Dagster run, created by the first asset that asks."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{dagster_run_id}' and tags.`{ROLE_TAG}` = 'pipeline'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"dagster-{dagster_run_id[:8]}",
        tags={**tags, PARENT_RUN_TAG: dagster_run_id, ROLE_TAG: "pipeline"},
    )
    return run.info.run_id


def child_run_id(client: MlflowClient, experiment_id: str, parent_id: str, asset: str, tags: dict[str, str]) -> str:
    run = client.create_run(
        experiment_id,
        run_name=asset,
        tags={**tags, "mlflow.parentRunId": parent_id, ROLE_TAG: "asset", ASSET_TAG: asset},
    )
    return run.info.run_id


def git_commit(project_dir: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
