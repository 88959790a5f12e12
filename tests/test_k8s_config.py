"""The deployment config, checked without a cluster: the Dagster instance yaml, the executor and run-launcher config
against dagster-k8s's own schemas, and the pod spec dagster-k8s builds from the training assets' op tags."""

import json
from pathlib import Path

import pytest
import yaml
from dagster import Shape, in_process_executor
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
from dagster_k8s.launcher import K8sRunLauncher

from dagster_project.deployment import (
    EXECUTOR_CONFIG_VARIABLE, EXECUTOR_VARIABLE, GPU_TAG, K8S_CONFIG_TAG, TRAINING_OP_TAGS, executor_from_env,
)  # fmt: skip

INFRA = Path(__file__).resolve().parent.parent / "infra"
EXECUTOR_YAML = INFRA / "k8s" / "executor.yaml"
IMAGE = "registry.example.com/videodit:0.1.0"


def _errors(result) -> list[str]:
    return [e.message.split(" Expected:")[0] for e in result.errors or []]


def _values() -> dict:
    return yaml.safe_load((INFRA / "k8s" / "dagster-values.yaml").read_text())


def test_the_instance_yaml_is_valid_postgres_queued_and_limits_the_gpu_tag(monkeypatch):
    monkeypatch.setenv("VIDEODIT_DAGSTER_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/videodit_dagster")
    config = yaml.safe_load((INFRA / "dagster" / "dagster.yaml").read_text())
    result = process_config(dagster_instance_config_schema(), config)
    assert result.success, _errors(result)
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "VIDEODIT_DAGSTER_PG_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    coordinator = process_config(QueuedRunCoordinator.config_type(), config["run_coordinator"]["config"])
    assert coordinator.success, _errors(coordinator)
    assert {"key": GPU_TAG, "limit": 1} in config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert config["run_retries"]["enabled"] and config["telemetry"] == {"enabled": False}


def test_the_executor_is_in_process_by_default_and_k8s_from_the_environment():
    assert executor_from_env({}) is in_process_executor
    assert executor_from_env({EXECUTOR_VARIABLE: "multiprocess"}).name == "multiprocess"
    k8s = executor_from_env({EXECUTOR_VARIABLE: "k8s", EXECUTOR_CONFIG_VARIABLE: str(EXECUTOR_YAML)})
    assert k8s.name == "k8s" and k8s.executor_creation_fn is not None
    assert executor_from_env({EXECUTOR_VARIABLE: "k8s"}) is k8s_job_executor
    with pytest.raises(ValueError, match="VIDEODIT_EXECUTOR='gpu-cluster'"):
        executor_from_env({EXECUTOR_VARIABLE: "gpu-cluster"})


def test_the_cluster_executor_config_validates_against_dagster_k8s_schema():
    config = yaml.safe_load(EXECUTOR_YAML.read_text())
    result = process_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, _errors(result)
    assert {"key": GPU_TAG, "limit": 1} in config["tag_concurrency_limits"]
    # A typo is refused when the code location loads, naming the key, not at the first step.
    bad = json.dumps({**config, "job_namespac": "videodit"})
    with pytest.raises(ValueError, match='unexpected config entry "job_namespac"'):
        executor_from_env({EXECUTOR_VARIABLE: "k8s", EXECUTOR_CONFIG_VARIABLE: bad})


