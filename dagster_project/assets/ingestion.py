"""Stage 1, ingestion: bring a source into `data/` under DVC, then measure every clip."""


import shutil
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, Config, DataVersion, MaterializeResult, MetadataValue, asset

from dagster_project.overrides import with_overrides
from dagster_project.resources import DVCResource, Workspace
from videodit.data.probe import METADATA_FILE, probe_rows, write_metadata
from videodit.data.sources import SourceError, collect_source, read_manifest, stage_source
from videodit.data.synthetic import generate_shapes_dataset

CAPTION_FILE_NAMES = ("captions.csv", "captions.jsonl")
SOURCE_FIELDS = frozenset({"source_dir", "captions_file"})  # IngestConfig fields that are not synthetic settings


class IngestConfig(Config):
    """Leave `source_dir` empty for the built-in synthetic shapes set."""

    source_dir: str | None = None
    captions_file: str | None = None  # default: captions.csv or captions.jsonl inside source_dir
    clips_per_combination: int | None = None  # synthetic only; None keeps the preset's value
    seed: int | None = None


def _captions_file(source: Path, given: str | None) -> Path:
    if given:
        return Path(given).expanduser().resolve()
    for name in CAPTION_FILE_NAMES:
        if (source / name).is_file():
            return source / name
    raise SourceError(f"no captions file in {source}: add captions.csv or captions.jsonl, or set captions_file")


@asset(group_name="ingestion", code_version="1", kinds={"dvc", "video"})
def raw_videos(context: AssetExecutionContext, config: IngestConfig, workspace: Workspace, dvc: DVCResource) -> MaterializeResult:
    """The source clips and their captions, copied into `data/` and versioned with DVC.

    The data version is DVC's directory hash: identical data gives the same version and pushes nothing.
    """
    data_dir = workspace.data_dir
    source = Path(config.source_dir).expanduser().resolve() if config.source_dir else None
    if source is not None and (source == data_dir or source.is_relative_to(data_dir)):
        raise SourceError(f"source_dir {source} is inside the managed data folder {data_dir}; move it elsewhere")
    shutil.rmtree(data_dir, ignore_errors=True)  # DVC keeps every earlier version in the cache and remote
    data_dir.mkdir(parents=True)
    if source is None:
        synthetic = with_overrides(workspace.data().synthetic, config, SOURCE_FIELDS)
        captions = generate_shapes_dataset(data_dir, synthetic)
        clips = collect_source(data_dir, captions)
        stage_source(clips, data_dir, data_dir)
    else:
        clips = collect_source(source, _captions_file(source, config.captions_file))
        stage_source(clips, source, data_dir)
    snapshot = dvc.version(workspace.root)
    problems = [c for c in clips if c.problem]
    context.log.info(f"ingested {len(clips)} clips as DVC version {snapshot.md5} ({snapshot.pushed_objects} objects pushed)")
    return MaterializeResult(
        data_version=DataVersion(snapshot.md5),
        metadata={
            "dvc_md5": snapshot.md5,
            "source": str(source) if source else "synthetic shapes",
            "clips": len(clips),
            "clips_with_ingest_problems": len(problems),
            "files": snapshot.n_files,
            "size_bytes": snapshot.size_bytes,
            "pushed_objects": snapshot.pushed_objects,
            "dvc_remote": snapshot.remote_url,
            "dvc_file": MetadataValue.path(str(snapshot.dvc_file)),
        },
    )


@asset(group_name="ingestion", code_version="2", deps=[raw_videos], kinds={"pyav", "parquet", "safetensors"})
def video_metadata(workspace: Workspace) -> MaterializeResult:
    """One row per clip: codec, size, fps, duration, audio, caption, scene cuts, motion, decode status.

    The same single decode keeps each clip's training clip at the preset's curation shape for `training_clips`.
    """
    out_dir = workspace.artifacts("video_metadata")
    preset = workspace.data()
    clips = read_manifest(workspace.data_dir)
    counts = write_metadata(probe_rows(workspace.data_dir, clips, preset.probe, preset.curation), out_dir, preset.curation)
    preview = pd.read_parquet(out_dir / METADATA_FILE, columns=["path", "width", "height", "fps", "n_frames", "n_cuts", "motion_score", "decode_ok", "caption"]).head(10)
    return MaterializeResult(
        metadata={
            **counts,
            "table": MetadataValue.path(str(out_dir / METADATA_FILE)),
            "preview": MetadataValue.md(preview.to_markdown(index=False, floatfmt=".3f")),
        }
    )
