"""Stage 4, curation: accepted clips become fixed-size training shards with a train/val split."""


import pandas as pd
from dagster import Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from dagster_project.config import CurationSection, overrides

from dagster_project.defs.ingestion import video_metadata
from dagster_project.defs.captioning import captioned_clips
from dagster_project.defs.validation import validated_clips
from dagster_project.failures import failing_on_corrupt_shards
from dagster_project.defs.resources import Workspace
from videodit.captioning.stage import CAPTIONS_FILE
from videodit.data.curation import curate
from videodit.data.probe import DECODED_CLIPS_DIR
from videodit.data.shards import ClipShards


class CurationSettingsConfig(Config):
    curation: CurationSection = Field(default_factory=CurationSection)


@asset(group_name="curation", code_version="3", deps=[validated_clips, captioned_clips, video_metadata], kinds={"safetensors"})
def training_clips(config: CurationSettingsConfig, workspace: Workspace) -> MaterializeResult:
    """Accepted clips resampled, resized and centre-cropped to their buckets' shapes, in shards of one bucket each,
    each with the caption captioned_clips chose for it."""
    curation = workspace.config(overrides(config, ["curation"])).curation
    accepted = pd.read_parquet(workspace.artifacts("validated_clips") / "accepted.parquet")
    captions = pd.read_parquet(workspace.artifacts("captioned_clips") / CAPTIONS_FILE)
    out_dir = workspace.artifacts("training_clips")
    with failing_on_corrupt_shards("video_metadata"):
        index = curate(accepted, workspace.artifacts("video_metadata") / DECODED_CLIPS_DIR, out_dir, curation, captions)
    ClipShards(out_dir).verify()
    counts = index["split"].value_counts()
    return MaterializeResult(
        metadata={
            "train_clips": int(counts.get("train", 0)),
            "val_clips": int(counts.get("val", 0)),
            "shards": int(index["shard"].nunique()),
            "clips_per_bucket": MetadataValue.json({str(k): int(v) for k, v in index["bucket"].value_counts().items()}),
            "default_bucket": f"{curation.default_bucket} (frames×height×width) @ {curation.fps} fps",
            "path": MetadataValue.path(str(out_dir)),
        }
    )