def test_the_helm_values_run_launcher_and_queue_validate_against_dagster_schemas():
    values = _values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    chart = values["runLauncher"]["config"]["k8sRunLauncher"]
    # What the chart renders into the instance's run_launcher config (its configmap-instance template).
    launcher = {
        "instance_config_map": "dagster-instance",
        "dagster_home": "/opt/dagster/dagster_home",
        "postgres_password_secret": "dagster-postgresql-secret",
        "service_account_name": values["global"]["serviceAccountName"],
        "image_pull_policy": chart["imagePullPolicy"],
        "env_config_maps": [c["name"] for c in chart["envConfigMaps"]],
        "env_secrets": [s["name"] for s in chart["envSecrets"]],
        "volumes": chart["volumes"],
        "volume_mounts": chart["volumeMounts"],
        "run_k8s_config": {"container_config": chart["runK8sConfig"]["containerConfig"]},
        "fail_pod_on_run_failure": chart["failPodOnRunFailure"],
    }
    result = process_config(Shape(K8sRunLauncher.config_type()), launcher)
    assert result.success, _errors(result)
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator = {"max_concurrent_runs": queue["maxConcurrentRuns"],
                   "tag_concurrency_limits": queue["tagConcurrencyLimits"]}  # fmt: skip
    assert process_config(QueuedRunCoordinator.config_type(), coordinator).success
    assert {"key": GPU_TAG, "limit": 1} in queue["tagConcurrencyLimits"]
    # The cluster's code location selects and configures the k8s executor: the graph itself does not fork.
    env = {e["name"]: e["value"] for e in values["dagster-user-deployments"]["deployments"][0]["env"]}
    assert env[EXECUTOR_VARIABLE] == "k8s" and env[EXECUTOR_CONFIG_VARIABLE] == "/etc/videodit/executor.yaml"
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False


def _step_pod(op_tags: dict):
    """The pod spec k8s_job_executor would give a step with these op tags: the executor's step_k8s_config, the
    step's `dagster-k8s/config` tag merged over it, built by dagster-k8s's own job constructor."""
    executor = yaml.safe_load(EXECUTOR_YAML.read_text())
    base = K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor["step_k8s_config"]))
    step = K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op_tags))
    merged = base.merge(step).run_k8s_config
    config = DagsterK8sJobConfig(job_image=IMAGE, dagster_home="/opt/dagster/dagster_home",
                                 instance_config_map="dagster-instance", image_pull_policy="IfNotPresent")  # fmt: skip
    job = construct_dagster_k8s_job(config, args=["dagster", "api", "execute_step"], job_name="dagster-step-test", user_defined_k8s_config=merged)
    return job.spec.template.spec


@pytest.mark.parametrize("asset_name", ["vae_model", "video_latents", "dit_model"])
def test_training_steps_get_a_pod_with_one_gpu(asset_name):
    from dagster_project.defs import training

    tags = getattr(training, asset_name).op.tags
    assert tags[GPU_TAG] == "1" and json.loads(tags[K8S_CONFIG_TAG]) == TRAINING_OP_TAGS[K8S_CONFIG_TAG]
    pod = _step_pod(tags)
    (container,) = pod.containers
    assert container.image == IMAGE
    assert container.resources.requests["nvidia.com/gpu"] == container.resources.limits["nvidia.com/gpu"] == "1"
    assert container.resources.requests["cpu"] == "4"
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "NoSchedule")]


def test_other_steps_get_a_cpu_pod():
    from dagster_project.defs import validation

    tags = validation.validated_clips.op.tags
    assert K8S_CONFIG_TAG not in tags and GPU_TAG not in tags
    pod = _step_pod(tags)
    (container,) = pod.containers
    assert container.resources.requests == {"cpu": "1", "memory": "4Gi"}
    assert "nvidia.com/gpu" not in (container.resources.limits or {}) and not pod.node_selector and not pod.tolerations


def test_containers_and_manifests_use_the_entrypoint_make_up_runs():
    """On paper only (no image can be built here): compose and the manifests run `infra/stack.py run <service>`, the
    very commands tests/test_stack.py starts, and both images have that script as their entrypoint."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("videodit_stack_for_config", INFRA / "stack.py")
    stack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = stack
    spec.loader.exec_module(stack)
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    commands = {name: service["command"] for name, service in compose["services"].items() if name != "postgres"}
    assert commands == {name: ["run", name] for name in stack.SERVICES}
    manifests = [d for d in yaml.safe_load_all((INFRA / "k8s" / "services.yaml").read_text()) if d["kind"] in ("Deployment", "StatefulSet")]
    assert {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["args"] for d in manifests} == {
        "seaweedfs": ["run", "seaweedfs"], "mlflow": ["run", "mlflow"]
    }
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (INFRA / "docker" / dockerfile).read_text()
        assert 'ENTRYPOINT ["python", "/opt/videodit/infra/stack.py"]' in text
    assert "'.[stack,gpu]'" in (INFRA / "docker" / "Dockerfile.cuda").read_text()
