"""Stage 6, serving: the champion leaves PyTorch as an ONNX bundle and generates videos with onnxruntime."""

import importlib.resources
import json
import time
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
from dagster import AssetCheckResult, AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset, asset_check
from PIL import Image
from pydantic import Field

from dagster_project.config import SamplerSection, overrides

from dagster_project.defs.evaluation import REGISTRY_RETRY, registered_model
from dagster_project.defs.training import DIT_MODEL, read_pointer
from dagster_project.failures import failing_on_corrupt_shards
from dagster_project.defs.resources import MLflowTracking, Workspace
from videodit.evaluation.contact_sheet import png_data_uri
from videodit.export import end_to_end_parity, export_pipeline, graph_parity
from videodit.files import write_text_atomically
from videodit.generation import GeneratedClip, OnnxVideoGenerator, write_outputs
from videodit.generation.outputs import CONTACT_SHEET_PNG
from videodit.generation.mlflow_model import BUNDLE_ARTIFACT, SIGNATURE, OnnxBundleModel
from videodit.models.text_encoder import default_text_encoder
from videodit.sampling import prompt_seeds
from videodit.tracking.registry import CHAMPION, FINGERPRINT_TAG, alias_version, find_version, fingerprint, register_version
from videodit.tracking.source import code_paths, code_version, pip_requirements
from videodit.training.datamodule import first_latents
from videodit.training.dit_module import DiTModule
from videodit.training.runs import registered_checkpoint

ONNX_MODEL = "videodit-onnx"
PARITY_FILE = "parity.json"
PARITY_PROMPTS = ("a large red circle moves left", "a small cyan triangle moves down")
MAX_GRAPH_DIFF = 1e-3
MIN_PARITY_PSNR_DB = 40.0
DEFAULT_PROMPTS_FILE = importlib.resources.files("videodit.generation") / "prompts.txt"


class OnnxModelsConfig(Config):
    sampler: SamplerSection = Field(default_factory=SamplerSection)  # the bundle's defaults; bundle.json records them


def _champion_checkpoint(workspace: Workspace, version) -> Path:
    """The champion's checkpoint: this project's own when it trained it, else from the version's MLflow run."""
    pointer = read_pointer(workspace, "dit_model")
    if str(pointer["version"]) == str(version.version) and Path(pointer["checkpoint"]).is_file():
        return Path(pointer["checkpoint"])
    return registered_checkpoint(version, workspace.artifacts("onnx_models") / f"dit-v{version.version}")


