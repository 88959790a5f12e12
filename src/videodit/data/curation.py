"""`training_clips`: accepted clips resampled to the training fps and length, scaled to cover the
training size and centre-cropped, written as checksummed shards. The probe's single decode makes
those training clips (`probe.py`); curation copies the accepted ones into the training shards.

The train/val split is a function of each clip's sha256 alone, so adding clips never moves an old
clip to the other side, and rebuilding from the same data version gives the same split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from videodit.data.config import CurationConfig
from videodit.data.shards import ClipShards, ShardWriter
from videodit.data.video_io import DecodedFrame, VideoDecodeError

GEOMETRY_FILE = "geometry.json"


def cover_size(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int]:
    """Smallest (width, height) with the source aspect ratio that covers the target box."""
    scale = max(target_w / width, target_h / height)
    return max(target_w, math.ceil(width * scale)), max(target_h, math.ceil(height * scale))


def center_crop(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    top, left = (rgb.shape[0] - height) // 2, (rgb.shape[1] - width) // 2
    return rgb[top : top + height, left : left + width]


def resample(frames, fps: float, n_frames: int) -> list[DecodedFrame]:
    """Pick, for each target time t0 + k/fps, the decoded frame nearest to it; stop once n are found."""
    picked: list[DecodedFrame] = []
    prev: DecodedFrame | None = None
    t0 = None
    for frame in frames:
        t0 = frame.time_s if t0 is None else t0
        while len(picked) < n_frames and frame.time_s >= t0 + len(picked) / fps:
            target = t0 + len(picked) / fps
            closer_prev = prev is not None and target - prev.time_s < frame.time_s - target
            picked.append(prev if closer_prev else frame)
        if len(picked) == n_frames:
            return picked
        prev = frame
    # The last frame is shown for one frame period: it may still serve targets inside that period.
    while prev is not None and len(picked) < n_frames and t0 + len(picked) / fps < prev.time_s + 0.5 / fps:
        picked.append(prev)
    return picked


def split_of(sha256: str, val_fraction: float) -> str:
    return "val" if int(sha256[:8], 16) / 0xFFFFFFFF < val_fraction else "train"


def clip_geometry(config: CurationConfig) -> dict:
    """The settings that shape a training clip; the probe records them next to the clips it decodes."""
    return {"fps": config.fps, "n_frames": config.n_frames, "height": config.height, "width": config.width}


def training_clip(frames: list[DecodedFrame], config: CurationConfig) -> np.ndarray | None:
    """uint8 [T, H, W, 3] centre-cropped from resampled cover-size frames; None when too few were found."""
    if len(frames) < config.n_frames:
        return None
    clip = np.empty((config.n_frames, config.height, config.width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        clip[i] = center_crop(frame.rgb, config.height, config.width)
    return clip


def curate(accepted: pd.DataFrame, decoded_dir: Path, out_dir: Path, config: CurationConfig, progress: bool = True) -> pd.DataFrame:
    """Write the shard folder for the accepted clips, copying the training clips the probe decoded into
    `decoded_dir` (a shard folder keyed by path); returns its index (one row per training clip)."""
    decoded_dir = Path(decoded_dir)
    made_for = json.loads((decoded_dir / GEOMETRY_FILE).read_text())
    if made_for != clip_geometry(config):
        raise ValueError(f"{decoded_dir} holds clips decoded for {made_for}, not {clip_geometry(config)}: "
                         "materialize video_metadata again with this curation config")  # fmt: skip
    decoded = ClipShards(decoded_dir)
    location = {r["path"]: r for r in decoded.index.to_dict("records")}
    writer = ShardWriter(out_dir, config.clips_per_shard)
    rows = accepted.sort_values("path").to_dict("records")
    splits = [split_of(r["sha256"], config.val_fraction) for r in rows]
    if len(rows) >= 2 and "val" not in splits:
        # Tiny sets can hash entirely to train; the lowest hash goes to val so evaluation has data.
        splits[min(range(len(rows)), key=lambda i: rows[i]["sha256"])] = "val"
    for row, split in zip(tqdm(rows, desc="curate", unit="clip", disable=not progress), splits):
        if row["path"] not in location:
            raise VideoDecodeError(row["path"], f"fewer than {config.n_frames} frames at {config.fps} fps")
        source = location[row["path"]]
        writer.add(decoded.frames(source["shard"], source["row"]), {
            "clip_id": row["sha256"][:16], "caption": row["caption"], "split": split,
            "sha256": row["sha256"], "path": row["path"], "attributes": row["attributes"],
            "source_fps": row["fps"], "frame_times_s": source["frame_times_s"].tolist(),
        })  # fmt: skip
    index = writer.close()
    (Path(out_dir) / "curation.json").write_text(json.dumps(config.__dict__, indent=2))
    return index
