"""`validated_clips`: the Great Expectations suite that decides which probed clips may train the model.

The suite is written from `ValidationConfig` into the file-based GX project (`great_expectations/`)
on every run, so the JSON on disk is always the one that made the last decision. Per-row failures
come back from GX (result format COMPLETE, indexed by path) and become the quarantine table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations import expectations as gxe

from videodit.data.config import CurationConfig, ValidationConfig, video_buckets
from videodit.data.curation import min_bucket_frames, shortest_shot_s
from videodit.data.duplicates import find_near_duplicates
from videodit.files import replaced_atomically, write_text_atomically

SUITE_NAME = "video_clips"
# What the probe measures on every clip that decodes. Column-map expectations skip nulls, so a NaN here would
# pass every bound: each gets a not-null expectation on the decoded rows.
MEASURED_COLUMNS = ("sha256", "width", "height", "aspect_ratio", "pixels", "fps", "n_frames", "duration_s", "n_cuts", "motion_score")
DATASOURCE_NAME = "videodit"
ASSET_NAME = "video_metadata"


@dataclass(frozen=True)
class ValidationOutcome:
    accepted: pd.DataFrame  # metadata rows of the accepted clips
    decisions: pd.DataFrame  # every clip: path, sha256, accepted, failed_expectations, reasons
    expectation_stats: list[dict]  # per expectation: name, success, unexpected count
    data_docs_index: Path
    suite_changed: bool  # whether this run rewrote the suite JSON (its config changed)

    @property
    def quarantine(self) -> pd.DataFrame:
        return self.decisions[~self.decisions["accepted"]].reset_index(drop=True)

    @property
    def accepted_fraction(self) -> float:
        return len(self.accepted) / len(self.decisions) if len(self.decisions) else 0.0


def min_clip_duration(validation: ValidationConfig, curation: CurationConfig) -> float:
    """Shortest clip that still fills the shortest bucket; half a frame of slack for timestamp rounding."""
    return max(validation.min_duration_s, (min_bucket_frames(curation) - 0.5) / curation.fps)


def aspect_bounds(validation: ValidationConfig, curation: CurationConfig) -> tuple[float, float]:
    """Aspect ratios (width / height) a bucket takes: the table's tallest to widest, widened by `max_aspect_crop`."""
    aspects = [b.aspect for b in video_buckets(curation.buckets)]
    return min(aspects) / validation.max_aspect_crop, max(aspects) * validation.max_aspect_crop


