"""The model half of the graph on the tiny preset: training, MLflow tracking, the registry, ONNX and generation."""

import base64
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import held_out_phrasings
from dagster import DagsterInstance, build_sensor_context, materialize
from mlflow import MlflowClient
from packaging.requirements import Requirement

from dagster_project.definitions import defs
from dagster_project.defs.schedules import weekly_retraining
from dagster_project.defs.sensors import retrain_on_new_data
from dagster_project.defs.resources import DVCResource, MLflowTracking, Workspace
from videodit.cli import main as cli_main
from videodit.config import load_preset
from videodit.data.config import video_buckets
from dagster_project.defs.serving import DEFAULT_CONDITIONING_DIR
from dagster_project.defs.training import training_fingerprint
from videodit.data.video_io import mp4_frames
from videodit.evaluation.image_quality import psnr
from videodit.generation.inputs import read_video
from videodit.generation.rest import invoke, serving
from videodit.data.shards import ClipShards
from videodit.data.synthetic import SHAPES_DOMAIN
from videodit.evaluation.model_report import BUCKET_METRICS, reconstruct_clips, validation_clips
from videodit.tracking.registry import CHAMPION, CHALLENGER, SCORE_TAG_PREFIX, alias_version
from videodit.tracking.source import code_version

ALL_ASSETS = list(defs.assets)
ALL_CHECKS = list(defs.asset_checks)

# The clip buckets curation fills and evaluation scores.
VIDEO_BUCKETS = [b.name for b in video_buckets(load_preset("tiny").buckets)]
# The sizes the bundle serves and generated_videos renders: every bucket, the 1-frame image bucket too.
SERVED_BUCKETS = [b.name for b in load_preset("tiny").buckets]


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
    return root, instance, result, MlflowClient(f"sqlite:///{root}/mlflow.db", registry_uri=f"sqlite:///{root}/mlflow.db")


