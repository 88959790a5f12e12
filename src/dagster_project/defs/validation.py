"""Stage 2, validation: the Great Expectations suite splits clips into accepted and quarantined."""


import json
from collections import Counter

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, Config, MaterializeResult, MetadataValue, asset, asset_check
from pydantic import Field

from dagster_project.defs.ingestion import video_metadata
from dagster_project.config import ValidationSection, overrides
from dagster_project.defs.resources import Workspace
from videodit.data.probe import METADATA_FILE
from videodit.data.sources import read_manifest
from videodit.data.validation import validate_metadata, write_outcome
from videodit.files import write_text_atomically

SUMMARY_FILE = "summary.json"


class ValidationSettingsConfig(Config):
    validation: ValidationSection = Field(default_factory=ValidationSection)


@asset(group_name="validation", code_version="3", deps=[video_metadata], kinds={"great_expectations"})
def validated_clips(config: ValidationSettingsConfig, workspace: Workspace) -> MaterializeResult:
    """Clips that pass the suite in `great_expectations/`; the rest are quarantined with their reasons."""
    preset = workspace.config(overrides(config, ["validation"]))
    validation = preset.validation
    metadata = pd.read_parquet(workspace.artifacts("video_metadata") / METADATA_FILE)
    # With a captioner in the preset, clips without a caption go on to captioned_clips instead of quarantine.
    outcome = validate_metadata(metadata, workspace.gx_root, validation, preset.curation, not preset.captioning.generates)
    out_dir = workspace.artifacts("validated_clips")
    paths = write_outcome(outcome, out_dir)
    summary = {
        "ingested": len(outcome.decisions),
        "accepted": len(outcome.accepted),
        "quarantined": len(outcome.quarantine),
        "accepted_fraction": outcome.accepted_fraction,
        "min_accepted_fraction": validation.min_accepted_fraction,
    }
    write_text_atomically(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    reasons = Counter(reason.split(":")[0] for rs in outcome.quarantine["reasons"] for reason in rs)
    quarantine_md = outcome.quarantine[["path", "reasons"]].head(20).assign(reasons=lambda d: d["reasons"].map("; ".join))
    return MaterializeResult(
        metadata={
            **summary,
            "data_docs": MetadataValue.url(outcome.data_docs_index.as_uri()),
            "suite": MetadataValue.path(str(workspace.gx_root / "expectations" / "video_clips.json")),
            "suite_rewritten": outcome.suite_changed,  # False: the tracked suite JSON already held this config
            "quarantine_table": MetadataValue.path(str(paths["quarantine"])),
            "decisions_table": MetadataValue.path(str(paths["decisions"])),
            "quarantine_reasons": MetadataValue.json(dict(reasons)),
            "quarantine_preview": MetadataValue.md(quarantine_md.to_markdown(index=False) if len(quarantine_md) else "none"),
            "expectations": MetadataValue.md(pd.DataFrame(outcome.expectation_stats).to_markdown(index=False)),
        }
    )


def _summary(workspace: Workspace) -> dict:
    return json.loads((workspace.artifacts("validated_clips") / SUMMARY_FILE).read_text())


@asset_check(asset=validated_clips, blocking=True, description="Enough of the ingested clips passed validation.")
def accepted_fraction_above_threshold(workspace: Workspace) -> AssetCheckResult:
    s = _summary(workspace)
    return AssetCheckResult(
        passed=s["accepted_fraction"] >= s["min_accepted_fraction"],
        severity=AssetCheckSeverity.ERROR,
        metadata={"accepted_fraction": s["accepted_fraction"], "threshold": s["min_accepted_fraction"]},
    )


@asset_check(
    asset=validated_clips, blocking=True,
    description="Every entry of the source listing (caption rows + video files on disk) is accepted or quarantined, once.",
)  # fmt: skip
def every_clip_accounted_for(workspace: Workspace) -> AssetCheckResult:
    listed = [clip.path for clip in read_manifest(workspace.data_dir)]
    decisions = pd.read_parquet(workspace.artifacts("validated_clips") / "decisions.parquet", columns=["path", "accepted"])
    decided = decisions["path"].tolist()
    lost, unknown = sorted(set(listed) - set(decided)), sorted(set(decided) - set(listed))
    decided_twice = sorted(decisions.loc[decisions["path"].duplicated(), "path"])
    return AssetCheckResult(
        passed=not (lost or unknown or decided_twice) and len(decided) == len(listed),
        metadata={
            "listed": len(listed), "accepted": int(decisions["accepted"].sum()), "quarantined": int((~decisions["accepted"]).sum()),
            "lost": lost[:20], "not_in_listing": unknown[:20], "decided_twice": decided_twice[:20],
        },
    )  # fmt: skip
