"""Stage 4, training: the VAE, the latent cache and the DiT, each one MLflow run and one registered version.

A training asset's output folder is keyed by a fingerprint of (data, code version, config): a killed run
resumes from that folder's last checkpoint, and a finished one is found again in the registry instead of
training (and registering) the same model twice.
"""

import json
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import mlflow
import numpy as np
from dagster import (
    AssetExecutionContext, Backoff, Config, DataVersion, MaterializeResult, MetadataValue, RetryPolicy, asset,
)  # fmt: skip
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from lightning.pytorch.loggers import MLFlowLogger
from safetensors import safe_open

from dagster_project.defs.curation import training_clips
from dagster_project.failures import failing_on_corrupt_shards
from dagster_project.reporting import DagsterProgress, log_video_samples
from dagster_project.overrides import with_overrides
from dagster_project.defs.resources import MLflowTracking, TrackedRun, Workspace
from videodit.data.shards import CHECKSUMS_FILE, ClipShards
from videodit.evaluation.model_report import reconstruct_clips
from videodit.files import write_text_atomically
from videodit.tracking.registry import find_version, fingerprint, register_version
from videodit.training.dit_module import DiTModule, train_dit
from videodit.training.latents import encode_latents, latent_stats
from videodit.training.trainer import resumable_checkpoint
from videodit.training.vae_module import VAEModule, train_vae

VAE_MODEL = "videodit-vae"
DIT_MODEL = "videodit-dit"
POINTER_FILE = "model.json"
FINAL_CHECKPOINT = "final.ckpt"
CHECKPOINT_ARTIFACT_DIR = "checkpoint"  # where the final checkpoint lies among a training run's MLflow artifacts
SAMPLE_PROMPTS = ("a large red circle moves left", "a small blue square moves up", "a large yellow triangle moves right", "a small white circle moves down")  # fmt: skip
# A preempted or crashed training run is worth retrying: it resumes from its last checkpoint.
TRAINING_RETRY = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL)
PIP_REQUIREMENTS = ["torch", "lightning", "videodit"]
TRAINING_ONLY = frozenset({"force_new_version"})  # a TrainingSettings field that is not a train-config override


class TrainingSettings(Config):
    """Overrides of the preset's training run (None keeps the preset's value)."""

    max_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    force_new_version: bool = False  # train and register again even when this exact model exists


def data_hash(workspace: Workspace) -> str:
    return fingerprint(checksums=(workspace.artifacts("training_clips") / CHECKSUMS_FILE).read_text())


def read_pointer(workspace: Workspace, asset_name: str) -> dict:
    path = workspace.artifacts(asset_name) / POINTER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: materialize {asset_name} first")
    return json.loads(path.read_text())


def _write_pointer(workspace: Workspace, asset_name: str, **info) -> None:
    write_text_atomically(workspace.artifacts(asset_name) / POINTER_FILE, json.dumps(info, indent=2, default=str))


def registered_checkpoint(version, out_dir: Path, tracking_uri: str | None = None) -> Path:
    """The final checkpoint of an already registered version: local if present, else from its MLflow run."""
    local = out_dir / FINAL_CHECKPOINT
    if not local.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        # A local artifact store downloads to <dst>/final.ckpt, a server to <dst>/checkpoint/final.ckpt: take the
        # path MLflow returns, from a scratch folder inside out_dir, so nothing is left behind but the checkpoint.
        with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
            downloaded = mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=f"{CHECKPOINT_ARTIFACT_DIR}/{FINAL_CHECKPOINT}",
                dst_path=scratch, tracking_uri=tracking_uri,
            )  # fmt: skip
            Path(downloaded).rename(local)
    return local


def _train_or_reuse(context, run: TrackedRun, model_name: str, print_: str, out_dir: Path, force: bool, train):
    """(existing version or None, final checkpoint): the registered version with this fingerprint is reused;
    otherwise `train(resume_from)` runs, resuming a killed run from its last checkpoint."""
    existing = None if force else find_version(run.client, model_name, print_)
    if existing is not None:
        context.log.info(f"{model_name} v{existing.version} already holds this data, code and config: reusing it")
        return existing, registered_checkpoint(existing, out_dir, run.tracking_uri)
    resume = resumable_checkpoint(out_dir, context.log)
    if resume is not None:
        context.log.info(f"resuming from {resume}")
    module = train(resume)
    final = out_dir / FINAL_CHECKPOINT
    module.trainer.save_checkpoint(final)
    run.client.log_artifact(run.run_id, str(final), CHECKPOINT_ARTIFACT_DIR)
    return None, final


