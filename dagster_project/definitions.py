"""Everything Dagster loads: assets by stage, their checks, resources, jobs and schedules, in one place."""


from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from dagster_project.assets.curation import training_clips
from dagster_project.assets.ingestion import raw_videos, video_metadata
from dagster_project.assets.validation import (
    accepted_fraction_above_threshold,
    every_clip_accounted_for,
    validated_clips,
)
from dagster_project.resources import DVCResource, Workspace

data_assets = [raw_videos, video_metadata, validated_clips, training_clips]

ingestion_job = define_asset_job(
    "ingestion_job",
    selection=AssetSelection.assets(*data_assets),
    description="Ingest, probe, validate and curate the data source.",
)

defs = Definitions(
    assets=data_assets,
    asset_checks=[accepted_fraction_above_threshold, every_clip_accounted_for],
    jobs=[ingestion_job],
    resources={"workspace": Workspace(), "dvc": DVCResource()},
    # One machine by default: steps share one process instead of re-importing torch, GX and DVC each.
    # To scale out, swap in dagster_k8s.k8s_job_executor (or the multiprocess executor) here.
    executor=in_process_executor,
)
