"""Stage 5, training: the VAE, the latent cache and the DiT, each one MLflow run and one registered version.

A trained model is keyed by a fingerprint of (data, code version, config), its code version derived from the source
its training module runs (`videodit.tracking.source`, also the asset's Dagster code version): a killed run resumes
from its folder's last checkpoint, and a finished one is found again in the registry instead of training (and
registering) the same model twice (`videodit.training.runs`).
"""

import json
from dataclasses import asdict

from dagster import (
    AssetExecutionContext, Backoff, Config, DataVersion, MaterializeResult, MetadataValue, RetryPolicy, asset,
)  # fmt: skip
from lightning.pytorch.loggers import MLFlowLogger
from pydantic import Field
from safetensors import safe_open

from dagster_project.defs.curation import training_clips
from dagster_project.deployment import TRAINING_OP_TAGS  # one GPU per training step (run queue, Kubernetes)
from dagster_project.failures import failing_on_corrupt_shards
from dagster_project.reporting import DagsterProgress, log_video_samples
from dagster_project.config import DiTSection, DiTTrainSection, VAESection, VAETrainSection, overrides
from dagster_project.defs.resources import MLflowTracking, TrackedRun, Workspace
from videodit.config import ProjectConfig
from videodit.data.shards import CHECKSUMS_FILE
from videodit.evaluation.model_report import reconstruction_preview
from videodit.files import write_text_atomically
from videodit.tracking.registry import fingerprint, register_version
from videodit.tracking.source import code_version
from videodit.training.dit_module import train_dit
from videodit.training.latents import encode_latents, latent_files, latent_stats
from videodit.training.registered import GenerationPipeline, Reconstructor, log_model
from videodit.training.runs import TrainedModel, Train, train_or_reuse
from videodit.training.vae_module import VAEModule, train_vae

VAE_MODEL = "videodit-vae"
DIT_MODEL = "videodit-dit"
POINTER_FILE = "model.json"
SAMPLE_PROMPTS = ("a large red circle moves left", "a small blue square moves up", "a large yellow triangle moves right", "a small white circle moves down")  # fmt: skip
# A preempted or crashed training run is worth retrying: it resumes from its last checkpoint.
TRAINING_RETRY = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL)


class VAEModelConfig(Config):
    vae: VAESection = Field(default_factory=VAESection)
    vae_train: VAETrainSection = Field(default_factory=VAETrainSection)
    force_new_version: bool = False  # train and register again even when this exact model exists


class DiTModelConfig(Config):
    dit: DiTSection = Field(default_factory=DiTSection)
    dit_train: DiTTrainSection = Field(default_factory=DiTTrainSection)
    force_new_version: bool = False  # train and register again even when this exact model exists


def data_hash(workspace: Workspace) -> str:
    return fingerprint(checksums=(workspace.artifacts("training_clips") / CHECKSUMS_FILE).read_text())


def training_fingerprint(preset: ProjectConfig, model: str, data: str, code: str, **upstream: str) -> str:
    """What a trained `model` ("vae" or "dit") is a function of: the data, the code, its model and training sections,
    the bucket table (the sampler's weights and the 1-frame image buckets are not in the shards' checksums) and the
    fingerprints of the models it trains on."""
    return fingerprint(data=data, code=code, **{model: asdict(getattr(preset, model))}, train=asdict(getattr(preset, f"{model}_train")),
                       buckets=[asdict(b) for b in preset.buckets], **upstream)  # fmt: skip


def read_pointer(workspace: Workspace, asset_name: str) -> dict:
    path = workspace.artifacts(asset_name) / POINTER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: materialize {asset_name} first")
    return json.loads(path.read_text())


def write_pointer(workspace: Workspace, asset_name: str, **info) -> None:
    write_text_atomically(workspace.artifacts(asset_name) / POINTER_FILE, json.dumps(info, indent=2, default=str))


def _code_version(context: AssetExecutionContext) -> str:
    return context.assets_def.code_versions_by_key[context.asset_key]


