"""Stage 6, evaluation and registry: score the challenger, promote it when it beats the champion."""

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult, AssetExecutionContext, Backoff, Config, MaterializeResult, MetadataValue, RetryPolicy, asset,
    asset_check,
)  # fmt: skip
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from pydantic import Field

from dagster_project.defs.training import DIT_MODEL, VAE_MODEL, data_hash, dit_model, read_pointer
from dagster_project.failures import failing_on_corrupt_shards
from dagster_project.reporting import log_video_samples
from dagster_project.config import EvaluationSection, SamplerSection, overrides
from dagster_project.defs.resources import MLflowTracking, TrackedRun, Workspace
from videodit.data.config import Bucket
from videodit.data.synthetic import SHAPES_DOMAIN, unseen_clips
from videodit.evaluation.conditioning_report import ConditionedSample, evaluate_conditioning
from videodit.evaluation.confusion import confusion_sheet
from videodit.evaluation.contact_sheet import png_data_uri
from videodit.evaluation.model_report import (
    LOWER_IS_BETTER, EvaluationConfig, bucket_metrics, bucket_table, evaluate_buckets, evaluate_pipeline,
)  # fmt: skip
from videodit.config import ProjectConfig
from videodit.sampling import SamplerConfig
from videodit.tracking.registry import (
    CHALLENGER, CHAMPION, EVAL_CONFIG_TAG, SCORE_TAG_PREFIX, Rescorer, alias_version, fingerprint, missing_model_files,
    promote_if_better, record_scores,
)  # fmt: skip
from videodit.training.dit_module import DiTModule
from videodit.training.runs import registered_checkpoint

REPORT_FILE = "evaluation.json"
CONFUSION_FILE = "confusion_unseen.png"  # asked vs drawn, per attribute, on the unseen split
BUCKETS_TABLE = "per_bucket.json"  # the per-bucket table, an MLflow table artifact
EVALUATION_HEADING = "\n\nEvaluation:\n"  # a model card's scores follow it, up to the card's end
# The registry is a network service when MLflow runs as a server: a blip deserves a retry.
REGISTRY_RETRY = RetryPolicy(max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL)


class ModelEvaluationConfig(Config):
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    sampler: SamplerSection = Field(default_factory=SamplerSection)  # what the challenger (and a re-scored champion) sample with


def _load(checkpoint: Path) -> DiTModule:
    return DiTModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()


def _evaluate(
    workspace: Workspace, settings: EvaluationConfig, sampler: SamplerConfig, pipeline: DiTModule, buckets: tuple[Bucket, ...] = ()
) -> tuple[dict, dict, list[dict]]:
    """(metrics, samples, per-bucket rows) of `pipeline` on this project's clips; the rows only for the video
    buckets of `buckets` (a re-scored champion needs the promoting metrics alone)."""
    clips = workspace.artifacts("training_clips")
    with failing_on_corrupt_shards("training_clips"):
        default = evaluate_pipeline(pipeline, clips, settings, sampler, SHAPES_DOMAIN)
        return *default, evaluate_buckets(pipeline, clips, buckets, settings, sampler, SHAPES_DOMAIN, default) if buckets else []


def _evaluate_conditioning(preset: ProjectConfig, pipeline: DiTModule) -> tuple[dict, dict]:
    """(metrics, videos per mode) of the conditioned modes, on clips of the unseen split's combinations drawn at
    the preset's clip size (never trained on)."""
    settings = preset.evaluation
    if not settings.conditioned_prompts:
        return {}, {}
    samples = [ConditionedSample(p, c) for p, c in unseen_clips(preset.synthetic, settings.conditioned_prompts, settings.seed)]
    return evaluate_conditioning(pipeline, samples, preset.sampler, SHAPES_DOMAIN, settings.seed, settings.long_video_windows)


def evaluation_fingerprint(workspace: Workspace, settings: EvaluationConfig, sampler: SamplerConfig) -> str:
    """What the scores depend on: the evaluation settings, the sampler and the clips they are measured against
    (not which score decides, nor the quality floor, nor the other buckets' table: changing those compares the
    same scores)."""
    # Neither the per-bucket rows nor the conditioned modes are registry scores: their settings change no promotion.
    unscored = ("primary_metric", "min_overall", "prompts_per_other_bucket", "conditioned_prompts", "long_video_windows")
    scored_by = {k: v for k, v in asdict(settings).items() if k not in unscored}
    return fingerprint(evaluation=scored_by, sampler=asdict(sampler), data=data_hash(workspace))