def test_every_asset_materializes_with_real_values(pipeline):
    root, _, result, client = pipeline
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert _metadata(result, "vae_model")["registered_version"] == "videodit-vae v1"
    assert _metadata(result, "dit_model")["registered_version"] == "videodit-dit v1"
    latents = _metadata(result, "video_latents")
    assert latents["train_clips"] + _metadata(result, "training_clips")["val_clips"] == 34  # 24 square + 2 per other bucket
    assert latents["latent_shape"] == "(4, 3, 4, 4)"  # 8 frames → 1 + 8/4 latent frames; 32 px / 8
    evaluation = _metadata(result, "model_evaluation")
    for metric in ("colour", "shape", "size", "direction", "overall", "vae_ssim"):
        assert 0.0 <= evaluation[metric] <= 1.0
    assert evaluation["promoted"] and "first" in evaluation["decision"]
    assert evaluation["generated"].startswith("![evaluation](data:image/png;base64,")
    # The conditioned modes, scored on unseen-split clips: a given frame comes back through the VAE (a random-ish
    # tiny model still keeps it: the first latent frame is never denoised), the rest are proportions.
    assert evaluation["image_to_video/first_frame_psnr"] >= 28.0
    assert evaluation["interpolation/first_frame_psnr"] >= 28.0 and evaluation["interpolation/last_frame_psnr"] > 10.0
    for name in ("image_to_video/overall", "extension/seam_pass_rate", "long_video/seam_pass_rate",
                 "long_video/window_adherence_first", "interpolation/path_monotone_rate"):  # fmt: skip
        assert 0.0 <= evaluation[name] <= 1.0, name
    for mode in ("image_to_video", "extension", "long_video", "interpolation"):
        assert evaluation[f"conditioned_{mode}"].startswith(f"![conditioned_{mode}](data:image/png;base64,")
    # Every video bucket scored: its table in the metadata, its metrics in MLflow; the default bucket's row is the
    # promoting scores.
    table = evaluation["per_bucket"].splitlines()
    assert len(table) == 2 + len(VIDEO_BUCKETS) and all(any(f" {b} " in row for row in table) for b in VIDEO_BUCKETS)
    run_metrics = client.get_run(evaluation["mlflow_run_id"]).data.metrics
    report = json.loads((root / "artifacts" / "model_evaluation" / "evaluation.json").read_text())
    assert [row["bucket"] for row in report["per_bucket"]] == VIDEO_BUCKETS
    for row in report["per_bucket"]:
        for metric in BUCKET_METRICS:
            assert run_metrics[f"eval/bucket/{row['bucket']}/{metric}"] == pytest.approx(row[metric], nan_ok=True)
        assert all(0.0 <= row[m] <= 1.0 for m in ("overall", "colour", "shape", "size", "direction")), row
        assert row["prompts"] == (16 if row["bucket"] == VIDEO_BUCKETS[0] else 2)  # tiny: 2 unseen prompts, 1 seed
        # A bucket's PSNR needs one of its validation clips, its Fréchet distance two (which bucket has them is up to
        # the split by hash); NaN without them.
        assert 0.0 < row["vae_psnr"] <= 100.0 if row["val_clips"] >= 1 else np.isnan(row["vae_psnr"])
        assert row["frechet_distance"] >= 0.0 if row["val_clips"] >= 2 else np.isnan(row["frechet_distance"])
    assert report["per_bucket"][0]["overall"] == evaluation["overall"] and report["per_bucket"][0]["val_clips"] >= 1
    assert "evaluation/per_bucket.json" in {a.path for a in client.list_artifacts(evaluation["mlflow_run_id"], "evaluation")}
    onnx = _metadata(result, "onnx_models")
    assert onnx["max_graph_abs_diff"] < 1e-3 and onnx["min_end_to_end_psnr_db"] >= 40
    assert set(onnx["end_to_end_psnr_db"]) == set(SERVED_BUCKETS)  # parity in every bucket served
    generated = _metadata(result, "generated_videos")
    assert generated["videos"] == 8 * len(SERVED_BUCKETS)
    for bucket in SERVED_BUCKETS:  # the prompt list in every bucket, a contact sheet each
        folder = root / "artifacts" / "generated_videos" / bucket
        manifest = json.loads((folder / "manifest.json").read_text())
        assert len(manifest["videos"]) == 8 and all((folder / v["mp4"]).stat().st_size > 0 for v in manifest["videos"])
        assert manifest["frames"] == int(bucket.split("x")[0])  # 1 in the image bucket
        assert generated[f"contact_sheet_{bucket}"].startswith("![")

    # The registry: aliases on every model; the fp32 bundle of the champion and its int8 copy, scored alike, and
    # `champion` on the one served_bundle chose.
    for name in ("videodit-vae", "videodit-dit"):
        assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"
    served = _metadata(result, "served_bundle")
    fp32, int8 = (client.get_model_version("videodit-onnx", v) for v in ("1", "2"))
    assert (fp32.tags["precision"], int8.tags["precision"], int8.tags["fp32_version"]) == ("fp32", "int8", "1")
    held = float(int8.tags["eval.overall"]) >= float(fp32.tags["eval.overall"]) - 0.02
    assert served["precision"] == ("int8" if held else "fp32") and f"v{2 if held else 1} serves" in served["decision"]
    assert served["served_version"] == f"videodit-onnx v{2 if held else 1} (@champion)" == f"{generated['model']} (@champion)"
    assert str(client.get_model_version_by_alias("videodit-onnx", CHAMPION).version) == str(2 if held else 1)
    assert served["fp32_overall"] == pytest.approx(float(fp32.tags["eval.overall"]), abs=1e-6)
    assert served["int8_min_psnr_vs_fp32_db"] > 20 and float(int8.tags["psnr_vs_fp32_db"]) > 20
    assert all(v.tags["serving.served_version"] == str(2 if held else 1) for v in (fp32, int8))
    dit = client.get_model_version_by_alias("videodit-dit", CHALLENGER)
    assert float(dit.tags["eval.overall"]) == pytest.approx(evaluation["overall"], abs=1e-6)
    assert dit.tags["promotion.promoted"] == "True" and "Evaluation:" in dit.description
    assert _metadata(result, "raw_videos")["dvc_md5"] in dit.description  # the model card names its data

    # The code part of the fingerprint is the asset's Dagster code version: the source its training module runs.
    dit_asset = defs.resolve_assets_def("dit_model")
    assert _metadata(result, "dit_model")["code_version"] == dit_asset.code_versions_by_key[dit_asset.key]
    assert dit_asset.code_versions_by_key[dit_asset.key] == code_version("videodit.training.dit_module")


