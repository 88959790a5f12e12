"""Everything Dagster loads: assets by stage, their checks, resources, jobs, schedules and sensors, in one place."""

from dagster import (
    AssetKey, AssetSelection, DefaultScheduleStatus, DefaultSensorStatus, Definitions, EventLogEntry, RunRequest,
    ScheduleDefinition, SensorEvaluationContext, SkipReason, asset_sensor, define_asset_job, in_process_executor,
)  # fmt: skip

from dagster_project.assets.curation import training_clips
from dagster_project.assets.evaluation import champion_alias_resolves, evaluation_meets_minimum, model_evaluation, registered_model
from dagster_project.assets.ingestion import raw_videos, video_metadata
from dagster_project.assets.serving import generated_videos, onnx_graphs_match_pytorch, onnx_models, onnx_videos_match_pytorch
from dagster_project.assets.training import dit_model, vae_model, video_latents
from dagster_project.assets.validation import accepted_fraction_above_threshold, every_clip_accounted_for, validated_clips
from dagster_project.resources import DVCResource, MLflowTracking, Workspace

data_assets = [raw_videos, video_metadata, validated_clips, training_clips]
model_assets = [vae_model, video_latents, dit_model, model_evaluation, registered_model]
serving_assets = [onnx_models, generated_videos]
asset_checks = [
    accepted_fraction_above_threshold, every_clip_accounted_for, evaluation_meets_minimum, champion_alias_resolves,
    onnx_graphs_match_pytorch, onnx_videos_match_pytorch,
]  # fmt: skip

ingestion_job = define_asset_job(
    "ingestion_job", selection=AssetSelection.assets(*data_assets), description="Ingest, probe, validate and curate the data."
)
training_job = define_asset_job(
    "training_job",
    selection=AssetSelection.assets(training_clips).downstream(),
    description="Curate, train the VAE and DiT, evaluate, update the registry, export and generate.",
)
retraining_job = define_asset_job(
    "retraining_job",
    selection=AssetSelection.assets(raw_videos).downstream() - AssetSelection.assets(raw_videos),
    description="Everything downstream of a new data version of raw_videos.",
)
full_pipeline = define_asset_job("full_pipeline", selection=AssetSelection.all(), description="The whole graph.")

weekly_retraining = ScheduleDefinition(
    name="weekly_retraining",
    job=training_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00
    default_status=DefaultScheduleStatus.STOPPED,
)


@asset_sensor(asset_key=AssetKey("raw_videos"), job=retraining_job, default_status=DefaultSensorStatus.STOPPED)
def retrain_on_new_data(context: SensorEvaluationContext, asset_event: EventLogEntry):
    """A new DVC data version of raw_videos retrains once: the run key is the data version."""
    version = asset_event.asset_materialization.tags.get("dagster/data_version") if asset_event.asset_materialization else None
    if version is None:
        return SkipReason("raw_videos materialization without a data version")
    return RunRequest(run_key=version, tags={"videodit/data_version": version})


defs = Definitions(
    assets=data_assets + model_assets + serving_assets,
    asset_checks=asset_checks,
    jobs=[ingestion_job, training_job, retraining_job, full_pipeline],
    schedules=[weekly_retraining],
    sensors=[retrain_on_new_data],
    resources={"workspace": Workspace(), "dvc": DVCResource(), "mlflow_tracking": MLflowTracking()},
    # One machine by default: steps share one process instead of re-importing torch, GX and DVC each.
    # To scale out, swap in dagster_k8s.k8s_job_executor (or the multiprocess executor) here.
    executor=in_process_executor,
)
