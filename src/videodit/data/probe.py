"""`video_metadata`: one row per clip, measured by decoding it once at a small analysis size.

Scene cuts use the content detector of PySceneDetect (mean HSV change between frames against a
threshold), motion is the fraction of pixels that change per frame. Rows are streamed to parquet
in small batches so memory does not grow with the number of clips.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from videodit.data.config import ProbeConfig
from videodit.data.shards import file_sha256
from videodit.data.sources import SourceClip
from videodit.data.video_io import VideoDecodeError, iter_frames, open_video, scaled_size

METADATA_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("sha256", pa.string()),
    ("size_bytes", pa.int64()),
    ("container", pa.string()),
    ("codec", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("fps", pa.float64()),
    ("n_frames", pa.int32()),
    ("duration_s", pa.float64()),
    ("has_audio", pa.bool_()),
    ("caption", pa.string()),
    ("caption_chars", pa.int32()),
    ("caption_words", pa.int32()),
    ("n_cuts", pa.int32()),
    ("cut_times_s", pa.list_(pa.float64())),
    ("motion_score", pa.float64()),
    ("decode_ok", pa.bool_()),
    ("error", pa.string()),
    ("attributes", pa.string()),
])  # fmt: skip


def rgb_to_hsv(rgb: np.ndarray, dark_floor: float = 0.0) -> np.ndarray:
    """uint8 RGB [..., 3] → float HSV on OpenCV's scale (H 0-180, S and V 0-255), as PySceneDetect uses.

    Pixels darker than `dark_floor` get hue and saturation 0: there they are codec noise, and a
    (2, 0, 1) pixel would otherwise count as fully saturated.
    """
    rgb = rgb.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Element-wise max/min of the three planes: much faster than a reduction over a length-3 axis.
    v = np.maximum(np.maximum(r, g), b)
    delta = v - np.minimum(np.minimum(r, g), b)
    s = np.where(v > 0, 255.0 * delta / np.maximum(v, 1e-6), 0.0)
    safe = np.maximum(delta, 1e-6)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = np.where(delta > 0, (h * 30.0) % 180.0, 0.0)
    dark = v < dark_floor
    return np.stack([np.where(dark, 0.0, h), np.where(dark, 0.0, s), v], axis=-1)


def _caption_fields(caption: str | None) -> dict:
    return {
        "caption": caption,
        "caption_chars": len(caption) if caption else 0,
        "caption_words": len(caption.split()) if caption else 0,
    }


def probe_clip(data_dir: Path, clip: SourceClip, config: ProbeConfig) -> dict:
    """Measure one clip. Never raises for a bad file: the row says decode_ok=False and why."""
    row = {name: None for name in METADATA_SCHEMA.names}
    row.update(path=clip.path, attributes=json.dumps(clip.attributes, sort_keys=True), **_caption_fields(clip.caption))
    if clip.problem:
        return {**row, "decode_ok": False, "error": clip.problem}
    path = Path(data_dir) / clip.path
    row.update(sha256=file_sha256(path), size_bytes=path.stat().st_size)
    try:
        container, info = open_video(path)
        with container:
            analysis = scaled_size(info.width, info.height, config.analysis_size)
            measures = _measure_frames(iter_frames(container, path, analysis), config)
    except VideoDecodeError as exc:
        return {**row, "decode_ok": False, "error": str(exc)}
    if measures["n_frames"] == 0:
        return {**row, "decode_ok": False, "error": f"{path}: no frame could be decoded"}
    return {
        **row, **measures,
        "container": info.container, "codec": info.codec, "width": info.width, "height": info.height,
        "has_audio": info.has_audio, "decode_ok": True, "error": None,
    }  # fmt: skip


def _measure_frames(frames: Iterable, config: ProbeConfig) -> dict:
    times, cuts, moving = [], [], []
    prev_rgb = prev_hsv = None
    for frame in frames:
        hsv = rgb_to_hsv(frame.rgb, config.dark_floor)
        if prev_rgb is not None:
            if np.abs(hsv - prev_hsv).mean() > config.cut_threshold:
                cuts.append(round(frame.time_s, 6))
            change = np.abs(frame.rgb.astype(np.int16) - prev_rgb) > config.motion_pixel_delta
            moving.append(float(change.any(axis=-1).mean()))
        prev_rgb, prev_hsv = frame.rgb.astype(np.int16), hsv
        times.append(frame.time_s)
    n = len(times)
    # Duration counts the last frame's display time too, so 16 frames at 8 fps last 2.0 s.
    step = (times[-1] - times[0]) / (n - 1) if n > 1 else 0.0
    duration = (times[-1] - times[0]) + step if n > 1 else 0.0
    return {
        "n_frames": n,
        "duration_s": duration,
        "fps": n / duration if duration > 0 else 0.0,
        "n_cuts": len(cuts),
        "cut_times_s": cuts,
        "motion_score": float(np.mean(moving)) if moving else 0.0,
    }


def probe_rows(data_dir: Path, clips: list[SourceClip], config: ProbeConfig, progress: bool = True) -> Iterator[dict]:
    for clip in tqdm(clips, desc="probe", unit="clip", disable=not progress):
        yield probe_clip(data_dir, clip, config)


def write_metadata(rows: Iterable[dict], out_path: Path, batch_size: int = 64) -> dict:
    """Stream rows into a parquet file; returns counts for asset metadata."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"clips": 0, "decode_failures": 0, "clips_with_cuts": 0}
    batch: list[dict] = []
    with pq.ParquetWriter(out_path, METADATA_SCHEMA) as writer:
        for row in rows:
            counts["clips"] += 1
            counts["decode_failures"] += not row["decode_ok"]
            counts["clips_with_cuts"] += bool(row["n_cuts"])
            batch.append(row)
            if len(batch) == batch_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=METADATA_SCHEMA))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=METADATA_SCHEMA))
    return counts
