"""The model half of the graph on the tiny preset: training, MLflow tracking, the registry, ONNX and generation."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from dagster import DagsterInstance, build_sensor_context, materialize
from mlflow import MlflowClient

from dagster_project.definitions import defs
from dagster_project.defs.schedules import weekly_retraining
from dagster_project.defs.sensors import retrain_on_new_data
from dagster_project.defs.resources import DVCResource, MLflowTracking, Workspace
from videodit.cli import main as cli_main
from videodit.tracking.registry import CHAMPION, CHALLENGER

ALL_ASSETS = list(defs.assets)
ALL_CHECKS = list(defs.asset_checks)


def _resources(root, tracking_uri=None):
    return {
        "workspace": Workspace(project_dir=str(root), preset="tiny"),
        "dvc": DVCResource(remote_url=str(root) + "-remote"),
        "mlflow_tracking": MLflowTracking(tracking_uri=tracking_uri or f"sqlite:///{root}/mlflow.db"),
    }


def _metadata(result, asset):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The whole graph materialized once; tests read what it left behind."""
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "1"
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING"] = "1"
    root = tmp_path_factory.mktemp("pipeline") / "project"
    root.mkdir()
    instance = DagsterInstance.ephemeral()
    result = materialize(ALL_ASSETS + ALL_CHECKS, resources=_resources(root), instance=instance)
    assert result.success
    return root, instance, result, MlflowClient(f"sqlite:///{root}/mlflow.db")


def test_every_asset_materializes_with_real_values(pipeline):
    root, _, result, client = pipeline
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert _metadata(result, "vae_model")["registered_version"] == "videodit-vae v1"
    assert _metadata(result, "dit_model")["registered_version"] == "videodit-dit v1"
    latents = _metadata(result, "video_latents")
    assert latents["train_clips"] + _metadata(result, "training_clips")["val_clips"] == 24
    assert latents["latent_shape"] == "(4, 3, 4, 4)"  # 8 frames → 1 + 8/4 latent frames; 32 px / 8
    evaluation = _metadata(result, "model_evaluation")
    for metric in ("colour", "shape", "size", "direction", "overall", "vae_ssim"):
        assert 0.0 <= evaluation[metric] <= 1.0
    assert evaluation["promoted"] and "first" in evaluation["decision"]
    assert evaluation["generated"].startswith("![evaluation](data:image/png;base64,")
    onnx = _metadata(result, "onnx_models")
    assert onnx["max_graph_abs_diff"] < 1e-3 and onnx["min_end_to_end_psnr_db"] >= 40
    generated = _metadata(result, "generated_videos")
    manifest = json.loads((root / "artifacts" / "generated_videos" / "manifest.json").read_text())
    assert generated["videos"] == len(manifest["videos"]) == 8
    assert all((root / "artifacts" / "generated_videos" / v["mp4"]).stat().st_size > 0 for v in manifest["videos"])

    # The registry: aliases on every model, the ONNX bundle following the champion.
    for name in ("videodit-vae", "videodit-dit", "videodit-onnx"):
        assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"
    dit = client.get_model_version_by_alias("videodit-dit", CHALLENGER)
    assert float(dit.tags["eval.overall"]) == pytest.approx(evaluation["overall"], abs=1e-6)
    assert dit.tags["promotion.promoted"] == "True" and "Evaluation:" in dit.description
    assert _metadata(result, "raw_videos")["dvc_md5"] in dit.description  # the model card names its data


def test_mlflow_runs_nest_under_the_dagster_run_with_params_metrics_and_tags(pipeline):
    root, _, result, client = pipeline
    runs = client.search_runs([client.get_experiment_by_name("videodit").experiment_id])
    parents = [r for r in runs if r.data.tags.get("videodit.role") == "pipeline"]
    assert len(parents) == 1 and parents[0].data.tags["dagster.run_id"] == result.run_id
    children = {r.data.tags["dagster.asset_key"]: r for r in runs if r.data.tags.get("videodit.role") == "asset"}
    assert set(children) == {"vae_model", "dit_model", "model_evaluation", "onnx_models", "generated_videos"}
    dvc_md5 = _metadata(result, "raw_videos")["dvc_md5"]
    for run in children.values():
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["dvc.data_version"] == dvc_md5 and run.data.tags["dagster.run_id"] == result.run_id
        assert "git.commit" in run.data.tags
    dit = children["dit_model"]
    assert dit.data.params["train.max_steps"] == "20" and dit.data.params["dit.hidden_size"] == "64"
    loss = client.get_metric_history(dit.info.run_id, "train/loss")
    assert len(loss) >= 2 and loss[-1].step > loss[0].step
    # MLflow samples system metrics once per interval (1 s here) and drops a sample the run ends before: a run
    # of a second or two may have none (CI's VAE run), the longest run (ONNX export, ~20 s) must.
    longest = max(children.values(), key=lambda r: r.info.end_time - r.info.start_time)
    seconds = (longest.info.end_time - longest.info.start_time) / 1000
    assert seconds > 3, f"no asset run lasted 3 sampling intervals (longest {seconds:.1f} s)"
    assert any(k.startswith("system/") for k in longest.data.metrics), longest.data.tags["dagster.asset_key"]
    artifacts = {a.path for a in client.list_artifacts(dit.info.run_id, "samples")}
    assert "samples/samples.png" in artifacts and "samples/samples_0.gif" in artifacts


