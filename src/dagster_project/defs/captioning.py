"""Stage 3, captioning: every accepted training clip gets the caption it trains on, the user's or a generated one."""


import pandas as pd
from dagster import Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from dagster_project.config import CaptioningSection, overrides
from dagster_project.defs.ingestion import video_metadata
from dagster_project.defs.resources import Workspace
from dagster_project.defs.validation import validated_clips
from videodit.captioning.stage import CAPTIONS_FILE, REJECTS_FILE, build_captioner, caption_clips
from videodit.data.probe import DECODED_CLIPS_DIR
from videodit.data.synthetic import SHAPES_DOMAIN
from videodit.files import replaced_atomically

PREVIEW_ROWS = 12


class CaptioningSettingsConfig(Config):
    captioning: CaptioningSection = Field(default_factory=CaptioningSection)


@asset(group_name="captioning", code_version="1", deps=[validated_clips, video_metadata], kinds={"parquet"})
def captioned_clips(config: CaptioningSettingsConfig, workspace: Workspace) -> MaterializeResult:
    """Each accepted clip's training windows with the user's caption, the captioner's (name and version) and the one
    that trains; windows left without any caption are rejected with the reason. Captioner "none" passes the user's
    captions through without reading a frame."""
    preset = workspace.config(overrides(config, ["captioning"]))
    captioning = preset.captioning
    try:
        captioner = build_captioner(captioning, SHAPES_DOMAIN)
    except ValueError as exc:  # a model folder that does not load, a domain the captioner has no words for
        raise Failure(description=f"captioned_clips: {exc}", allow_retries=False) from None
    accepted = pd.read_parquet(workspace.artifacts("validated_clips") / "accepted.parquet", columns=["path", "caption"])
    decoded_dir = workspace.artifacts("video_metadata") / DECODED_CLIPS_DIR
    captions, rejects = caption_clips(accepted, decoded_dir, preset.curation.fps, captioning, captioner)
    out_dir = workspace.artifacts("captioned_clips")
    for table, name in ((captions, CAPTIONS_FILE), (rejects, REJECTS_FILE)):
        with replaced_atomically(out_dir / name) as tmp:
            table.to_parquet(tmp, index=False)
    preview = captions[["path", "window", "user_caption", "generated_caption", "caption_source"]].head(PREVIEW_ROWS)
    return MaterializeResult(
        metadata={
            "captioner": captioner.name if captioner else "none",
            "captioner_version": captioner.version if captioner else "",
            "train_on": captioning.train_on,
            "captioned": len(captions),
            "generated": int(captions["generated_caption"].notna().sum()),
            "trained_on": MetadataValue.json({str(k): int(v) for k, v in captions["caption_source"].value_counts().items()}),
            "rejected": len(rejects),
            "rejects_preview": MetadataValue.md(rejects.head(PREVIEW_ROWS).to_markdown(index=False) if len(rejects) else "none"),
            "captions_preview": MetadataValue.md(preview.to_markdown(index=False) if len(preview) else "none"),
            "captions_table": MetadataValue.path(str(out_dir / CAPTIONS_FILE)),
        }
    )
