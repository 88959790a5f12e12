"""`training_clips`: the windows of accepted clips' shots resampled to the training fps, each in the bucket of the
table nearest its source's aspect ratio (the first window of a shot at the longest duration it fills), scaled to cover that bucket and centre-cropped (only what the
rounding to the bucket's aspect needs; the crop is recorded in source pixels), written as checksummed shards,
one bucket per shard. The probe's single decode makes those training clips (`probe.py`); curation copies the
accepted ones into the training shards.

The train/val split is a function of each clip's sha256 alone, so adding clips never moves an old
clip to the other side, and rebuilding from the same data version gives the same split.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from videodit.data.config import Bucket, CurationConfig, video_buckets
from videodit.data.shards import BUCKETS_FILE, ClipShards, ShardWriter
from videodit.data.video_io import DecodedFrame, VideoDecodeError
from videodit.files import write_text_atomically

GEOMETRY_FILE = "geometry.json"
# What each training clip keeps of `captioned_clips`' table besides the caption it trains on.
CAPTION_LINEAGE = ("user_caption", "generated_caption", "captioner", "captioner_version", "caption_source")


def cover_size(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int]:
    """Smallest (width, height) with the source aspect ratio that covers the target box."""
    scale = max(target_w / width, target_h / height)
    return max(target_w, math.ceil(width * scale)), max(target_h, math.ceil(height * scale))


def bucket_size(width: int, height: int, buckets: tuple[Bucket, ...]) -> tuple[int, int]:
    """(height, width) of the clip bucket nearest in aspect ratio (log scale: 2:1 is as far from 1:1 as 1:2);
    ties go to the larger size."""
    sizes = sorted({(b.height, b.width) for b in video_buckets(buckets)})
    return min(sizes, key=lambda hw: (abs(math.log(width / height * hw[0] / hw[1])), -hw[0] * hw[1]))


def longest_bucket(n_frames: int, size: tuple[int, int], buckets: tuple[Bucket, ...]) -> Bucket | None:
    """The longest clip bucket of `size` that `n_frames` resampled frames fill; None when none does."""
    fits = [b for b in video_buckets(buckets) if (b.height, b.width) == size and b.frames <= n_frames]
    return max(fits, key=lambda b: b.frames, default=None)


def crop_box(width: int, height: int, cover: tuple[int, int], size: tuple[int, int]) -> list[int]:
    """The centre crop of a `cover`-scaled (w, h) frame to `size` (h, w), as [left, top, width, height] in source pixels."""
    scale = cover[0] / width
    crop_w, crop_h = size[1] / scale, size[0] / scale
    return [round((width - crop_w) / 2), round((height - crop_h) / 2), round(crop_w), round(crop_h)]


def center_crop(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    top, left = (rgb.shape[0] - height) // 2, (rgb.shape[1] - width) // 2
    return rgb[top : top + height, left : left + width]


class Resampler:
    """Picks, for each target time t0 + k/fps, the decoded frame nearest to it, as frames arrive."""

    def __init__(self, fps: float):
        self.fps = fps
        self.t0: float | None = None
        self.prev: DecodedFrame | None = None
        self.n = 0  # targets served

    def push(self, frame: DecodedFrame) -> list[DecodedFrame]:
        self.t0 = frame.time_s if self.t0 is None else self.t0
        picked = []
        while frame.time_s >= self.t0 + self.n / self.fps:
            target = self.t0 + self.n / self.fps
            closer_prev = self.prev is not None and target - self.prev.time_s < frame.time_s - target
            picked.append(self.prev if closer_prev else frame)
            self.n += 1
        self.prev = frame
        return picked

    def finish(self) -> list[DecodedFrame]:
        """The last frame is shown for one frame period: it may still serve targets inside that period."""
        picked = []
        while self.prev is not None and self.t0 + self.n / self.fps < self.prev.time_s + 0.5 / self.fps:
            picked.append(self.prev)
            self.n += 1
        return picked


def resample(frames, fps: float, n_frames: int) -> list[DecodedFrame]:
    """The first `n_frames` picks of a `Resampler`; stops reading `frames` once they are found."""
    resampler, picked = Resampler(fps), []
    for frame in frames:
        picked += resampler.push(frame)
        if len(picked) >= n_frames:
            return picked[:n_frames]
    return (picked + resampler.finish())[:n_frames]


def min_bucket_frames(curation: CurationConfig) -> int:
    return min(b.frames for b in video_buckets(curation.buckets))


def shortest_shot_s(curation: CurationConfig) -> float:
    """Shortest shot that trains: `min_shot_s`, and long enough for the shortest bucket (half a frame of slack for
    timestamp rounding)."""
    return max(curation.min_shot_s, (min_bucket_frames(curation) - 0.5) / curation.fps)


def split_of(sha256: str, val_fraction: float) -> str:
    return "val" if int(sha256[:8], 16) / 0xFFFFFFFF < val_fraction else "train"


def clip_geometry(config: CurationConfig) -> dict:
    """The settings that shape the training clips; the probe records them next to the clips it decodes."""
    return {"fps": config.fps, "buckets": [asdict(b) for b in config.buckets], "min_shot_s": config.min_shot_s,
            "window_stride_s": config.window_stride_s, "max_windows_per_source": config.max_windows_per_source}


def training_clip(frames: list[DecodedFrame], bucket: Bucket) -> np.ndarray:
    """uint8 [T, H, W, 3]: the bucket's first T resampled cover-size frames, centre-cropped."""
    clip = np.empty((bucket.frames, bucket.height, bucket.width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames[: bucket.frames]):
        clip[i] = center_crop(frame.rgb, bucket.height, bucket.width)
    return clip


def curate(
    accepted: pd.DataFrame, decoded_dir: Path, out_dir: Path, config: CurationConfig,
    captions: pd.DataFrame | None = None, progress: bool = True,
) -> pd.DataFrame:
    """Write the shard folder for the accepted clips, copying the training clips the probe decoded into
    `decoded_dir` (a shard folder keyed by path and window); returns its index (one row per training clip).

    `captions` (`captioned_clips`' table, by path and window) gives each window its trained caption and lineage; a
    window it leaves out was rejected there and does not train. None: every window trains on its clip's caption."""
    decoded_dir = Path(decoded_dir)
    made_for = json.loads((decoded_dir / GEOMETRY_FILE).read_text())
    if made_for != clip_geometry(config):
        raise ValueError(f"{decoded_dir} holds clips decoded for {made_for}, not {clip_geometry(config)}: "
                         "materialize video_metadata again with this curation config")  # fmt: skip
    decoded = ClipShards(decoded_dir)
    windows = {path: rows.sort_values("window").to_dict("records") for path, rows in decoded.index.groupby("path")}
    writer = ShardWriter(out_dir, config.clips_per_shard)
    buckets = {b.name: b for b in config.buckets}
    rows = accepted.sort_values("path").to_dict("records")
    splits = [split_of(r["sha256"], config.val_fraction) for r in rows]
    if len(rows) >= 2 and "val" not in splits:
        # Tiny sets can hash entirely to train; the lowest hash goes to val so evaluation has data.
        splits[min(range(len(rows)), key=lambda i: rows[i]["sha256"])] = "val"
    lineage = None if captions is None else {(c["path"], c["window"]): c for c in captions.to_dict("records")}
    for row, split in zip(tqdm(rows, desc="curate", unit="clip", disable=not progress), splits):
        if row["path"] not in windows:
            raise VideoDecodeError(row["path"], f"no shot long enough at {config.fps} fps for any bucket")
        for window in windows[row["path"]]:  # every window of a source shares its split: no leak from train to val
            bucket = buckets[window["bucket"]]
            key = (row["path"], window["window"])
            if lineage is not None and key not in lineage:
                continue  # rejected by captioned_clips: it has no caption to train on
            caption = {"caption": row["caption"]} if lineage is None else {
                "caption": lineage[key]["trained_caption"], **{k: lineage[key][k] for k in CAPTION_LINEAGE}}  # fmt: skip
            writer.add(decoded.frames(window["shard"], window["row"]), {
                "clip_id": f"{row['sha256'][:16]}-{window['window']}", **caption, "split": split,
                "sha256": row["sha256"], "path": row["path"], "attributes": row["attributes"],
                "shot": window["shot"], "window": window["window"], "start_s": window["start_s"], "end_s": window["end_s"],
                "bucket": bucket.name, "frames": bucket.frames, "height": bucket.height, "width": bucket.width,
                "crop": window["crop"].tolist(), "source_fps": row["fps"], "frame_times_s": window["frame_times_s"].tolist(),
            })  # fmt: skip
    index = writer.close()
    counts = index["bucket"].value_counts().to_dict() if len(index) else {}
    write_text_atomically(Path(out_dir) / BUCKETS_FILE, json.dumps({"default": config.default_bucket, "clips": counts}, indent=2))
    (Path(out_dir) / "curation.json").write_text(json.dumps(clip_geometry(config) | {
        "val_fraction": config.val_fraction, "clips_per_shard": config.clips_per_shard}, indent=2))
    return index
