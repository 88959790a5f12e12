"""The tiny graph through a real `mlflow server` (loopback, SQLite backend, proxied artifacts): every registration works."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import mlflow
import pytest
from dagster import DagsterEventType, DagsterInstance, materialize
from mlflow import MlflowClient

from dagster_project.definitions import defs
from dagster_project.defs.resources import DVCResource, MLflowTracking, Workspace
from videodit.tracking.registry import CHALLENGER, CHAMPION

MODELS = ("videodit-vae", "videodit-dit", "videodit-onnx")
START_TIMEOUT_S = 120
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# What is under test is the registry's traffic, not the models' quality: the fewest steps that train and evaluate.
FEWEST_STEPS = {"ops": {
    "vae_model": {"config": {"max_steps": 4}},
    "dit_model": {"config": {"max_steps": 4}},
    "model_evaluation": {"config": {"n_prompts": 4, "steps": 2}},
}}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(server: subprocess.Popen, uri: str, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {uri} did not become healthy (rc {server.poll()}): {log.read_text()[-2000:]}")


@contextmanager
def _process_uris_restored():
    """The resource points MLflow's process-wide tracking and registry URIs (and the variables that mirror them)
    at the server: put them back, so no later test retries into a server that is gone."""
    before = {name: os.environ.get(name) for name in URI_VARIABLES}
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])
        for name, value in before.items():
            if value is None:  # set_registry_uri(None) leaves its variable behind
                os.environ.pop(name, None)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on a free loopback port; its artifacts proxied into a folder of its own."""
    root = tmp_path_factory.mktemp("mlflow-server")
    uri, log = f"http://127.0.0.1:{_free_port()}", root / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", uri.rpartition(":")[2],
         "--workers", "1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_healthy(process, uri, log)
        with _process_uris_restored():
            yield uri, root
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the server and its workers; its store goes with tmp_path
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def pipeline(server, tmp_path_factory):
    uri, _ = server
    root = tmp_path_factory.mktemp("server-project") / "project"
    root.mkdir()
    resources = {
        "workspace": Workspace(project_dir=str(root), preset="tiny"),
        "dvc": DVCResource(remote_url=str(root) + "-remote"),
        "mlflow_tracking": MLflowTracking(tracking_uri=uri),
    }
    result = materialize(
        list(defs.assets) + list(defs.asset_checks), resources=resources, instance=DagsterInstance.ephemeral(), run_config=FEWEST_STEPS
    )
    assert result.success
    return result, MlflowClient(uri), root


def test_every_model_registers_through_the_server_with_its_aliases(pipeline):
    result, client, _ = pipeline
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert not [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]  # first try
    for name in MODELS:
        (version,) = client.search_model_versions(f"name = '{name}'")
        assert version.status == "READY" and version.source.startswith("models:/m-")
        assert client.get_model_version_by_alias(name, CHAMPION).version == version.version == "1"
    dit = client.get_model_version_by_alias("videodit-dit", CHALLENGER)
    assert "eval.overall" in dit.tags and dit.tags["promotion.promoted"] == "True"
    onnx = client.get_model_version_by_alias("videodit-onnx", CHAMPION)
    assert onnx.tags["dit_version"] == dit.version


def test_runs_finish_and_no_logged_model_is_left_unregistered(pipeline, server):
    result, client, root = pipeline
    _, server_root = server
    experiment = client.get_experiment_by_name("videodit")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags["dagster.run_id"] for r in runs} == {result.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    children = {r.data.tags["dagster.asset_key"] for r in runs if r.data.tags["videodit.role"] == "asset"}
    assert children == {"vae_model", "dit_model", "model_evaluation", "onnx_models", "generated_videos"}
    logged = {m.model_id for m in client.search_logged_models(experiment_ids=[experiment.experiment_id])}
    registered = {v.source.removeprefix("models:/") for name in MODELS for v in client.search_model_versions(f"name = '{name}'")}
    assert logged == registered and len(logged) == len(MODELS)
    # Artifacts went through the server into its own folder, none into the project.
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert list((server_root / "artifacts").rglob("MLmodel")) and not (root / "mlartifacts").exists()