def _logger(run: TrackedRun) -> MLFlowLogger:
    return MLFlowLogger(tracking_uri=run.tracking_uri, run_id=run.run_id, log_model=False)


def _log_and_register(run: TrackedRun, model_name: str, model, artifact: str, signature, print_: str, card: str, tags: dict):
    info = mlflow.pytorch.log_model(model, name=artifact, signature=signature, serialization_format="pickle", pip_requirements=PIP_REQUIREMENTS)
    return register_version(run.client, model_name, info.model_id, run.run_id, print_, card, tags)


def _training_result(model_name: str, version, reused: bool, print_: str, run: TrackedRun, checkpoint: Path, **pictures) -> MaterializeResult:
    return MaterializeResult(
        data_version=DataVersion(print_),
        metadata={
            "registered_version": f"{model_name} v{version.version}",
            "reused_existing_version": reused,
            "fingerprint": print_,
            "mlflow_run_id": run.run_id,
            "checkpoint": MetadataValue.path(str(checkpoint)),
            **pictures,
        },
    )


# code_version 3 (vae) / 2 (dit): the model configs moved to videodit.models, so models pickled before cannot load.
@asset(group_name="training", code_version="3", deps=[training_clips], retry_policy=TRAINING_RETRY, kinds={"pytorch", "mlflow"})
def vae_model(context: AssetExecutionContext, config: TrainingSettings, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """The causal video VAE, trained with Lightning on the curated clips; registered as `videodit-vae`."""
    preset = workspace.models()
    preset = replace(preset, vae_train=with_overrides(preset.vae_train, config, TRAINING_ONLY))
    shards_root = workspace.artifacts("training_clips")
    print_ = fingerprint(data=data_hash(workspace), code=context.assets_def.code_versions_by_key[context.asset_key],
                         vae=asdict(preset.vae), train=asdict(preset.vae_train))  # fmt: skip
    out_dir = workspace.artifacts("vae_model") / print_
    with failing_on_corrupt_shards("training_clips"), mlflow_tracking.asset_run(context, workspace) as run:
        run.log_params({"fingerprint": print_, "vae": asdict(preset.vae), "train": asdict(preset.vae_train)})
        progress = DagsterProgress(context, preset.vae_train.max_steps)
        existing, checkpoint = _train_or_reuse(
            context, run, VAE_MODEL, print_, out_dir, config.force_new_version,
            lambda resume: train_vae(shards_root, preset, out_dir, _logger(run), resume, [progress]),
        )  # fmt: skip
        vae = VAEModule.load_from_checkpoint(checkpoint, map_location="cpu").vae.eval()
        val = ClipShards(shards_root).split("val").head(4)
        clips = [ClipShards(shards_root).frames(r.shard, int(r.row)) for r in val.itertuples()]
        recon = reconstruct_clips(vae, clips)
        pairs = [v for c, r in zip(clips, recon) for v in (c, r)]
        labels = [t for caption in val["caption"] for t in (f"real: {caption}", "reconstruction")]
        sheet = log_video_samples(run, pairs, labels, "reconstructions", preset.fps, out_dir)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1, -1), "video")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1, -1), "reconstruction")]),
        )
        card = (f"Causal video VAE, preset `{workspace.preset}`, data `{run.tags['dvc.data_version']}`, fingerprint `{print_}`."
                f"\n\nConfig: `{json.dumps(asdict(preset.vae))}`")  # fmt: skip
        version = existing or _log_and_register(run, VAE_MODEL, vae, "vae", signature, print_, card, {"preset": workspace.preset})
        _write_pointer(workspace, "vae_model", fingerprint=print_, version=version.version, run_id=run.run_id, checkpoint=str(checkpoint))
    return _training_result(VAE_MODEL, version, existing is not None, print_, run, checkpoint, reconstructions=sheet)


