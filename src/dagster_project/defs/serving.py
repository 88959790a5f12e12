"""Stage 7, serving: the champion leaves PyTorch as an ONNX bundle, an int8 copy serves where its quality holds,
and videos are generated with onnxruntime."""

import importlib.resources
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import mlflow
import numpy as np
from dagster import AssetCheckResult, AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset, asset_check
from PIL import Image
from pydantic import Field

from dagster_project.config import SamplerSection, overrides

from dagster_project.defs.evaluation import REGISTRY_RETRY, evaluation_fingerprint, registered_model
from dagster_project.defs.training import DIT_MODEL, read_pointer, write_pointer
from dagster_project.failures import failing_on_corrupt_shards
from dagster_project.defs.resources import MLflowTracking, TrackedRun, Workspace
from videodit.data.synthetic import SHAPES_DOMAIN
from videodit.evaluation.contact_sheet import png_data_uri
from videodit.evaluation.model_report import ADHERENCE
from videodit.export import bundle_psnr, end_to_end_parity, export_pipeline, graph_parity, quantize_bundle, score_bundle
from videodit.generation import BundleSpec, GeneratedClip, OnnxVideoGenerator, write_outputs
from videodit.generation.modes import folder_request, generate_request, read_requests
from videodit.generation.prompt_rewriter import rewrite_prompts
from videodit.generation.outputs import CONTACT_SHEET_PNG, MANIFEST_JSON
from videodit.generation.mlflow_model import BUNDLE_ARTIFACT, SIGNATURE, OnnxBundleModel
from videodit.models.text_encoder import default_text_encoder
from videodit.sampling import prompt_seeds
from videodit.tracking.registry import (
    CHAMPION, FINGERPRINT_TAG, PRECISION_TAG, alias_version, find_version, fingerprint, record_scores, register_version,
    serve_precision,
)  # fmt: skip
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
# The int8 copy's decoder is calibrated on what it will decode: the fp32 bundle's latents for the default prompts
# (every colour, shape, size and direction) at these seeds, in every bucket.
CALIBRATION_SEEDS = (0, 1)
# Drawn by `make conditioning-examples`; package data, so the default resolves wherever the package is installed.
DEFAULT_CONDITIONING_DIR = importlib.resources.files("videodit.generation") / "examples"


SERVING_METRIC = "overall"  # the unseen split's adherence, as it promotes a DiT, decides which precision serves


class OnnxModelsConfig(Config):
    sampler: SamplerSection = Field(default_factory=SamplerSection)  # the bundle's defaults; bundle.json records them


def _registered_bundle(run: TrackedRun, bundle_dir: Path, print_: str, description: str, tags: dict[str, str]):
    """The `videodit-onnx` version with this fingerprint: the one registered before, or the bundle logged as a pyfunc
    and registered now (`challenger`), tagged with its precision."""
    version = find_version(run.client, ONNX_MODEL, print_)
    if version is None:
        info = mlflow.pyfunc.log_model(name="onnx_bundle", python_model=OnnxBundleModel(), artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
                                       signature=SIGNATURE, code_paths=code_paths(),
                                       pip_requirements=pip_requirements(OnnxBundleModel.__module__))  # fmt: skip
        version = register_version(run.client, ONNX_MODEL, info.model_id, run.run_id, print_, description,
                                   {**tags, PRECISION_TAG: BundleSpec.load(bundle_dir).precision})  # fmt: skip
    return version


def _champion_checkpoint(workspace: Workspace, version) -> Path:
    """The champion's checkpoint: this project's own when it trained it, else from the version's MLflow run."""
    pointer = read_pointer(workspace, "dit_model")
    if str(pointer["version"]) == str(version.version) and Path(pointer["checkpoint"]).is_file():
        return Path(pointer["checkpoint"])
    return registered_checkpoint(version, workspace.artifacts("onnx_models") / f"dit-v{version.version}")