def _train_or_reuse(context: AssetExecutionContext, workspace: Workspace, run: TrackedRun, model_name: str, print_: str,
                    config: VAEModelConfig | DiTModelConfig, train: Train) -> TrainedModel:  # fmt: skip
    """`train_or_reuse` in this asset's artifacts folder and MLflow run; a forced new version is keyed by this
    Dagster run, so that the run's retries resume it."""
    new_version_key = context.run_id if config.force_new_version else None
    root = workspace.artifacts(context.asset_key.to_user_string())
    return train_or_reuse(train, run.client, model_name, print_, root, run.run_id, run.tracking_uri, new_version_key, context.log)


def _logger(run: TrackedRun) -> MLFlowLogger:
    return MLFlowLogger(tracking_uri=run.tracking_uri, run_id=run.run_id, log_model=False)


def _log_and_register(run: TrackedRun, model_name: str, model, artifact: str, print_: str, card: str, tags: dict):
    return register_version(run.client, model_name, log_model(model, artifact).model_id, run.run_id, print_, card, tags)


def _training_result(context: AssetExecutionContext, model_name: str, version, trained: TrainedModel, print_: str, run: TrackedRun,
                     **pictures) -> MaterializeResult:  # fmt: skip
    return MaterializeResult(
        data_version=DataVersion(print_),
        metadata={
            "registered_version": f"{model_name} v{version.version}",
            "reused_existing_version": trained.version is not None,
            "trained_steps": trained.trained_steps,
            "fingerprint": print_,
            "code_version": _code_version(context),
            "mlflow_run_id": run.run_id,
            "checkpoint": MetadataValue.path(str(trained.checkpoint)),
            **pictures,
        },
    )