def build_suite(validation: ValidationConfig, curation: CurationConfig, captions_required: bool = True) -> gx.ExpectationSuite:
    """One expectation per rule; `meta.rule` is the human reason a quarantined clip carries.

    With `captions_required` False (a captioner is configured) a clip without a caption passes, for `captioned_clips`
    to caption; a caption it has must still be of a usable length."""

    def rule(expectation, text: str):
        expectation.meta = {"rule": text}
        return expectation

    v = validation
    min_duration = min_clip_duration(v, curation)
    low, high = aspect_bounds(v, curation)
    smallest = min(video_buckets(curation.buckets), key=lambda b: b.height * b.width)
    # Expectations go in through the constructor: `add_expectation` on a suite whose name is already stored saves
    # into the stored suite at once (GX 1.x), which would rewrite the tracked JSON before anything is compared.
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=[
        rule(gxe.ExpectColumnValuesToBeInSet(column="decode_ok", value_set=[True]), "the file decodes as video"),
        *(
            rule(
                gxe.ExpectColumnValuesToNotBeNull(column=column, row_condition="decode_ok==True", condition_parser="pandas"),
                f"{column} was measured",
            )
            for column in MEASURED_COLUMNS
        ),
        # The bucket table owns the smallest usable size: a clip smaller than every bucket would only be upscaled.
        rule(
            gxe.ExpectColumnValuesToBeBetween(column="pixels", min_value=smallest.height * smallest.width),
            f"at least as large as the smallest bucket ({smallest.width}×{smallest.height} = {smallest.height * smallest.width} pixels)",
        ),
        rule(
            gxe.ExpectColumnValuesToBeBetween(column="aspect_ratio", min_value=round(low, 4), max_value=round(high, 4)),
            f"aspect ratio (width/height) {low:.3g}-{high:.3g}: the buckets' within a ×{v.max_aspect_crop} crop",
        ),
        rule(
            gxe.ExpectColumnValuesToBeBetween(column="fps", min_value=v.min_fps, max_value=v.max_fps),
            f"{v.min_fps} ≤ fps ≤ {v.max_fps}",
        ),
        rule(
            gxe.ExpectColumnValuesToBeBetween(column="duration_s", min_value=min_duration, max_value=v.max_duration_s),
            f"long enough for the shortest bucket's {min_bucket_frames(curation)}-frame clip at {curation.fps} fps "
            f"({min_duration:.2f}s) and at most {v.max_duration_s}s",
        ),
        rule(gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=v.min_frames), f"≥ {v.min_frames} frames"),
        *([rule(gxe.ExpectColumnValuesToNotBeNull(column="caption"), "has a caption")] if captions_required else []),
        rule(
            gxe.ExpectColumnValuesToBeBetween(
                column="caption_chars", min_value=v.caption_min_chars, max_value=v.caption_max_chars,
                **({} if captions_required else {"row_condition": "caption_chars>0", "condition_parser": "pandas"}),
            ),
            f"caption of {v.caption_min_chars}-{v.caption_max_chars} characters",
        ),
        # A video with cuts is split into shots; it trains when one of them is long enough for a window.
        rule(
            gxe.ExpectColumnValuesToBeBetween(column="n_windows", min_value=1, row_condition="n_cuts>0", condition_parser="pandas"),
            f"a shot of at least {shortest_shot_s(curation):.3g}s between its cuts",
        ),
        rule(
            gxe.ExpectColumnValuesToBeBetween(column="motion_score", min_value=v.min_motion),
            f"motion score ≥ {v.min_motion} (not static)",
        ),
        rule(gxe.ExpectColumnValuesToBeUnique(column="sha256"), "not a duplicate of another clip (sha256)"),
        rule(
            gxe.ExpectColumnValuesToBeNull(column="near_duplicate_of"),
            f"not a near-duplicate of another clip (≤ {v.near_duplicate_max_changed:.1%} of its content signature "
            f"changed by more than {v.near_duplicate_pixel_delta})",
        ),
    ])  # fmt: skip


def _get(store, name: str):
    """The stored GX object called `name`, or None: lookups raise when nothing is stored under the name."""
    try:
        return store.get(name)
    except Exception:  # GX raises a different error type for each kind of store
        return None


def _expectations(suite: gx.ExpectationSuite) -> list[dict]:
    return [{k: v for k, v in e.configuration.to_json_dict().items() if k != "id"} for e in suite.expectations]


def _stored_suite(context, suite: gx.ExpectationSuite) -> tuple[gx.ExpectationSuite, bool]:
    """The suite as stored, rewritten only when its expectations changed (the JSON is tracked by git)."""
    stored = _get(context.suites, SUITE_NAME)
    if stored is not None and _expectations(stored) == _expectations(suite):
        return stored, False
    return context.suites.add_or_update(suite), True


def _checkpoint(context, suite: gx.ExpectationSuite) -> gx.Checkpoint:
    """The checkpoint over the metadata table; each GX object is created once and reused, so the files of the
    GX project only change when the suite does."""
    source = _get(context.data_sources, DATASOURCE_NAME) or context.data_sources.add_pandas(DATASOURCE_NAME)
    asset = next((a for a in source.assets if a.name == ASSET_NAME), None) or source.add_dataframe_asset(ASSET_NAME)
    batch = next((b for b in asset.batch_definitions if b.name == "all"), None) or (
        asset.add_batch_definition_whole_dataframe("all")
    )
    definition = _get(context.validation_definitions, SUITE_NAME)
    if definition is None or definition.suite.id != suite.id or definition.batch_definition.id != batch.id:
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=SUITE_NAME, data=batch, suite=suite)
        )
    checkpoint = _get(context.checkpoints, SUITE_NAME)
    if checkpoint is not None and [d.id for d in checkpoint.validation_definitions] == [definition.id]:
        return checkpoint
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=SUITE_NAME,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["path"]},
        )
    )