def test_mlflow_runs_nest_under_the_dagster_run_with_params_metrics_and_tags(pipeline):
    root, _, result, client = pipeline
    runs = client.search_runs([client.get_experiment_by_name("videodit").experiment_id])
    parents = [r for r in runs if r.data.tags.get("videodit.role") == "pipeline"]
    assert len(parents) == 1 and parents[0].data.tags["dagster.run_id"] == result.run_id
    children = {r.data.tags["dagster.asset_key"]: r for r in runs if r.data.tags.get("videodit.role") == "asset"}
    assert set(children) == {"vae_model", "dit_model", "model_evaluation", "onnx_models", "served_bundle", "generated_videos",
                             "conditioned_videos"}  # fmt: skip
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


def test_conditioned_videos_make_every_mode_from_the_shipped_folder_and_reject_a_bad_request(pipeline, tmp_path):
    root, instance, result, client = pipeline
    # The shipped example folder (the default), at the tiny bundle: 32x32, 9-frame window.
    made = _metadata(result, "conditioned_videos")
    assert made["videos"] == 6 and made["rejected"] == 0
    out = root / "artifacts" / "conditioned_videos"
    requests = json.loads((out / "manifest.json").read_text())["requests"]
    by_mode = {r["mode"]: r for r in requests}
    assert {m: (r["frames"], r["given_frames"]) for m, r in by_mode.items() if m != "extend_backward" and m != "extend"} == {
        "image_to_video": (9, [0]), "interpolate": (9, [0, 8]), "end_at_image": (9, [8]), "long_image_to_video": (64, [0])}
    # Extending keeps the given 9 frames and adds one window (9) after them, or before them backward.
    assert (by_mode["extend"]["frames"], by_mode["extend"]["given_frames"]) == (18, list(range(9)))
    assert (by_mode["extend_backward"]["frames"], by_mode["extend_backward"]["given_frames"]) == (18, list(range(9, 18)))
    for r in requests:
        assert len(read_video(out / r["folder"] / "video.mp4", 32, 32, 8)) == r["frames"], r
        assert made[f"contact_sheet_{r['folder']}"].startswith("![")
    experiment = client.get_experiment_by_name("videodit").experiment_id
    (run,) = client.search_runs([experiment], f"tags.`dagster.asset_key` = 'conditioned_videos' and tags.`dagster.run_id` = '{result.run_id}'")
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "conditioned_videos")}
    assert "conditioned_videos/manifest.json" in logged and f"conditioned_videos/{requests[0]['folder']}" in logged

    # A folder with a bad request beside a good one: the bad one is recorded with its reason, the good one made.
    folder = tmp_path / "requests"
    folder.mkdir()
    shutil.copy(DEFAULT_CONDITIONING_DIR / "circle_first.png", folder / "first.png")
    (folder / "requests.json").write_text(json.dumps([
        {"prompt": "a large red circle moves right", "image": "missing.png"},
        {"prompt": "a large red circle moves right", "image": "first.png", "extend": "first.png"},
        {"prompt": "a large red circle moves right", "image": "first.png", "frames": 5},
    ]))  # fmt: skip
    config = {"ops": {"conditioned_videos": {"config": {"folder": str(folder)}}}}
    again = materialize(ALL_ASSETS, selection=["conditioned_videos"], resources=_resources(root), instance=instance, run_config=config)
    bad = _metadata(again, "conditioned_videos")
    assert bad["videos"] == 1 and bad["rejected"] == 2
    missing, combined, good = json.loads((out / "manifest.json").read_text())["requests"]
    assert missing["status"] == "rejected" and missing["reason"] == f"request 0 (missing.png): {folder / 'missing.png'}: file not found"
    assert combined["status"] == "rejected" and combined["reason"].startswith("request 1 (first.png, first.png): --extend")
    assert (good["status"], good["mode"], good["frames"], good["given_frames"]) == ("generated", "image_to_video", 5, [0])
    assert not (out / requests[-1]["folder"]).exists()  # the last folder's videos are gone with its manifest