@asset(group_name="training", code_version=code_version(train_vae.__module__), deps=[training_clips], retry_policy=TRAINING_RETRY, kinds={"pytorch", "mlflow"}, op_tags=TRAINING_OP_TAGS)
def vae_model(context: AssetExecutionContext, config: VAEModelConfig, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """The causal video VAE, trained with Lightning on the curated clips; registered as `videodit-vae`."""
    preset = workspace.config(overrides(config, ["vae", "vae_train"]))
    shards_root = workspace.artifacts("training_clips")
    print_ = training_fingerprint(preset, "vae", data_hash(workspace), _code_version(context))
    with failing_on_corrupt_shards("training_clips"), mlflow_tracking.asset_run(context, workspace) as run:
        run.log_params({"fingerprint": print_, "code_version": _code_version(context), "vae": asdict(preset.vae), "train": asdict(preset.vae_train)})
        progress = DagsterProgress(context, preset.vae_train.max_steps)
        trained = _train_or_reuse(
            context, workspace, run, VAE_MODEL, print_, config,
            lambda out_dir, resume: train_vae(shards_root, preset, out_dir, _logger(run), resume, [progress]),
        )  # fmt: skip
        vae = VAEModule.load_from_checkpoint(trained.checkpoint, map_location="cpu").vae.eval()
        sheet = log_video_samples(run, *reconstruction_preview(vae, shards_root), "reconstructions", preset.fps, trained.checkpoint.parent)
        card = (f"Causal video VAE, preset `{workspace.preset}`, data `{run.tags['dvc.data_version']}`, fingerprint `{print_}`."
                f"\n\nConfig: `{json.dumps(asdict(preset.vae))}`")  # fmt: skip
        version = trained.version or _log_and_register(run, VAE_MODEL, Reconstructor(vae), "vae", print_, card, {"preset": workspace.preset})
        write_pointer(workspace, "vae_model", fingerprint=print_, version=version.version, run_id=run.run_id, checkpoint=str(trained.checkpoint))
    return _training_result(context, VAE_MODEL, version, trained, print_, run, reconstructions=sheet)


@asset(group_name="training", code_version=code_version(encode_latents.__module__), deps=[vae_model], kinds={"pytorch", "safetensors"}, op_tags=TRAINING_OP_TAGS)
def video_latents(context: AssetExecutionContext, workspace: Workspace) -> MaterializeResult:
    """Every curated clip encoded once by the VAE (and its caption by the text encoder): the DiT's training data."""
    pointer = read_pointer(workspace, "vae_model")
    vae = VAEModule.load_from_checkpoint(pointer["checkpoint"], map_location="cpu").vae.eval()
    out_dir = workspace.artifacts("video_latents")
    with failing_on_corrupt_shards("training_clips"):
        encode_latents(workspace.artifacts("training_clips"), vae, out_dir)
    shapes = {}  # per bucket, the default first
    for path in latent_files(out_dir, "train"):
        with safe_open(str(path), framework="pt") as f:
            shapes[f.metadata()["bucket"] or path.stem] = f.get_slice("latents").get_shape()
    shape = next(iter(shapes.values()))
    shift, scale = latent_stats(out_dir)
    context.log.info(f"encoded {sum(s[0] for s in shapes.values())} training clips in {len(shapes)} bucket(s); "
                     f"the default bucket's latents have shape {shape[1:]}")
    return MaterializeResult(
        data_version=DataVersion(fingerprint(vae=pointer["fingerprint"], data=data_hash(workspace), code=_code_version(context))),
        metadata={
            "train_clips": sum(s[0] for s in shapes.values()),
            "train_clips_per_bucket": MetadataValue.json({bucket: s[0] for bucket, s in shapes.items()}),
            "latent_shape": str(tuple(shape[1:])),
            "latent_shift": shift,
            "latent_scale": scale,
            "vae_version": pointer["version"],
            "path": MetadataValue.path(str(out_dir)),
        },
    )


@asset(group_name="training", code_version=code_version(train_dit.__module__), deps=[video_latents], retry_policy=TRAINING_RETRY, kinds={"pytorch", "mlflow"}, op_tags=TRAINING_OP_TAGS)
def dit_model(context: AssetExecutionContext, config: DiTModelConfig, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """The text-conditioned spacetime DiT trained on cached latents; registered as `videodit-dit` (challenger)."""
    preset = workspace.config(overrides(config, ["dit", "dit_train"]))
    vae_pointer = read_pointer(workspace, "vae_model")
    print_ = training_fingerprint(preset, "dit", data_hash(workspace), _code_version(context), vae=vae_pointer["fingerprint"])
    vae = VAEModule.load_from_checkpoint(vae_pointer["checkpoint"], map_location="cpu").vae
    with failing_on_corrupt_shards("video_latents"), mlflow_tracking.asset_run(context, workspace) as run:
        run.log_params({"fingerprint": print_, "code_version": _code_version(context), "vae_version": vae_pointer["version"],
                        "dit": asdict(preset.dit), "train": asdict(preset.dit_train)})  # fmt: skip
        progress = DagsterProgress(context, preset.dit_train.max_steps)
        trained = _train_or_reuse(
            context, workspace, run, DIT_MODEL, print_, config,
            lambda out_dir, resume: train_dit(workspace.artifacts("video_latents"), vae, preset, out_dir, _logger(run), resume, [progress]),
        )  # fmt: skip
        # The registered object is the whole generation pipeline (EMA DiT + VAE decoder + latent statistics + sampler):
        # `mlflow.pytorch.load_model(uri).generate(prompts)` makes videos, and so does its pyfunc (`registered.py`).
        pipeline = GenerationPipeline.load_from_checkpoint(trained.checkpoint, map_location="cpu").eval()
        samples = pipeline.generate(list(SAMPLE_PROMPTS), seeds=0)
        sheet = log_video_samples(run, list(samples), list(SAMPLE_PROMPTS), "samples", preset.fps, trained.checkpoint.parent)
        card = (f"Spacetime DiT (rectified flow) with VAE {VAE_MODEL} v{vae_pointer['version']}, preset `{workspace.preset}`, "
                f"data `{run.tags['dvc.data_version']}`, fingerprint `{print_}`.\n\nConfig: `{json.dumps(asdict(preset.dit))}`")  # fmt: skip
        version = trained.version or _log_and_register(
            run, DIT_MODEL, pipeline, "dit", print_, card,
            {"preset": workspace.preset, "vae_version": str(vae_pointer["version"])},
        )  # fmt: skip
        write_pointer(workspace, "dit_model", fingerprint=print_, version=version.version, run_id=run.run_id,
                       checkpoint=str(trained.checkpoint), vae_version=vae_pointer["version"])  # fmt: skip
    return _training_result(context, DIT_MODEL, version, trained, print_, run, samples=sheet)