def test_same_data_and_code_reuse_the_registered_versions(pipeline):
    root, instance, _, client = pipeline
    again = materialize(ALL_ASSETS, selection=["vae_model", "video_latents", "dit_model"], resources=_resources(root), instance=instance)
    assert _metadata(again, "vae_model")["reused_existing_version"] is True
    assert _metadata(again, "dit_model")["reused_existing_version"] is True
    assert len(client.search_model_versions("name = 'videodit-dit'")) == 1


def test_killed_training_resumes_and_registers_exactly_one_version(pipeline, tmp_path):
    root, instance, _, client = pipeline
    config = {"ops": {"dit_model": {"config": {"max_steps": 40}}}}
    script, holding = tmp_path / "train.py", tmp_path / "holding"
    # The child holds its run just after the step-10 checkpoint and says so (`holding`), so the kill lands there on
    # any machine speed, never while last.ckpt is half written.
    script.write_text(
        "import time\nimport lightning as L\nfrom dagster import materialize\n"
        "import dagster_project.defs.training as training\nfrom dagster_project.definitions import defs\n"
        "from dagster_project.defs.resources import DVCResource, MLflowTracking, Workspace\n"
        "class HoldAfterStep10(L.Callback):\n"
        "    def on_train_batch_end(self, trainer, *args):\n"
        "        if trainer.global_step > 10:\n"
        f"            open({str(holding)!r}, 'w').close()\n"
        "            time.sleep(3600)\n"
        "train_dit = training.train_dit\n"
        "training.train_dit = lambda *args: train_dit(*args[:-1], [*args[-1], HoldAfterStep10()])\n"
        f"root = {str(root)!r}\n"
        "materialize(list(defs.assets), selection=['dit_model'], run_config=" + repr(config) + ",\n"
        "  resources={'workspace': Workspace(project_dir=root, preset='tiny'), 'dvc': DVCResource(remote_url=root + '-remote'),\n"
        "             'mlflow_tracking': MLflowTracking(tracking_uri=f'sqlite:///{root}/mlflow.db')})\n"
    )
    earlier = set((root / "artifacts" / "dit_model").glob("*/checkpoints/step000010.ckpt"))
    log = tmp_path / "train.log"
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not holding.exists() and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # killed midway: no final checkpoint, nothing registered
    proc.wait()
    fresh = set((root / "artifacts" / "dit_model").glob("*/checkpoints/step000010.ckpt")) - earlier
    assert holding.exists() and len(fresh) == 1, f"training never held after its step-10 checkpoint: {log.read_text()[-2000:]}"
    (checkpoint,) = fresh
    assert not (checkpoint.parent / "step000020.ckpt").exists() and not (checkpoint.parents[1] / "final.ckpt").exists()
    assert len(client.search_model_versions("name = 'videodit-dit'")) == 1

    resumed = materialize(ALL_ASSETS, selection=["dit_model"], run_config=config, resources=_resources(root), instance=instance)
    logs = [e.message for e in instance.all_logs(resumed.run_id) if e.message]
    assert any(f"resuming from {checkpoint.parent / 'last.ckpt'}" in m for m in logs)
    assert any("step 40/40" in m for m in logs)
    assert _metadata(resumed, "dit_model")["registered_version"] == "videodit-dit v2"
    assert len(client.search_model_versions("name = 'videodit-dit'")) == 2