def test_served_bundle_serves_fp32_when_quantization_is_off_and_finds_its_int8_version_again(pipeline):
    root, instance, _, client = pipeline

    def serve(**config) -> dict:
        run_config = {"ops": {"served_bundle": {"config": config}}}
        return _metadata(materialize(ALL_ASSETS, selection=["served_bundle"], resources=_resources(root), instance=instance,
                                     run_config=run_config), "served_bundle")  # fmt: skip

    def pointer() -> dict:
        return json.loads((root / "artifacts" / "served_bundle" / "model.json").read_text())

    fp32_bundle = json.loads((root / "artifacts" / "onnx_models" / "model.json").read_text())["path"]
    off = serve(quantize=False)
    assert off["precision"] == "fp32" and off["decision"] == "no quantized bundle: fp32 v1 serves" and "int8_overall" not in off
    assert pointer() == {"path": fp32_bundle, "version": "1", "precision": "fp32"}
    assert str(alias_version(client, "videodit-onnx", CHAMPION).version) == "1"
    # A margin any score meets (both sides of one: test_promotion.py): the int8 copy is found, not registered again.
    held = serve(max_adherence_drop=1.0)
    assert held["precision"] == "int8" and held["decision"].endswith("v2 serves") and pointer()["version"] == "2"
    assert str(alias_version(client, "videodit-onnx", CHAMPION).version) == "2"
    assert len(client.search_model_versions("name = 'videodit-onnx'")) == 2


def test_the_bucket_table_is_part_of_a_trained_models_fingerprint():
    # The shards' checksums hold the clips, not the sampler's weights: a reweighted table trains another model.
    preset = load_preset("tiny")
    reweighted = replace(preset, buckets=tuple(replace(b, weight=2 * b.weight) if b.height != b.width else b for b in preset.buckets))
    for model in ("vae", "dit"):
        print_ = training_fingerprint(preset, model, "data", "code")
        assert training_fingerprint(load_preset("tiny"), model, "data", "code") == print_
        assert training_fingerprint(reweighted, model, "data", "code") != print_
    assert training_fingerprint(preset, "dit", "data", "code", vae="a") != training_fingerprint(preset, "dit", "data", "code", vae="b")


def test_same_data_and_code_reuse_the_registered_versions(pipeline):
    root, instance, _, client = pipeline
    again = materialize(ALL_ASSETS, selection=["vae_model", "video_latents", "dit_model"], resources=_resources(root), instance=instance)
    assert _metadata(again, "vae_model")["reused_existing_version"] is True
    assert _metadata(again, "dit_model")["reused_existing_version"] is True and _metadata(again, "dit_model")["trained_steps"] == 0
    assert len(client.search_model_versions("name = 'videodit-dit'")) == 1


