"""Stage 1, ingestion: bring a source into `data/` under DVC, then measure every clip."""


from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, Config, DataVersion, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from dagster_project.config import ProbeSection, SyntheticSection, overrides
from dagster_project.defs.resources import DVCResource, Workspace
from videodit.config import ProjectConfig
from videodit.data.config import SourceConfig
from videodit.data.probe import METADATA_FILE, probe_rows, write_metadata
from videodit.data.sources import SourceClip, SourceError, collect_source, read_manifest, stage_source
from videodit.data.staging import FolderSwap
from videodit.data.synthetic import generate_shapes_dataset, is_generated_from
from videodit.data.versioning import DataVersioningError

CAPTION_FILE_NAMES = ("captions.csv", "captions.jsonl")


class IngestConfig(Config):
    """Leave `source_dir` empty for the built-in synthetic shapes set."""

    source_dir: str | None = None
    captions_file: str | None = None  # default: captions.csv or captions.jsonl inside source_dir
    follow_symlinks: bool = SourceConfig.follow_symlinks  # symlinks that stay inside source_dir
    max_file_bytes: int = SourceConfig.max_file_bytes  # a larger file is quarantined unread
    synthetic: SyntheticSection = Field(default_factory=SyntheticSection)  # the built-in set, when source_dir is empty


class ProbeSettingsConfig(Config):
    probe: ProbeSection = Field(default_factory=ProbeSection)


def _captions_file(source: Path, given: str | None) -> Path:
    if given:
        return Path(given).expanduser().resolve()
    for name in CAPTION_FILE_NAMES:
        if (source / name).is_file():
            return source / name
    raise SourceError(f"no captions file in {source}: add captions.csv or captions.jsonl, or set captions_file")


def _stage(staging: Path, source: Path | None, config: IngestConfig, preset: ProjectConfig) -> list[SourceClip]:
    """Write the new content of `data/` into `staging`: the synthetic set, or the user's clips copied."""
    if source is None:
        captions = generate_shapes_dataset(staging, preset.synthetic)
        clips = collect_source(staging, captions)
        stage_source(clips, staging, staging)
        return clips
    limits = SourceConfig(follow_symlinks=config.follow_symlinks, max_file_bytes=config.max_file_bytes,
                          captions_required=not preset.captioning.generates)
    clips = collect_source(source, _captions_file(source, config.captions_file), limits)
    stage_source(clips, source, staging, limits)
    return clips


def _failure(exc: Exception, data_dir: Path, **metadata) -> Failure:
    """Our own errors reach the run page as one paragraph: the cause first, no retry of a deterministic error."""
    return Failure(
        description=f"{exc}\n\n{data_dir} and data.dvc are unchanged.",
        metadata={"error": type(exc).__name__, "data_dir": MetadataValue.path(str(data_dir)), **metadata},
        allow_retries=False,
    )


@asset(group_name="ingestion", code_version="2", kinds={"dvc", "video"})
def raw_videos(context: AssetExecutionContext, config: IngestConfig, workspace: Workspace, dvc: DVCResource) -> MaterializeResult:
    """The source clips and their captions, copied into `data/` and versioned with DVC.

    The data version is DVC's directory hash: identical data gives the same version and pushes nothing.
    The new content is staged beside `data/` and swapped in only once it is complete; if staging or DVC
    fails, `data/` and `data.dvc` are exactly as before. The built-in set is not generated again while
    its config and generator are unchanged.
    """
    data_dir = workspace.data_dir
    source = Path(config.source_dir).expanduser().resolve() if config.source_dir else None
    if source is not None and (source == data_dir or source.is_relative_to(data_dir)):
        raise _failure(SourceError(f"source_dir {source} is inside the managed data folder {data_dir}; move it elsewhere"), data_dir)
    preset = workspace.config(overrides(config, ["synthetic"]))
    synthetic = preset.synthetic
    try:
        if source is None and is_generated_from(data_dir, synthetic):
            context.log.info(f"{data_dir} already holds the synthetic set of this config: versioning it as it is")
            clips = read_manifest(data_dir)
            snapshot = dvc.version(workspace.root)
        else:
            swap = FolderSwap(data_dir)
            try:
                clips = _stage(swap.staging, source, config, preset)
                swap.swap_in()
                snapshot = dvc.version(workspace.root)
            except BaseException:
                swap.roll_back()
                raise
            swap.finish()
    except (SourceError, DataVersioningError) as exc:
        raise _failure(exc, data_dir, source=str(source) if source else "synthetic shapes") from exc
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


@asset(group_name="ingestion", code_version="3", deps=[raw_videos], kinds={"pyav", "parquet", "safetensors"})
def video_metadata(config: ProbeSettingsConfig, workspace: Workspace) -> MaterializeResult:
    """One row per clip: codec, size, fps, duration, audio, caption, scene cuts, motion, decode status.

    The same single decode keeps each clip's training clip at the preset's curation shape for `training_clips`.
    """
    out_dir = workspace.artifacts("video_metadata")
    preset = workspace.config(overrides(config, ["probe"]))
    try:
        clips = read_manifest(workspace.data_dir)
    except SourceError as exc:
        raise Failure(description=str(exc), metadata={"data_dir": MetadataValue.path(str(workspace.data_dir))}, allow_retries=False) from exc
    counts = write_metadata(probe_rows(workspace.data_dir, clips, preset.probe, preset.curation), out_dir, preset.curation)
    preview = pd.read_parquet(out_dir / METADATA_FILE, columns=["path", "width", "height", "fps", "n_frames", "n_cuts", "motion_score", "decode_ok", "caption"]).head(10)
    return MaterializeResult(
        metadata={
            **counts,
            "table": MetadataValue.path(str(out_dir / METADATA_FILE)),
            "preview": MetadataValue.md(preview.to_markdown(index=False, floatfmt=".3f")),
        }
    )