def _display(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def validate_metadata(
    metadata: pd.DataFrame, gx_root: Path, validation: ValidationConfig, curation: CurationConfig,
    captions_required: bool = True,
) -> ValidationOutcome:
    """Run the suite (`build_suite`) over the metadata table and split it into accepted and quarantined clips."""
    near = find_near_duplicates(metadata, validation.near_duplicate_pixel_delta, validation.near_duplicate_max_changed)
    metadata = metadata.drop(columns=["signature"]).assign(
        near_duplicate_of=near["near_duplicate_of"].to_numpy(), near_duplicate_changed=near["near_duplicate_changed"].to_numpy()
    )
    context = gx.get_context(mode="file", context_root_dir=str(gx_root))
    suite, suite_changed = _stored_suite(context, build_suite(validation, curation, captions_required))
    result = _checkpoint(context, suite).run(batch_parameters={"dataframe": metadata})
    (run_result,) = result.run_results.values()

    failures: dict[str, list[tuple[str, str]]] = {path: [] for path in metadata["path"]}
    first_with_sha = metadata.dropna(subset=["sha256"]).sort_values("path").drop_duplicates("sha256")
    canonical = dict(zip(first_with_sha["sha256"], first_with_sha["path"]))
    stats = []
    for item in run_result.results:
        config = item.expectation_config
        column = config.kwargs["column"]
        flagged = item.result.get("unexpected_index_list") or []
        stats.append({"expectation": config.type, "column": column, "rule": config.meta["rule"],
                      "success": bool(item.success), "unexpected": len(flagged)})  # fmt: skip
        for hit in flagged:
            path, value = hit["path"], hit[column]
            if config.type == "expect_column_values_to_be_unique":
                if canonical[value] == path:
                    continue  # the first copy of a duplicated file is kept
                reason = f"duplicate of {canonical[value]} (sha256 {value[:12]})"
            elif column == "near_duplicate_of":
                changed = metadata.loc[metadata["path"] == path, "near_duplicate_changed"].iloc[0]
                reason = f"near-duplicate of {value} (re-encoded or converted: {changed:.2%} of its content signature differs)"
            elif column == "decode_ok":
                reason = str(metadata.loc[metadata["path"] == path, "error"].iloc[0])
            else:
                reason = f"{config.meta['rule']}: got {column}={_display(value)}"
            failures[path].append((f"{config.type}({column})", reason))

    decisions = metadata[["path", "sha256", "bucket", "crop", "near_duplicate_of", "n_cuts", "cut_times_s", "motion_score",
                          "shot_times_s", "windows"]].copy()
    decisions["quarantined_shots"] = [_short_shots(shots, curation) for shots in decisions["shot_times_s"]]
    decisions["failed_expectations"] = [[name for name, _ in failures[p]] for p in decisions["path"]]
    decisions["reasons"] = [[reason for _, reason in failures[p]] for p in decisions["path"]]
    decisions["accepted"] = [not failures[p] for p in decisions["path"]]
    accepted = metadata[decisions["accepted"].to_numpy()].reset_index(drop=True)
    docs = Path(gx_root) / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return ValidationOutcome(accepted, decisions, stats, docs, suite_changed)


def _short_shots(shots, curation: CurationConfig) -> list[str]:
    """Why each shot too short to train was left out, with its seconds in the source."""
    if shots is None:
        return []
    shortest = shortest_shot_s(curation)
    return [f"shot {i} ({start:.3f}-{end:.3f}s) is shorter than {shortest:.3g}s" for i, (start, end) in enumerate(shots)
            if end - start < shortest]  # fmt: skip


def write_outcome(outcome: ValidationOutcome, out_dir: Path) -> dict[str, Path]:
    """Persist the decision record: enough, with the DVC data version, to rebuild the curated set exactly."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "accepted": out_dir / "accepted.parquet",
        "decisions": out_dir / "decisions.parquet",
        "quarantine": out_dir / "quarantine.parquet",
        "expectations": out_dir / "expectations.json",
    }
    for name, table in (("accepted", outcome.accepted), ("decisions", outcome.decisions), ("quarantine", outcome.quarantine)):
        with replaced_atomically(paths[name]) as tmp:
            table.to_parquet(tmp, index=False)
    write_text_atomically(paths["expectations"], json.dumps(outcome.expectation_stats, indent=2))
    return paths