# Lightning adds the callbacks that entry points of the group `lightning.pytorch.callbacks_factory` make to every
# Trainer: a kill point injected into the real `train_dit` of an unmodified graph run, on the child's path only.
HOLD_AFTER_STEP_10 = """
import time
import lightning as L

class HoldAfterStep10(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step > 10:  # ModelCheckpoint, which Lightning runs after us, wrote step 10 one batch ago
            open({holding!r}, "w").close()
            time.sleep(3600)

def callbacks():
    return [HoldAfterStep10()]
"""
TRAIN_DIT = """
from dagster import materialize
from dagster_project.definitions import defs
from dagster_project.defs.resources import DVCResource, MLflowTracking, Workspace

root = {root!r}
materialize(list(defs.assets), selection=["dit_model"], run_config={config!r},
            resources={{"workspace": Workspace(project_dir=root, preset="tiny"), "dvc": DVCResource(remote_url=root + "-remote"),
                       "mlflow_tracking": MLflowTracking(tracking_uri=f"sqlite:///{{root}}/mlflow.db")}})
"""


def _with_hold_callback(folder, holding) -> dict:
    """The environment of a child process whose Lightning Trainers hold after step 10 (and touch `holding`)."""
    (folder / "hold_after_step_10.py").write_text(HOLD_AFTER_STEP_10.format(holding=str(holding)))
    dist_info = folder / "hold_after_step_10-0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: hold-after-step-10\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text("[lightning.pytorch.callbacks_factory]\nhold = hold_after_step_10:callbacks\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


def test_killed_training_resumes_and_registers_exactly_one_version(pipeline, tmp_path):
    root, instance, _, client = pipeline
    config = {"ops": {"dit_model": {"config": {"dit_train": {"max_steps": 40}}}}}
    script, holding = tmp_path / "train.py", tmp_path / "holding"
    script.write_text(TRAIN_DIT.format(root=str(root), config=config))
    earlier = set((root / "artifacts" / "dit_model").glob("*/checkpoints/step000010.ckpt"))
    versions = len(client.search_model_versions("name = 'videodit-dit'"))
    log = tmp_path / "train.log"
    # The child holds its run just after the step-10 checkpoint and says so (`holding`), so the kill lands there on
    # any machine speed, never while last.ckpt is half written.
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=log.open("w"), env=_with_hold_callback(tmp_path, holding))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not holding.exists() and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # killed midway: no final checkpoint, nothing registered
    proc.wait()
    fresh = set((root / "artifacts" / "dit_model").glob("*/checkpoints/step000010.ckpt")) - earlier
    assert holding.exists() and len(fresh) == 1, f"training never held after its step-10 checkpoint: {log.read_text()[-2000:]}"
    (checkpoint,) = fresh
    assert not (checkpoint.parent / "step000020.ckpt").exists() and not (checkpoint.parents[1] / "final.ckpt").exists()
    assert len(client.search_model_versions("name = 'videodit-dit'")) == versions

    resumed = materialize(ALL_ASSETS, selection=["dit_model"], run_config=config, resources=_resources(root), instance=instance)
    logs = [e.message for e in instance.all_logs(resumed.run_id) if e.message]
    assert any(f"resuming from {checkpoint.parent / 'last.ckpt'}" in m for m in logs), [m for m in logs if "resum" in m or "reus" in m or "checkpoint" in m]
    assert any("step 40/40" in m for m in logs)
    metadata = _metadata(resumed, "dit_model")
    assert metadata["registered_version"] == f"videodit-dit v{versions + 1}" and metadata["trained_steps"] == 30
    assert len(client.search_model_versions("name = 'videodit-dit'")) == versions + 1


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


@pytest.fixture(scope="module")
def forced(pipeline):
    """dit_model materialized again with force_new_version on the preset's config, whose version the graph registered
    (and whose folder holds the finished run's last.ckpt): (its result, the versions there were before)."""
    root, instance, _, client = pipeline
    before = {v.version for v in client.search_model_versions("name = 'videodit-dit'")}
    config = {"ops": {"dit_model": {"config": {"force_new_version": True}}}}
    return materialize(ALL_ASSETS, selection=["dit_model"], run_config=config, resources=_resources(root), instance=instance), before