@asset(group_name="training", code_version="2", deps=[vae_model], kinds={"pytorch", "safetensors"})
def video_latents(context: AssetExecutionContext, workspace: Workspace) -> MaterializeResult:
    """Every curated clip encoded once by the VAE (and its caption by the text encoder): the DiT's training data."""
    pointer = read_pointer(workspace, "vae_model")
    vae = VAEModule.load_from_checkpoint(pointer["checkpoint"], map_location="cpu").vae.eval()
    out_dir = workspace.artifacts("video_latents")
    with failing_on_corrupt_shards("training_clips"):
        encode_latents(workspace.artifacts("training_clips"), vae, out_dir)
    with safe_open(str(out_dir / "train.safetensors"), framework="pt") as f:
        shape = f.get_slice("latents").get_shape()
    shift, scale = latent_stats(out_dir)
    context.log.info(f"encoded {shape[0]} training clips to latents of shape {shape[1:]}")
    return MaterializeResult(
        data_version=DataVersion(fingerprint(vae=pointer["fingerprint"], data=data_hash(workspace))),
        metadata={
            "train_clips": shape[0],
            "latent_shape": str(tuple(shape[1:])),
            "latent_shift": shift,
            "latent_scale": scale,
            "vae_version": pointer["version"],
            "path": MetadataValue.path(str(out_dir)),
        },
    )


@asset(group_name="training", code_version="2", deps=[video_latents], retry_policy=TRAINING_RETRY, kinds={"pytorch", "mlflow"})
def dit_model(context: AssetExecutionContext, config: TrainingSettings, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """The text-conditioned spacetime DiT trained on cached latents; registered as `videodit-dit` (challenger)."""
    preset = workspace.models()
    preset = replace(preset, dit_train=with_overrides(preset.dit_train, config, TRAINING_ONLY))
    vae_pointer = read_pointer(workspace, "vae_model")
    print_ = fingerprint(data=data_hash(workspace), vae=vae_pointer["fingerprint"], dit=asdict(preset.dit),
                         train=asdict(preset.dit_train), code=context.assets_def.code_versions_by_key[context.asset_key])  # fmt: skip
    out_dir = workspace.artifacts("dit_model") / print_
    vae = VAEModule.load_from_checkpoint(vae_pointer["checkpoint"], map_location="cpu").vae
    with failing_on_corrupt_shards("video_latents"), mlflow_tracking.asset_run(context, workspace) as run:
        run.log_params({"fingerprint": print_, "vae_version": vae_pointer["version"], "dit": asdict(preset.dit), "train": asdict(preset.dit_train)})
        progress = DagsterProgress(context, preset.dit_train.max_steps)
        existing, checkpoint = _train_or_reuse(
            context, run, DIT_MODEL, print_, out_dir, config.force_new_version,
            lambda resume: train_dit(workspace.artifacts("video_latents"), vae, preset, out_dir, _logger(run), resume, [progress]),
        )  # fmt: skip
        pipeline = DiTModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
        samples = pipeline.generate(list(SAMPLE_PROMPTS), seed=0)
        sheet = log_video_samples(run, list(samples), list(SAMPLE_PROMPTS), "samples", preset.fps, out_dir)
        dit = preset.dit
        signature = ModelSignature(
            inputs=Schema([
                TensorSpec(np.dtype(np.float32), (-1, dit.latent_channels, -1, -1, -1), "latents"),
                TensorSpec(np.dtype(np.float32), (-1,), "timestep"),
                TensorSpec(np.dtype(np.float32), (-1, -1, dit.text_dim), "text"),
                TensorSpec(np.dtype(np.bool_), (-1, -1), "text_mask"),
            ]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, dit.latent_channels, -1, -1, -1), "velocity")]),
        )  # fmt: skip
        card = (f"Spacetime DiT (rectified flow) with VAE {VAE_MODEL} v{vae_pointer['version']}, preset `{workspace.preset}`, "
                f"data `{run.tags['dvc.data_version']}`, fingerprint `{print_}`.\n\nConfig: `{json.dumps(asdict(preset.dit))}`")  # fmt: skip
        # The registered object is the whole generation pipeline (EMA DiT + VAE decoder + latent statistics):
        # `mlflow.pytorch.load_model(uri).generate(prompts)` makes videos.
        version = existing or _log_and_register(
            run, DIT_MODEL, pipeline, "dit", signature, print_, card,
            {"preset": workspace.preset, "vae_version": str(vae_pointer["version"])},
        )  # fmt: skip
        _write_pointer(workspace, "dit_model", fingerprint=print_, version=version.version, run_id=run.run_id,
                       checkpoint=str(checkpoint), vae_version=vae_pointer["version"])  # fmt: skip
    return _training_result(DIT_MODEL, version, existing is not None, print_, run, checkpoint, samples=sheet)