@asset(group_name="serving", code_version=code_version(export_pipeline.__module__, OnnxBundleModel.__module__), deps=[registered_model], retry_policy=REGISTRY_RETRY, kinds={"onnx", "mlflow"})
def onnx_models(context: AssetExecutionContext, config: OnnxModelsConfig, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """The champion's text encoder, caption conditioning, DiT step and VAE decoder as ONNX, parity-checked,
    registered as a `videodit-onnx` version (fp32); `served_bundle` decides what serves."""
    with mlflow_tracking.asset_run(context, workspace) as run:
        champion = alias_version(run.client, DIT_MODEL, CHAMPION)
        if champion is None:
            raise RuntimeError(f"{DIT_MODEL} has no {CHAMPION} alias in {run.tracking_uri}: materialize model_evaluation first")
        preset = workspace.config(overrides(config, ["sampler"]))
        print_ = fingerprint(dit=champion.tags.get(FINGERPRINT_TAG, champion.version), sampler=asdict(preset.sampler),
                             buckets=[asdict(b) for b in preset.buckets], code=context.assets_def.code_versions_by_key[context.asset_key])  # fmt: skip
        out_dir = workspace.artifacts("onnx_models") / f"bundle-{print_}"
        pipeline = DiTModule.load_from_checkpoint(_champion_checkpoint(workspace, champion), map_location="cpu").eval()
        text_encoder = default_text_encoder()
        sources = {DIT_MODEL: f"models:/{DIT_MODEL}/{champion.version}", "dit_run_id": champion.run_id, "fingerprint": print_}
        started = time.monotonic()
        export_pipeline(pipeline, text_encoder, out_dir, preset.sampler, preset.fps, sources, preset.buckets)
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
        version = _registered_bundle(run, out_dir, print_, f"ONNX bundle of {DIT_MODEL} v{champion.version}",
                                     {"dit_version": str(champion.version)})  # fmt: skip
        write_pointer(workspace, "onnx_models", path=str(out_dir), version=version.version)
    finite = [p for bucket in psnrs.values() for p in bucket if np.isfinite(p)]
    return MaterializeResult(
        metadata={
            "bundle": MetadataValue.path(str(out_dir)),
            "registered_version": f"{ONNX_MODEL} v{version.version}",
            "source": f"{DIT_MODEL} v{champion.version}",
            "export_seconds": round(export_s, 1),
            "max_graph_abs_diff": max(diffs.values()),
            "min_end_to_end_psnr_db": min(finite) if finite else float("inf"),
            "graph_parity": MetadataValue.json(diffs),
            "end_to_end_psnr_db": MetadataValue.json(psnrs),
        }
    )


def _parity(workspace: Workspace) -> dict:
    return json.loads((workspace.artifacts("onnx_models") / PARITY_FILE).read_text())


@asset_check(asset=onnx_models, blocking=True, description=f"Every ONNX graph, at every bucket, is within {MAX_GRAPH_DIFF} of PyTorch.")
def onnx_graphs_match_pytorch(workspace: Workspace) -> AssetCheckResult:
    diffs = _parity(workspace)["graph_max_abs_diff"]
    return AssetCheckResult(passed=max(diffs.values()) <= MAX_GRAPH_DIFF, metadata={k: float(v) for k, v in diffs.items()})


@asset_check(asset=onnx_models, blocking=True, description=f"Same prompt, seed and steps, in every bucket: ONNX and PyTorch videos ≥ {MIN_PARITY_PSNR_DB} dB apart.")
def onnx_videos_match_pytorch(workspace: Workspace) -> AssetCheckResult:
    psnrs = _parity(workspace)["end_to_end_psnr_db"]
    passed = all(min(bucket) >= MIN_PARITY_PSNR_DB for bucket in psnrs.values())
    return AssetCheckResult(passed=passed, metadata={"psnr_db": MetadataValue.json(psnrs)})


def read_prompts(prompts_file: Path) -> list[str]:
    """The non-empty lines of a prompts file, one prompt each."""
    if not prompts_file.is_file():
        raise FileNotFoundError(f"prompts file not found: {prompts_file}")
    return [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]


class ServedBundleConfig(Config):
    quantize: bool = True  # False: no int8 copy is made and the fp32 bundle serves
    # How far below the fp32 bundle's unseen-split adherence (overall, in [0, 1]) the int8 copy may score and serve.
    max_adherence_drop: float = 0.02


@asset(group_name="serving", code_version=code_version(quantize_bundle.__module__, score_bundle.__module__, OnnxBundleModel.__module__),
       deps=[onnx_models], retry_policy=REGISTRY_RETRY, kinds={"onnx", "mlflow"})  # fmt: skip
def served_bundle(context: AssetExecutionContext, config: ServedBundleConfig, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """The bundle `videodit-onnx@champion` names: onnx_models' fp32 bundle, or its int8 copy (dit.onnx's MatMuls
    and vae_decoder.onnx's convolutions quantized, a version of its own) when the copy's prompt adherence on the
    unseen split, read from onnxruntime's videos as model_evaluation reads the DiT's, is within
    `max_adherence_drop` of the fp32 bundle's. The copy's end-to-end PSNR against the fp32 bundle is reported; the
    decision is tagged on both versions."""
    exported = read_pointer(workspace, "onnx_models")
    preset = workspace.config()
    with mlflow_tracking.asset_run(context, workspace) as run:
        fp32 = run.client.get_model_version(ONNX_MODEL, exported["version"])
        bundles, versions, psnrs = {"fp32": Path(exported["path"])}, {"fp32": fp32}, []
        if config.quantize:
            # The fp32 fingerprint covers the exporting code, quantize_bundle's module among it.
            calibration = read_prompts(Path(DEFAULT_PROMPTS_FILE))
            print_ = fingerprint(bundle=fp32.tags[FINGERPRINT_TAG], quantization="int8", calibration=[calibration, CALIBRATION_SEEDS])
            bundles["int8"] = quantize_bundle(bundles["fp32"], workspace.artifacts("served_bundle") / f"bundle-{print_}",
                                              calibration, list(CALIBRATION_SEEDS))  # fmt: skip
            versions["int8"] = _registered_bundle(run, bundles["int8"], print_, f"int8 copy of {ONNX_MODEL} v{fp32.version}",
                                                  {"dit_version": fp32.tags["dit_version"], "fp32_version": str(fp32.version)})  # fmt: skip
            psnrs = bundle_psnr(bundles["fp32"], bundles["int8"], list(PARITY_PROMPTS), [0, 1])
            run.client.set_model_version_tag(ONNX_MODEL, versions["int8"].version, "psnr_vs_fp32_db", f"{min(psnrs):.2f}")
            run.client.log_metric(run.run_id, "int8/min_psnr_vs_fp32_db", min(psnrs))
        scored_under = evaluation_fingerprint(workspace, preset.evaluation, BundleSpec.load(bundles["fp32"]).sampler)
        scores = {}
        for precision, version in versions.items():
            scores[precision] = score_bundle(bundles[precision], preset.evaluation, SHAPES_DOMAIN)
            record_scores(run.client, ONNX_MODEL, version.version, scores[precision], scored_under)
            for name in ADHERENCE:
                run.client.log_metric(run.run_id, f"{precision}/{name}", scores[precision][name])
        int8_score = scores["int8"][SERVING_METRIC] if config.quantize else None
        decision = serve_precision(run.client, ONNX_MODEL, fp32, scores["fp32"][SERVING_METRIC], versions.get("int8"), int8_score,
                                   SERVING_METRIC, config.max_adherence_drop)  # fmt: skip
        context.log.info(decision.reason)
        precision = next(p for p, v in versions.items() if str(v.version) == decision.served_version)
        write_pointer(workspace, "served_bundle", path=str(bundles[precision]), version=decision.served_version, precision=precision)
    return MaterializeResult(
        metadata={
            "served_version": f"{ONNX_MODEL} v{decision.served_version} (@{CHAMPION})",
            "precision": precision,
            "bundle": MetadataValue.path(str(bundles[precision])),
            "decision": decision.reason,
            "decision_tags": MetadataValue.json(decision.as_tags()),
            **{f"{p}_{name}": MetadataValue.float(scores[p][name]) for p in scores for name in ADHERENCE},
            **({"int8_version": f"{ONNX_MODEL} v{versions['int8'].version}", "int8_min_psnr_vs_fp32_db": min(psnrs),
                "int8_psnr_vs_fp32_db": MetadataValue.json(psnrs)} if psnrs else {}),  # fmt: skip
        }
    )


class GenerationSettings(Config):
    """Prompts and seed; `steps` and `guidance` override the bundle's sampler (bundle.json) for this batch."""

    prompts_file: str = str(DEFAULT_PROMPTS_FILE)
    seed: int = 0
    steps: int | None = None  # None: the bundle's default
    guidance: float | None = None
    # "module:function" rewriting each prompt before generation (videodit.generation.prompt_rewriter); "" = off.
    prompt_rewriter: str = ""


@asset(group_name="serving", code_version="3", deps=[served_bundle], kinds={"onnxruntime"})
def generated_videos(context: AssetExecutionContext, config: GenerationSettings, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """Batch generation with onnxruntime alone, in every bucket the bundle was trained at (an image bucket as
    1-frame clips): per bucket, an MP4 and a GIF per prompt, a contact sheet and a manifest in a folder of its own
    (e.g. 9x32x32/, 1x32x32/)."""
    bundle = read_pointer(workspace, "served_bundle")
    given = read_prompts(Path(config.prompts_file))
    prompts = rewrite_prompts(given, config.prompt_rewriter) if config.prompt_rewriter else given
    generator = OnnxVideoGenerator(bundle["path"])
    seeds = prompt_seeds(config.seed, len(prompts))
    out_dir = workspace.artifacts("generated_videos")
    base_settings = {
        **asdict(generator.sampler(config.steps, config.guidance)),
        "model": f"{ONNX_MODEL} v{bundle['version']}",
        "source_versions": generator.spec.source_versions,
        "provider": generator.providers[0],
        "precision": generator.spec.precision,
        "session_settings": generator.settings,
        **({"prompt_rewriter": config.prompt_rewriter} if config.prompt_rewriter else {}),
    }
    seconds, sheets = {}, {}
    for bucket in generator.spec.buckets:
        started = time.monotonic()
        videos = generator.generate(prompts, seeds, config.steps, config.guidance, bucket.frames, bucket.height, bucket.width)
        seconds[bucket.name] = time.monotonic() - started
        context.log.info(f"{bucket.name}: generated {len(videos)} videos in {seconds[bucket.name]:.1f}s with {generator.providers[0]}")
        clips = [GeneratedClip(f"{i:03d}", p, s, v, given_prompt=g if config.prompt_rewriter else None)
                 for i, (p, s, v, g) in enumerate(zip(prompts, seeds, videos, given))]  # fmt: skip
        settings = {**base_settings, "frames": bucket.frames, "height": bucket.height, "width": bucket.width,
                    "seconds_total": round(seconds[bucket.name], 3), "seconds_per_video": round(seconds[bucket.name] / len(videos), 3)}  # fmt: skip
        write_outputs(out_dir / bucket.name, clips, generator.spec.fps, settings)
        sheets[bucket.name] = Image.open(out_dir / bucket.name / CONTACT_SHEET_PNG)
    videos_total = len(prompts) * len(sheets)
    with mlflow_tracking.asset_run(context, workspace) as run:
        run.client.log_artifacts(run.run_id, str(out_dir), "generated_videos")
        run.client.log_metric(run.run_id, "seconds_per_video", sum(seconds.values()) / videos_total)
    return MaterializeResult(
        metadata={
            "videos": videos_total,
            "seconds_per_video": round(sum(seconds.values()) / videos_total, 3),
            "model": base_settings["model"],
            "folder": MetadataValue.path(str(out_dir)),
            **{f"contact_sheet_{name}": MetadataValue.md(f"![{name}]({png_data_uri(sheet, max_width=900)})")
               for name, sheet in sheets.items()},  # fmt: skip
        }
    )


class ConditioningSettings(Config):
    """A folder of requests.json + the files it names (videodit.generation.modes.read_requests); `seed` for the
    requests that give none (request i: seed + i); `steps` and `guidance` override the bundle's sampler."""

    folder: str = str(DEFAULT_CONDITIONING_DIR)
    seed: int = 0
    steps: int | None = None  # None: the bundle's default
    guidance: float | None = None


@asset(group_name="serving", code_version="1", deps=[served_bundle], kinds={"onnxruntime"})
def conditioned_videos(context: AssetExecutionContext, config: ConditioningSettings, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """Videos made from given frames with onnxruntime alone: an image animated, a clip ending at an image, an
    interpolation, a video extended or one longer than the window, one folder per request (its MP4, GIF, contact
    sheet with the given frames outlined, manifest) and a manifest.json of every request's mode and given frames.

    A request that cannot be made (a missing or unreadable file, --image with --extend, a malformed entry) is
    recorded as rejected with its reason and the others still generate: one bad input loses no other video."""
    bundle = read_pointer(workspace, "served_bundle")
    folder = Path(config.folder)
    entries = read_requests(folder)  # no list of requests at all: nothing to record, the asset fails naming the file
    generator = OnnxVideoGenerator(bundle["path"])
    out_dir = workspace.artifacts("conditioned_videos")
    shutil.rmtree(out_dir)  # a manifest for this folder only, not one beside the last folder's videos
    out_dir.mkdir()
    model = f"{ONNX_MODEL} v{bundle['version']}"
    sampler = asdict(generator.sampler(config.steps, config.guidance))
    records, sheets, seconds = [], {}, 0.0
    for index, (entry, seed) in enumerate(zip(entries, prompt_seeds(config.seed, len(entries)))):
        record = {"index": index, "prompt": entry.get("prompt")}
        started = time.monotonic()
        try:
            request = replace(folder_request(entry, folder, seed), steps=config.steps, guidance=config.guidance)
            (video,), conditioning = generate_request(generator, request)
        except ValueError as exc:  # an InputError names its file; the rest name the key or flag at fault
            files = ", ".join(str(entry[k]) for k in ("image", "last_image", "extend") if isinstance(entry.get(k), str))
            reason = f"request {index}{f' ({files})' if files else ''}: {exc}"
            context.log.warning(f"rejected {reason}")
            records.append({**record, "status": "rejected", "reason": reason})
            continue
        took = time.monotonic() - started
        seconds += took
        name = f"{index:03d}_{conditioning['mode']}"
        clip = GeneratedClip("video", request.prompts[0], request.seeds[0], video, conditioning["given_frames"])
        settings = {**sampler, **conditioning, "model": model, "frames": video.shape[0], "height": video.shape[1],
                    "width": video.shape[2], "provider": generator.providers[0], "seconds": round(took, 3)}  # fmt: skip
        write_outputs(out_dir / name, [clip], generator.spec.fps, settings)
        sheets[name] = Image.open(out_dir / name / CONTACT_SHEET_PNG)
        records.append({**record, "status": "generated", "seed": request.seeds[0], "folder": name, "mode": conditioning["mode"],
                        "frames": video.shape[0], "given_frames": conditioning["given_frames"]})  # fmt: skip
        context.log.info(f"request {index}: {conditioning['mode']}, {video.shape[0]} frames in {took:.1f}s")
    rejected = [r for r in records if r["status"] == "rejected"]
    manifest = {"folder": str(folder), "model": model, **sampler, "requests": records}
    (out_dir / MANIFEST_JSON).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    made = len(records) - len(rejected)
    with mlflow_tracking.asset_run(context, workspace) as run:
        run.client.log_artifacts(run.run_id, str(out_dir), "conditioned_videos")
        run.client.log_metric(run.run_id, "videos", made)
        run.client.log_metric(run.run_id, "rejected_requests", len(rejected))
        if made:
            run.client.log_metric(run.run_id, "seconds_per_video", seconds / made)
    return MaterializeResult(
        metadata={
            "videos": made,
            "rejected": len(rejected),
            "rejections": MetadataValue.md("\n".join(f"- {r['reason']}" for r in rejected) or "none"),
            "model": model,
            "folder": MetadataValue.path(str(out_dir)),
            "manifest": MetadataValue.json(manifest),
            **{f"contact_sheet_{name}": MetadataValue.md(f"![{name}]({png_data_uri(sheet, max_width=900)})")
               for name, sheet in sheets.items()},  # fmt: skip
        }
    )