def test_force_new_version_trains_a_fresh_run_and_registers_a_new_version(pipeline, forced):
    _, _, result, client = pipeline
    again, before = forced
    first, metadata = _metadata(result, "dit_model"), _metadata(again, "dit_model")
    assert metadata["fingerprint"] == first["fingerprint"] and metadata["reused_existing_version"] is False
    assert metadata["trained_steps"] == 20  # all of max_steps, not the 0 left after the finished run's last.ckpt
    (new,) = {v.version for v in client.search_model_versions("name = 'videodit-dit'")} - before
    assert metadata["registered_version"] == f"videodit-dit v{new}"
    folder = Path(metadata["checkpoint"]).parent
    assert folder.name == f"{first['fingerprint']}-{again.run_id}" and folder != Path(first["checkpoint"]).parent
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["last.ckpt", "step000010.ckpt", "step000020.ckpt"]


def _use_store(root):
    """`models:/` URIs resolve through the process-wide URIs (conftest puts them back after the test)."""
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{root}/mlflow.db")


def _assert_described(model, output: np.ndarray):
    """`output` is what the model's logged signature says it returns: its dtype, its rank and every fixed size."""
    (spec,) = model.metadata.get_output_schema().inputs
    assert output.dtype == spec.type and len(output.shape) == len(spec.shape)
    assert all(size in (-1, got) for size, got in zip(spec.shape, output.shape)), (spec.shape, output.shape)


def test_every_registered_model_loads_and_predicts_as_its_signature_says(pipeline):
    root, *_ = pipeline
    _use_store(root)
    onnx = mlflow.pyfunc.load_model("models:/videodit-onnx@champion")
    videos = onnx.predict(["a red circle moves left", "a small blue square moves up"], params={"seed": 3, "steps": 2})
    assert videos.shape == (2, 9, 32, 32, 3) and videos.dtype == np.uint8
    _assert_described(onnx, videos)
    with pytest.raises(ValueError, match="param 'encoding' is 'gif': use one of array, mp4"):
        onnx.predict(["a red circle moves left"], params={"encoding": "gif"})

    # The DiT: the pipeline itself, and its pyfunc (one seed per video, the prompts a param) through the same sampler.
    dit = mlflow.pytorch.load_model("models:/videodit-dit@champion")
    prompts = ["a red circle moves left", "a small blue square moves up"]
    direct = dit.generate(prompts, [3, 4], replace(dit.sampler, steps=2))
    served = mlflow.pyfunc.load_model("models:/videodit-dit@champion")
    videos = served.predict(np.array([3, 4]), params={"prompts": prompts, "steps": 2})
    assert videos.shape == (2, 9, 32, 32, 3) and np.array_equal(videos, direct)
    _assert_described(served, videos)
    with pytest.raises(mlflow.exceptions.MlflowException, match="dtype of input float64 does not match expected dtype int64"):
        served.predict(np.array([3.0]), params={"prompts": prompts[:1]})  # the schema is enforced

    vae = mlflow.pytorch.load_model("models:/videodit-vae@champion")
    clips, _ = validation_clips(root / "artifacts" / "training_clips", 2)
    served = mlflow.pyfunc.load_model("models:/videodit-vae@champion")
    reconstructions = served.predict(np.stack(clips))
    assert reconstructions.shape == (2, 9, 32, 32, 3) and np.array_equal(reconstructions, np.stack(reconstruct_clips(vae.vae, clips)))
    _assert_described(served, reconstructions)


