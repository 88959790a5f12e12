"""Where the one graph runs, chosen by the environment, never by forking the definitions.

`VIDEODIT_EXECUTOR` picks the executor of every job: `in_process` (default: one machine, steps share one process),
`multiprocess`, or `k8s` (`dagster_k8s.k8s_job_executor`, one Kubernetes Job per step; its per-step resources come
from the steps' `dagster-k8s/config` tags below and from the executor's run config in the Helm values).

The training assets carry `TRAINING_OP_TAGS`: the GPU tag (`videodit/gpu`, the run queue's tag concurrency key in
infra/dagster/dagster.yaml) and, on Kubernetes, a pod that requests one NVIDIA GPU. Every other step asks for CPU
only (`CPU_STEP_K8S_CONFIG`, the executor's default in infra/k8s/dagster-values.yaml).
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTOR_VARIABLE = "VIDEODIT_EXECUTOR"
EXECUTOR_CONFIG_VARIABLE = "VIDEODIT_EXECUTOR_CONFIG"  # the executor's default config: a YAML/JSON file, or inline JSON
GPU_TAG = "videodit/gpu"  # run-queue tag concurrency key: one GPU, one training run at a time
K8S_CONFIG_TAG = "dagster-k8s/config"

GPU_STEP_K8S_CONFIG = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
        }
    },
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}
CPU_STEP_K8S_CONFIG = {
    "container_config": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}}
}

TRAINING_OP_TAGS = {GPU_TAG: "1", K8S_CONFIG_TAG: GPU_STEP_K8S_CONFIG}
RUN_TAGS_THAT_TRAIN = {GPU_TAG: "1"}  # on every job that trains, so the run queue's limit applies to its runs


def executor_config_from_env(env: Mapping[str, str] | None = None) -> dict | None:
    raw = (os.environ if env is None else env).get(EXECUTOR_CONFIG_VARIABLE, "").strip()
    if not raw:
        return None
    if raw.startswith("{"):
        return json.loads(raw)
    return yaml.safe_load(Path(raw).read_text())


def executor_from_env(env: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """The executor `VIDEODIT_EXECUTOR` names, configured with `VIDEODIT_EXECUTOR_CONFIG` when that is set
    (a run's own `execution:` config still overrides it). Dagster checks that config against the executor's schema."""
    env = os.environ if env is None else env
    raw = env.get(EXECUTOR_VARIABLE, "in_process")
    name = raw.strip().lower().replace("-", "_")
    if name in ("", "in_process", "inprocess"):
        executor = in_process_executor
    elif name == "multiprocess":
        executor = multiprocess_executor
    elif name in ("k8s", "k8s_job", "kubernetes"):
        from dagster_k8s import k8s_job_executor  # the `stack` extra: installed by `make install` and in the images

        executor = k8s_job_executor
    else:
        raise ValueError(f"{EXECUTOR_VARIABLE}={raw!r}: use in_process (default), multiprocess or k8s")
    config = executor_config_from_env(env)
    if config is None:
        return executor
    from dagster._config import process_config  # checked now: `configured` alone would only fail at the first run

    checked = process_config(executor.config_schema.config_type, config)
    if not checked.success:
        errors = "; ".join(e.message.split(" Expected:")[0] for e in checked.errors)
        raise ValueError(f"{EXECUTOR_CONFIG_VARIABLE} is not a valid {executor.name} executor config: {errors}")
    return executor.configured(config, name=executor.name)
