"""`training_clips`: accepted clips decoded once more, resampled to the training fps and length,
scaled to cover the training size and centre-cropped, then written as checksummed shards.

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
from videodit.data.shards import ShardWriter
from videodit.data.video_io import DecodedFrame, VideoDecodeError, iter_frames, open_video


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


def load_training_clip(path: Path, config: CurationConfig) -> tuple[np.ndarray, list[float]]:
    """uint8 [T, H, W, 3] at the training fps and size, plus the source timestamps used."""
    container, info = open_video(path)
    with container:
        size = cover_size(info.width, info.height, config.width, config.height)
        frames = resample(iter_frames(container, path, size), config.fps, config.n_frames)
    if len(frames) < config.n_frames:
        raise VideoDecodeError(path, f"only {len(frames)} of {config.n_frames} frames at {config.fps} fps")
    clip = np.empty((config.n_frames, config.height, config.width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        clip[i] = center_crop(frame.rgb, config.height, config.width)
    return clip, [round(f.time_s, 6) for f in frames]


def curate(accepted: pd.DataFrame, data_dir: Path, out_dir: Path, config: CurationConfig, progress: bool = True) -> pd.DataFrame:
    """Write the shard folder for the accepted clips; returns its index (one row per training clip)."""
    writer = ShardWriter(out_dir, config.clips_per_shard)
    rows = accepted.sort_values("path").to_dict("records")
    splits = [split_of(r["sha256"], config.val_fraction) for r in rows]
    if len(rows) >= 2 and "val" not in splits:
        # Tiny sets can hash entirely to train; the lowest hash goes to val so evaluation has data.
        splits[min(range(len(rows)), key=lambda i: rows[i]["sha256"])] = "val"
    for row, split in zip(tqdm(rows, desc="curate", unit="clip", disable=not progress), splits):
        frames, times = load_training_clip(Path(data_dir) / row["path"], config)
        writer.add(frames, {
            "clip_id": row["sha256"][:16], "caption": row["caption"], "split": split,
            "sha256": row["sha256"], "path": row["path"], "attributes": row["attributes"],
            "source_fps": row["fps"], "frame_times_s": times,
        })  # fmt: skip
    index = writer.close()
    (Path(out_dir) / "curation.json").write_text(json.dumps(config.__dict__, indent=2))
    return index