def test_the_onnx_champion_answers_over_rest_with_mlflow_models_serve(pipeline):
    """`make serve`: POST /invocations gives the videos the pyfunc gives in-process (videodit/generation/rest.py)."""
    root, *_ = pipeline
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prompts = ["a red circle moves left", "a small blue square moves up"]
    with serving("models:/videodit-onnx@champion", port, f"sqlite:///{root}/mlflow.db") as url:
        videos = invoke(url, prompts, seed=3, steps=2)
        decoded = invoke(url, prompts, seed=3, steps=2, encoding="mp4")
    _use_store(root)
    model = mlflow.pyfunc.load_model("models:/videodit-onnx@champion")
    expected = model.predict(prompts, params={"seed": 3, "steps": 2})
    assert videos.dtype == np.uint8 and videos.shape[0] == 2
    np.testing.assert_array_equal(videos, expected)
    # Base64 MP4s: the same videos through H.264 (lossy), as the pyfunc encodes them in-process. Not bit for bit:
    # two encodes of the same frames in two processes differed by a few levels in a few % of pixels under load.
    encoded = model.predict(prompts, params={"seed": 3, "steps": 2, "encoding": "mp4"})
    in_process = [mp4_frames(base64.b64decode(video)) for video in encoded]
    assert decoded.shape == videos.shape and min(psnr(a, b) for a, b in zip(decoded, in_process)) > 40
    assert min(psnr(a, b) for a, b in zip(decoded, videos)) > 28


# Loads each model folder with nothing of videodit on the path but the model's own `code/` (MLflow adds it on load):
# `-S` skips site-packages' .pth files, among them the editable install's, and PYTHONPATH names site-packages alone.
LOAD_WITH_OWN_CODE = """
import importlib.util, json, sys
import numpy as np
import mlflow.pyfunc

assert importlib.util.find_spec("videodit") is None, "videodit is importable without a model"
inputs = {
    "videodit-onnx": (["a red circle moves left"], {"steps": 1}),
    "videodit-dit": (np.array([0]), {"prompts": ["a red circle moves left"], "steps": 1}),
    "videodit-vae": (np.zeros((1, 5, 32, 32, 3), np.uint8), None),
}
found = {}
for name, folder in json.loads(sys.argv[1]).items():
    for module in [m for m in sys.modules if m.split(".")[0] == "videodit"]:
        del sys.modules[module]  # each model imports its own copy
    output = mlflow.pyfunc.load_model(folder).predict(*inputs[name])
    files = {m.__file__ for n, m in sys.modules.items() if n.split(".")[0] == "videodit"}
    found[name] = {"shape": list(output.shape), "from_its_code": all(f.startswith(folder + "/code/videodit/") for f in files)}
print(json.dumps(found))
"""


def test_registered_models_carry_their_code_and_requirements_that_install(pipeline, tmp_path):
    root, *_ = pipeline
    _use_store(root)
    folders = {name: mlflow.artifacts.download_artifacts(f"models:/{name}@champion", dst_path=str(tmp_path / name))
               for name in ("videodit-onnx", "videodit-dit", "videodit-vae")}  # fmt: skip
    for name, folder in folders.items():
        assert (Path(folder) / "code" / "videodit" / "__init__.py").is_file(), name
        requirements = [Requirement(line) for line in (Path(folder) / "requirements.txt").read_text().split()]
        assert "videodit" not in {r.name for r in requirements} and "mlflow" in {r.name for r in requirements}
        # Each pinned to the distribution installed here, which the child below runs on (whether an index serves
        # these names and versions cannot be asked offline).
        assert all(importlib.metadata.version(r.name) in r.specifier for r in requirements), requirements
    site_packages = sysconfig.get_paths()["purelib"]
    child = subprocess.run([sys.executable, "-S", "-c", LOAD_WITH_OWN_CODE, json.dumps(folders)], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": site_packages}, cwd=tmp_path, timeout=300)  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    assert json.loads(child.stdout.splitlines()[-1]) == {
        "videodit-onnx": {"shape": [1, 9, 32, 32, 3], "from_its_code": True},
        "videodit-dit": {"shape": [1, 9, 32, 32, 3], "from_its_code": True},
        "videodit-vae": {"shape": [1, 5, 32, 32, 3], "from_its_code": True},
    }


def _champion(client, name: str) -> str:
    return str(alias_version(client, name, CHAMPION).version)