@pytest.mark.parametrize(("asset", "model", "shard", "producer"), [
    ("vae_model", "videodit-vae", "training_clips/shards/00000.safetensors", "training_clips"),
    ("dit_model", "videodit-dit", "video_latents/train.safetensors", "video_latents"),
])  # fmt: skip
def test_a_corrupt_shard_fails_once_naming_it_and_the_asset_to_materialize_again(pipeline, asset, model, shard, producer):
    root, instance, _, client = pipeline
    path = root / "artifacts" / shard
    intact = path.read_bytes()
    versions = len(client.search_model_versions(f"name = '{model}'"))
    header = 10  # a byte of the safetensors header: today an unnamed SafetensorError, retried twice
    path.write_bytes(intact[:header] + bytes([intact[header] ^ 1]) + intact[header + 1 :])
    try:
        config = {"ops": {asset: {"config": {"force_new_version": True}}}}
        result = materialize(ALL_ASSETS, selection=[asset], run_config=config, resources=_resources(root), instance=instance, raise_on_error=False)
    finally:
        path.write_bytes(intact)
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]  # the same bytes on a retry
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    user_failure = failure.event_specific_data.user_failure_data
    assert user_failure.description.startswith(f"{path} does not match its recorded sha256")
    assert user_failure.description.endswith(f": materialize {producer} again")
    assert user_failure.metadata["file"].value == str(path)
    assert len(client.search_model_versions(f"name = '{model}'")) == versions  # nothing trained on it was registered


def test_a_tracking_server_that_is_down_is_a_clear_error(pipeline):
    root, *_ = pipeline
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = materialize(ALL_ASSETS, selection=["vae_model"], resources=_resources(root, f"http://127.0.0.1:{port}"), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]  # no retries into a dead server
    assert f"MLflow tracking server http://127.0.0.1:{port} is not reachable" in failure.event_specific_data.error.message


def test_mlflow_rest_api_shows_the_registered_models_and_aliases(pipeline):
    root, *_ = pipeline
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/registered-models/get?name=videodit-dit", timeout=10) as r:
            model = json.load(r)["registered_model"]
        aliases = {a["alias"]: a["version"] for a in model["aliases"]}
        assert aliases[CHAMPION] == "1" and CHALLENGER in aliases
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/registered-models/alias?name=videodit-onnx&alias=champion", timeout=10) as r:
            assert json.load(r)["model_version"]["name"] == "videodit-onnx"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_cli_generates_from_the_champion_with_only_a_prompt(pipeline, tmp_path, monkeypatch):
    root, *_ = pipeline
    monkeypatch.setenv("VIDEODIT_PROJECT_DIR", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["generate", "a red circle moves left", "-o", "out.mp4"]) == 0
    assert (tmp_path / "out.mp4").stat().st_size > 0
    assert cli_main(["generate", "a red circle", "--model", "models:/videodit-onnx@nope"]) == 2


def test_sensor_run_key_is_the_dvc_data_version_and_the_schedule_is_weekly(pipeline):
    _, instance, result, _ = pipeline
    context = build_sensor_context(instance=instance, definitions=defs)
    (request,) = retrain_on_new_data.evaluate_tick(context).run_requests
    assert request.run_key == _metadata(result, "raw_videos")["dvc_md5"]  # what raw_videos really tags
    assert weekly_retraining.cron_schedule == "0 3 * * 1" and weekly_retraining.job_name == "training_job"


def test_sensor_requests_one_run_per_data_version_over_ticks():
    """Ticks as the daemon runs them: one cursor carried from tick to tick over one instance's event log."""
    from dagster import AssetMaterialization

    launched = []  # the daemon launches a request only if this sensor has not used its run key before

    with DagsterInstance.ephemeral() as instance:
        cursor = None

        def tick(*data_versions):
            nonlocal cursor
            for version in data_versions:
                tags = {"dagster/data_version": version} if version else {}
                instance.report_runless_asset_event(AssetMaterialization("raw_videos", tags=tags))
            context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
            result = retrain_on_new_data.evaluate_tick(context)
            cursor = result.cursor
            launched.extend(r.run_key for r in result.run_requests if r.run_key not in launched)
            return result

        first = tick("md5-a")
        assert [r.run_key for r in first.run_requests] == ["md5-a"]
        assert first.run_requests[0].job_name in (None, "retraining_job")
        assert first.run_requests[0].tags["videodit/data_version"] == "md5-a"
        assert not tick().run_requests  # nothing new since the cursor: no request at all
        again = tick("md5-a")  # raw_videos materialized again over the same data: same version, same run key
        assert [r.run_key for r in again.run_requests] == ["md5-a"]  # which the daemon does not launch twice
        assert tick(None).skip_message == "raw_videos materialization without a data version"
        assert [r.run_key for r in tick("md5-b").run_requests] == ["md5-b"]
    assert launched == ["md5-a", "md5-b"]  # three materializations with a version, two data versions: two runs