def _rescorer(workspace: Workspace, settings: EvaluationConfig, sampler: SamplerConfig, run: TrackedRun) -> Rescorer:
    """Scores a registered version (the champion) under `settings`, from its checkpoint in its MLflow run."""

    def rescore(version: ModelVersion) -> dict[str, float]:
        checkpoint = registered_checkpoint(version, workspace.artifacts("model_evaluation") / f"dit-v{version.version}", run.tracking_uri)
        return _evaluate(workspace, settings, sampler, _load(checkpoint))[0]

    return rescore


@asset(group_name="evaluation", code_version="1", deps=[dit_model], retry_policy=REGISTRY_RETRY, kinds={"mlflow"})
def model_evaluation(context: AssetExecutionContext, config: ModelEvaluationConfig, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """Prompt adherence (colour, shape, size, direction read back from pixels), an FVD-like score on the
    validation clips and VAE PSNR/SSIM, in the default bucket and (a table) in every video bucket; the challenger
    takes `champion` when it wins on the primary metric, the default bucket's (the champion is evaluated again
    first when its scores came from another evaluation)."""
    preset = workspace.config(overrides(config, ["evaluation", "sampler"]))
    settings, sampler = preset.evaluation, preset.sampler
    pointer = read_pointer(workspace, "dit_model")
    with mlflow_tracking.asset_run(context, workspace) as run:
        pipeline = _load(Path(pointer["checkpoint"]))  # one load serves every measure
        metrics, samples, per_bucket = _evaluate(workspace, settings, sampler, pipeline, preset.buckets)
        conditioned, conditioned_videos = _evaluate_conditioning(preset, pipeline)
        evaluation_hash = evaluation_fingerprint(workspace, settings, sampler)
        run.log_params({"evaluation": settings.__dict__, "sampler": asdict(sampler), "evaluation_hash": evaluation_hash,
                        "dit_version": pointer["version"]})  # fmt: skip
        for name, value in {**metrics, **conditioned, **bucket_metrics(per_bucket)}.items():
            run.client.log_metric(run.run_id, f"eval/{name}", value)
        run.client.log_table(run.run_id, pd.DataFrame(per_bucket), f"evaluation/{BUCKETS_TABLE}")
        challenger = record_scores(run.client, DIT_MODEL, pointer["version"], metrics, evaluation_hash)
        decision = promote_if_better(
            run.client, DIT_MODEL, challenger, settings.primary_metric, _rescorer(workspace, settings, sampler, run),
            settings.primary_metric not in LOWER_IS_BETTER,
        )  # fmt: skip
        if decision.promoted:  # the champion pipeline's VAE is the VAE it was trained with
            run.client.set_registered_model_alias(VAE_MODEL, CHAMPION, pointer["vae_version"])
        context.log.info(decision.reason)
        out_dir = workspace.artifacts("model_evaluation")
        splits = samples["splits"]
        per_clip = pd.concat([pd.DataFrame(split["per_clip"]).assign(split=name, prompt=split["prompts"]) for name, split in splits.items()])
        per_clip.to_csv(out_dir / "prompt_adherence.csv", index=False)
        run.client.log_artifact(run.run_id, str(out_dir / "prompt_adherence.csv"), "evaluation")
        unseen = splits["unseen"]
        shown = min(8, len(unseen["generated"]))
        sheet = log_video_samples(run, unseen["generated"][:shown], unseen["prompts"][:shown], "evaluation", preset.fps, out_dir)
        confusion = confusion_sheet(unseen["per_clip"], SHAPES_DOMAIN)
        confusion.save(out_dir / CONFUSION_FILE)
        run.client.log_artifact(run.run_id, str(out_dir / CONFUSION_FILE), "evaluation")
        mode_sheets = {
            f"conditioned_{mode}": log_video_samples(run, shown["videos"], shown["prompts"], f"conditioned_{mode}", preset.fps,
                                                     out_dir, shown["given_frames"])
            for mode, shown in conditioned_videos.items()
        }  # fmt: skip
        report = {"metrics": metrics, "conditioned": conditioned, "per_bucket": per_bucket, "decision": decision.__dict__,
                  "dit_version": pointer["version"], "min_overall": settings.min_overall}  # fmt: skip
        (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return MaterializeResult(
        metadata={
            **{name: MetadataValue.float(value) for name, value in {**metrics, **conditioned}.items()},
            "challenger": f"{DIT_MODEL} v{pointer['version']}",
            "mlflow_run_id": run.run_id,
            "champion_before": f"v{decision.champion_version}" if decision.champion_version else "none",
            "champion_score_before": decision.champion_score if decision.champion_score is not None else "none",
            "evaluation_hash": evaluation_hash,
            "promoted": decision.promoted,
            "decision": decision.reason,
            "generated": sheet,
            "confusion_unseen": MetadataValue.md(f"![confusion, unseen split]({png_data_uri(confusion)})"),
            **mode_sheets,  # the given frames outlined
            "per_bucket": MetadataValue.md(bucket_table(per_bucket)),
        }
    )


@asset_check(asset=model_evaluation, description="The challenger's prompt adherence is above the preset's floor.")
def evaluation_meets_minimum(workspace: Workspace) -> AssetCheckResult:
    report = json.loads((workspace.artifacts("model_evaluation") / REPORT_FILE).read_text())
    overall = report["metrics"]["overall"]
    return AssetCheckResult(passed=overall >= report["min_overall"], metadata={"overall": overall, "minimum": report["min_overall"]})


def _with_evaluation(description: str | None, report: dict) -> str:
    """A model card with its "Evaluation:" section (scores and decision) replaced by the one in `report`."""
    card = "\n".join(f"- {k}: {v:.4f}" for k, v in report["metrics"].items())
    before = (description or "").split(EVALUATION_HEADING)[0]
    return f"{before}{EVALUATION_HEADING}{card}\n\nDecision: {report['decision']['reason']}"


@asset(group_name="evaluation", code_version="1", deps=[model_evaluation], retry_policy=REGISTRY_RETRY, kinds={"mlflow"})
def registered_model(context: AssetExecutionContext, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """The registry after this run: which versions are `champion` and `challenger`, with their model cards."""
    client = mlflow_tracking.client(workspace)
    report = json.loads((workspace.artifacts("model_evaluation") / REPORT_FILE).read_text())
    table, metadata = [], {}
    for name in (DIT_MODEL, VAE_MODEL):
        for alias in (CHAMPION, CHALLENGER):
            version = alias_version(client, name, alias)
            metadata[f"{name}@{alias}"] = f"v{version.version}" if version else "none"
            if version is not None:
                scores = {k.removeprefix(SCORE_TAG_PREFIX): v for k, v in version.tags.items() if k.startswith(SCORE_TAG_PREFIX)}
                table.append({"model": name, "alias": alias, "version": version.version, **scores, "evaluation": version.tags.get(EVAL_CONFIG_TAG)})
    evaluated = client.get_model_version(DIT_MODEL, report["dit_version"])
    client.update_model_version(DIT_MODEL, evaluated.version, _with_evaluation(evaluated.description, report))
    return MaterializeResult(
        metadata={
            **metadata,
            "tracking_uri": mlflow_tracking.uri(workspace),
            "aliases": MetadataValue.md(pd.DataFrame(table).to_markdown(index=False) if table else "no versions"),
        }
    )


def _champion_problem(client: MlflowClient, name: str) -> str | None:
    """Why `name@champion` cannot be loaded (no alias, not READY, model files missing from the store), or None."""
    version = alias_version(client, name, CHAMPION)
    if version is None:
        return f"no {CHAMPION} alias"
    if version.status != "READY":
        return f"v{version.version} is {version.status}"
    missing = missing_model_files(name, version.version)
    return f"v{version.version} lacks {', '.join(missing)} in the artifact store" if missing else None


@asset_check(asset=registered_model, blocking=True, description="`champion` points at a registered version whose files exist.")
def champion_alias_resolves(workspace: Workspace, mlflow_tracking: MLflowTracking) -> AssetCheckResult:
    client = mlflow_tracking.client(workspace)
    found = {name: _champion_problem(client, name) for name in (DIT_MODEL, VAE_MODEL)}
    return AssetCheckResult(passed=not any(found.values()), metadata={name: problem or "ok" for name, problem in found.items()})