def _evaluate_with_champion_scoring(root, instance, client, overall: float):
    """model_evaluation of the pointer's version, the champion's recorded `overall` set to `overall` first."""
    client.set_model_version_tag("videodit-dit", _champion(client, "videodit-dit"), f"{SCORE_TAG_PREFIX}overall", f"{overall:.6f}")
    return _metadata(materialize(ALL_ASSETS, selection=["model_evaluation"], resources=_resources(root), instance=instance), "model_evaluation")


def test_a_challenger_that_beats_the_champion_takes_the_alias_through_model_evaluation(pipeline, forced):
    """The real evaluation scores the forced version (dit_model's pointer); the champion keeps its scores from the
    graph's evaluation, the same one (no re-scoring), but its `overall` is set out of any real score's reach: a tiny
    model's scores are noise, so the decision is known only against 1.5 (never beaten) and -0.5 (always)."""
    root, instance, _, client = pipeline
    challenger = _metadata(forced[0], "dit_model")["registered_version"].removeprefix("videodit-dit v")
    champion = _champion(client, "videodit-dit")
    assert champion != challenger

    kept = _evaluate_with_champion_scoring(root, instance, client, 1.5)
    assert not kept["promoted"] and kept["decision"].endswith(f"does not beat champion v{champion} overall=1.5000")
    assert _champion(client, "videodit-dit") == champion

    taken = _evaluate_with_champion_scoring(root, instance, client, -0.5)
    assert taken["promoted"] and taken["decision"].endswith(f" beats champion v{champion} overall=-0.5000")  # not re-scored
    assert taken["challenger"] == f"videodit-dit v{challenger}" and taken["overall"] == kept["overall"]
    assert _champion(client, "videodit-dit") == challenger
    assert client.get_model_version("videodit-dit", challenger).tags["promotion.promoted"] == "True"
    vae_version = client.get_model_version("videodit-dit", challenger).tags["vae_version"]
    assert _champion(client, "videodit-vae") == vae_version  # the VAE the champion was trained with


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


def test_a_launchpad_model_field_reaches_the_trained_and_registered_model(pipeline):
    root, instance, _, client = pipeline
    config = {"ops": {"dit_model": {"config": {"dit": {"hidden_size": 32, "num_heads": 2}, "dit_train": {"max_steps": 2}}}}}
    result = materialize(ALL_ASSETS, selection=["dit_model"], run_config=config, resources=_resources(root), instance=instance)
    metadata = _metadata(result, "dit_model")
    assert metadata["trained_steps"] == 2 and metadata["reused_existing_version"] is False
    run = client.get_run(metadata["mlflow_run_id"])
    assert (run.data.params["dit.hidden_size"], run.data.params["dit.num_heads"]) == ("32", "2")
    _use_store(root)
    model = mlflow.pytorch.load_model(f"models:/videodit-dit/{metadata['registered_version'].rsplit('v', 1)[1]}")
    assert model.dit_config.hidden_size == model.ema.final_layer.linear.in_features == 32


def test_no_held_out_combination_or_phrasing_reaches_the_training_clips(pipeline):
    """The unseen split of evaluation asks for what training never showed: check the clips it trained on."""
    root = pipeline[0]
    shards = ClipShards(root / "artifacts" / "training_clips")
    trained = shards.index  # every bucket, both splits
    assert len(trained) == 34 and sorted(set(trained["bucket"])) == sorted(VIDEO_BUCKETS)
    combos = {tuple(json.loads(a)[k] for k in ("shape", "colour", "size", "direction")) for a in trained["attributes"]}
    assert combos and not combos & set(SHAPES_DOMAIN.held_out_combinations)
    assert held_out_phrasings(trained["caption"], SHAPES_DOMAIN) == []
    report = json.loads((root / "artifacts" / "model_evaluation" / "evaluation.json").read_text())
    assert {"overall", "seen_overall", "shape_ci_low", "shape_ci_high"} <= set(report["metrics"])
    assert (root / "artifacts" / "model_evaluation" / "confusion_unseen.png").stat().st_size > 0