@asset(group_name="serving", code_version=code_version(export_pipeline.__module__, OnnxBundleModel.__module__), deps=[registered_model], retry_policy=REGISTRY_RETRY, kinds={"onnx", "mlflow"})
def onnx_models(context: AssetExecutionContext, config: OnnxModelsConfig, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """The champion's text encoder, caption conditioning, DiT step and VAE decoder as ONNX, parity-checked,
    registered as `videodit-onnx`."""
    with mlflow_tracking.asset_run(context, workspace) as run:
        champion = alias_version(run.client, DIT_MODEL, CHAMPION)
        if champion is None:
            raise RuntimeError(f"{DIT_MODEL} has no {CHAMPION} alias in {run.tracking_uri}: materialize model_evaluation first")
        preset = workspace.config(overrides(config, ["sampler"]))
        print_ = fingerprint(dit=champion.tags.get(FINGERPRINT_TAG, champion.version), sampler=asdict(preset.sampler),
                             code=context.assets_def.code_versions_by_key[context.asset_key])  # fmt: skip
        out_dir = workspace.artifacts("onnx_models") / f"bundle-{print_}"
        pipeline = DiTModule.load_from_checkpoint(_champion_checkpoint(workspace, champion), map_location="cpu").eval()
        text_encoder = default_text_encoder()
        sources = {DIT_MODEL: f"models:/{DIT_MODEL}/{champion.version}", "dit_run_id": champion.run_id, "fingerprint": print_}
        started = time.monotonic()
        export_pipeline(pipeline, text_encoder, out_dir, preset.sampler, preset.fps, sources)
        export_s = time.monotonic() - started
        with failing_on_corrupt_shards("video_latents"):
            captions, latents = first_latents(workspace.artifacts("video_latents"), 2)
        vae, dit = pipeline.vae, pipeline.ema
        diffs = graph_parity(out_dir, vae, dit, text_encoder, captions, latents)
        psnrs = end_to_end_parity(out_dir, vae, dit, text_encoder, list(PARITY_PROMPTS), [0, 1])
        parity = {"graph_max_abs_diff": diffs, "end_to_end_psnr_db": psnrs}
        (out_dir.parent / PARITY_FILE).write_text(json.dumps({**parity, "bundle": str(out_dir)}, indent=2))
        for name, value in diffs.items():
            run.client.log_metric(run.run_id, f"parity/{name.replace('/', '_')}", value)
        version = find_version(run.client, ONNX_MODEL, print_)
        if version is None:
            info = mlflow.pyfunc.log_model(name="onnx_bundle", python_model=OnnxBundleModel(), artifacts={BUNDLE_ARTIFACT: str(out_dir)},
                                           signature=SIGNATURE, code_paths=code_paths(),
                                           pip_requirements=pip_requirements(OnnxBundleModel.__module__))  # fmt: skip
            version = register_version(run.client, ONNX_MODEL, info.model_id, run.run_id, print_,
                                       f"ONNX bundle of {DIT_MODEL} v{champion.version}", {"dit_version": str(champion.version)})  # fmt: skip
        # The bundle follows the champion.
        run.client.set_registered_model_alias(ONNX_MODEL, CHAMPION, version.version)
        write_text_atomically(workspace.artifacts("onnx_models") / "bundle.json", json.dumps({"path": str(out_dir), "version": version.version}))
    finite = [p for p in psnrs if np.isfinite(p)]
    return MaterializeResult(
        metadata={
            "bundle": MetadataValue.path(str(out_dir)),
            "registered_version": f"{ONNX_MODEL} v{version.version} (@{CHAMPION})",
            "source": f"{DIT_MODEL} v{champion.version}",
            "export_seconds": round(export_s, 1),
            "max_graph_abs_diff": max(diffs.values()),
            "min_end_to_end_psnr_db": min(finite) if finite else float("inf"),
            "graph_parity": MetadataValue.json(diffs),
        }
    )


def _parity(workspace: Workspace) -> dict:
    return json.loads((workspace.artifacts("onnx_models") / PARITY_FILE).read_text())


@asset_check(asset=onnx_models, blocking=True, description=f"Every ONNX graph is within {MAX_GRAPH_DIFF} of PyTorch.")
def onnx_graphs_match_pytorch(workspace: Workspace) -> AssetCheckResult:
    diffs = _parity(workspace)["graph_max_abs_diff"]
    return AssetCheckResult(passed=max(diffs.values()) <= MAX_GRAPH_DIFF, metadata={k: float(v) for k, v in diffs.items()})


@asset_check(asset=onnx_models, blocking=True, description=f"Same prompt, seed and steps: ONNX and PyTorch videos ≥ {MIN_PARITY_PSNR_DB} dB apart.")
def onnx_videos_match_pytorch(workspace: Workspace) -> AssetCheckResult:
    psnrs = _parity(workspace)["end_to_end_psnr_db"]
    return AssetCheckResult(passed=min(psnrs) >= MIN_PARITY_PSNR_DB, metadata={"psnr_db": MetadataValue.json(psnrs)})


class GenerationSettings(Config):
    """Prompts and seed; `steps` and `guidance` override the bundle's sampler (bundle.json) for this batch."""

    prompts_file: str = str(DEFAULT_PROMPTS_FILE)
    seed: int = 0
    steps: int | None = None  # None: the bundle's default
    guidance: float | None = None


@asset(group_name="serving", code_version="1", deps=[onnx_models], kinds={"onnxruntime"})
def generated_videos(context: AssetExecutionContext, config: GenerationSettings, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """Batch generation with onnxruntime alone: an MP4 and a GIF per prompt, a contact sheet and a manifest."""
    bundle = json.loads((workspace.artifacts("onnx_models") / "bundle.json").read_text())
    prompts_file = Path(config.prompts_file)
    if not prompts_file.is_file():
        raise FileNotFoundError(f"prompts file not found: {prompts_file}")
    prompts = [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    generator = OnnxVideoGenerator(bundle["path"])
    seeds = prompt_seeds(config.seed, len(prompts))
    started = time.monotonic()
    videos = generator.generate(prompts, seeds, config.steps, config.guidance)
    seconds = time.monotonic() - started
    context.log.info(f"generated {len(videos)} videos in {seconds:.1f}s with {generator.providers[0]}")
    out_dir = workspace.artifacts("generated_videos")
    clips = [GeneratedClip(f"{i:03d}", p, s, v) for i, (p, s, v) in enumerate(zip(prompts, seeds, videos))]
    settings = {
        **asdict(generator.sampler(config.steps, config.guidance)),
        "model": f"{ONNX_MODEL} v{bundle['version']}",
        "source_versions": generator.spec.source_versions,
        "provider": generator.providers[0],
        "precision": generator.spec.precision,
        "session_settings": generator.settings,
        "seconds_total": round(seconds, 3),
        "seconds_per_video": round(seconds / len(videos), 3),
    }
    manifest = write_outputs(out_dir, clips, generator.spec.fps, settings)
    with mlflow_tracking.asset_run(context, workspace) as run:
        run.client.log_artifacts(run.run_id, str(out_dir), "generated_videos")
        run.client.log_metric(run.run_id, "seconds_per_video", seconds / len(videos))
    sheet = Image.open(out_dir / CONTACT_SHEET_PNG)
    return MaterializeResult(
        metadata={
            "videos": len(videos),
            "seconds_per_video": round(seconds / len(videos), 3),
            "model": settings["model"],
            "manifest": MetadataValue.path(str(manifest)),
            "contact_sheet": MetadataValue.md(f"![contact sheet]({png_data_uri(sheet, max_width=900)})"),
        }
    )
