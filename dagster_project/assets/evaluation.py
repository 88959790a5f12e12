"""Stage 5, evaluation and registry: score the challenger, promote it when it beats the champion."""

import json

import pandas as pd
from dagster import (
    AssetCheckResult, AssetExecutionContext, Backoff, Config, MaterializeResult, MetadataValue, RetryPolicy, asset,
    asset_check,
)  # fmt: skip

from dagster_project.assets.training import DIT_MODEL, VAE_MODEL, dit_model, read_pointer
from dagster_project.failures import failing_on_corrupt_shards
from dagster_project.reporting import log_video_samples
from dagster_project.overrides import with_overrides
from dagster_project.resources import MLflowTracking, Workspace
from videodit.data.synthetic import SHAPES_DOMAIN
from videodit.evaluation.model_report import LOWER_IS_BETTER, evaluate_pipeline
from videodit.tracking.registry import CHALLENGER, CHAMPION, SCORE_TAG_PREFIX, alias_version, promote_if_better
from videodit.training.dit_module import DiTModule

REPORT_FILE = "evaluation.json"
# The registry is a network service when MLflow runs as a server: a blip deserves a retry.
REGISTRY_RETRY = RetryPolicy(max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL)


class EvaluationSettings(Config):
    """Overrides of the preset's evaluation (None keeps the preset's value)."""

    primary_metric: str | None = None  # overall, colour, shape, size, direction, frechet_distance, vae_psnr, vae_ssim
    n_prompts: int | None = None
    steps: int | None = None
    min_overall: float | None = None


@asset(group_name="evaluation", code_version="1", deps=[dit_model], retry_policy=REGISTRY_RETRY, kinds={"mlflow"})
def model_evaluation(context: AssetExecutionContext, config: EvaluationSettings, workspace: Workspace, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """Prompt adherence (colour, shape, size, direction read back from pixels), an FVD-like score on the
    validation clips and VAE PSNR/SSIM; the challenger takes `champion` when it wins on the primary metric."""
    settings = with_overrides(workspace.evaluation(), config)
    pointer = read_pointer(workspace, "dit_model")
    pipeline = DiTModule.load_from_checkpoint(pointer["checkpoint"], map_location="cpu").eval()
    with mlflow_tracking.asset_run(context, workspace) as run:
        with failing_on_corrupt_shards("training_clips"):
            metrics, samples = evaluate_pipeline(pipeline, workspace.artifacts("training_clips"), settings, SHAPES_DOMAIN)
        run.log_params({"evaluation": settings.__dict__, "dit_version": pointer["version"]})
        for name, value in metrics.items():
            run.client.log_metric(run.run_id, f"eval/{name}", value)
            run.client.set_model_version_tag(DIT_MODEL, pointer["version"], f"{SCORE_TAG_PREFIX}{name}", f"{value:.6f}")
        challenger = run.client.get_model_version(DIT_MODEL, pointer["version"])
        decision = promote_if_better(
            run.client, DIT_MODEL, challenger, settings.primary_metric, settings.primary_metric not in LOWER_IS_BETTER
        )
        if decision.promoted:  # the champion pipeline's VAE is the VAE it was trained with
            run.client.set_registered_model_alias(VAE_MODEL, CHAMPION, pointer["vae_version"])
        context.log.info(decision.reason)
        out_dir = workspace.artifacts("model_evaluation")
        per_clip = pd.DataFrame(samples["per_clip"])
        per_clip.to_csv(out_dir / "prompt_adherence.csv", index=False)
        run.client.log_artifact(run.run_id, str(out_dir / "prompt_adherence.csv"), "evaluation")
        shown = min(8, len(samples["generated"]))
        sheet = log_video_samples(run, samples["generated"][:shown], samples["prompts"][:shown], "evaluation", workspace.models().fps, out_dir)
        report = {"metrics": metrics, "decision": decision.__dict__, "dit_version": pointer["version"], "min_overall": settings.min_overall}
        (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return MaterializeResult(
        metadata={
            **{name: MetadataValue.float(value) for name, value in metrics.items()},
            "challenger": f"{DIT_MODEL} v{pointer['version']}",
            "champion_before": f"v{decision.champion_version}" if decision.champion_version else "none",
            "champion_score_before": decision.champion_score if decision.champion_score is not None else "none",
            "promoted": decision.promoted,
            "decision": decision.reason,
            "generated": sheet,
        }
    )


@asset_check(asset=model_evaluation, description="The challenger's prompt adherence is above the preset's floor.")
def evaluation_meets_minimum(workspace: Workspace) -> AssetCheckResult:
    report = json.loads((workspace.artifacts("model_evaluation") / REPORT_FILE).read_text())
    overall = report["metrics"]["overall"]
    return AssetCheckResult(passed=overall >= report["min_overall"], metadata={"overall": overall, "minimum": report["min_overall"]})


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
                table.append({"model": name, "alias": alias, "version": version.version, **scores})
    challenger = alias_version(client, DIT_MODEL, CHALLENGER)
    if challenger is not None:
        card = "\n".join(f"- {k}: {v:.4f}" for k, v in report["metrics"].items())
        client.update_model_version(DIT_MODEL, challenger.version, f"{challenger.description}\n\nEvaluation:\n{card}\n\nDecision: {report['decision']['reason']}")
    return MaterializeResult(
        metadata={
            **metadata,
            "tracking_uri": mlflow_tracking.uri(workspace),
            "aliases": MetadataValue.md(pd.DataFrame(table).to_markdown(index=False) if table else "no versions"),
        }
    )


@asset_check(asset=registered_model, blocking=True, description="`champion` points at a registered version whose files exist.")
def champion_alias_resolves(workspace: Workspace, mlflow_tracking: MLflowTracking) -> AssetCheckResult:
    client = mlflow_tracking.client(workspace)
    found = {}
    for name in (DIT_MODEL, VAE_MODEL):
        version = alias_version(client, name, CHAMPION)
        found[name] = version is not None and version.status == "READY" and bool(client.get_run(version.run_id))
    return AssetCheckResult(passed=all(found.values()), metadata={k: str(v) for k, v in found.items()})
