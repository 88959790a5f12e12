"""Jobs: named slices of the asset graph."""

from dagster import AssetSelection, define_asset_job

from dagster_project.deployment import RUN_TAGS_THAT_TRAIN  # the run queue's one-GPU limit (infra/dagster/dagster.yaml)

DATA_STAGES = ("ingestion", "validation", "captioning", "curation")

ingestion_job = define_asset_job(
    "ingestion_job", selection=AssetSelection.groups(*DATA_STAGES), description="Ingest, probe, validate, caption and curate the data."
)
training_job = define_asset_job(
    "training_job",
    selection=AssetSelection.assets("training_clips").downstream(),
    description="Curate, train the VAE and DiT, evaluate, update the registry, export and generate.",
    tags=RUN_TAGS_THAT_TRAIN,
)
retraining_job = define_asset_job(
    "retraining_job",
    selection=AssetSelection.assets("raw_videos").downstream() - AssetSelection.assets("raw_videos"),
    description="Everything downstream of a new data version of raw_videos.",
    tags=RUN_TAGS_THAT_TRAIN,
)
full_pipeline = define_asset_job("full_pipeline", selection=AssetSelection.all(), description="The whole graph.", tags=RUN_TAGS_THAT_TRAIN)
