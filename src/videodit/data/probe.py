"""`video_metadata`: one row per clip, measured by decoding it once, and that clip's training clip.

Scene cuts use the content detector of PySceneDetect (mean HSV change between frames against a
threshold), motion is the fraction of pixels that change per frame; both are measured at a small
analysis size. The same decode also yields the training clip curation would make (resampled by
timestamps, scaled to cover, centre-cropped), so curation copies accepted clips instead of decoding
them again. Rows are streamed to parquet in small batches and clips to shards, so memory does not
grow with the number of clips.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from videodit.data.config import CurationConfig, ProbeConfig
from videodit.data.curation import GEOMETRY_FILE, clip_geometry, cover_size, resample, training_clip
from videodit.data.duplicates import content_signature, thumbnail
from videodit.data.shards import ShardWriter, file_sha256
from videodit.data.sources import SourceClip
from videodit.data.video_io import (
    DecodedFrame, RGBConverter, StreamInfo, VideoDecodeError, decode_video, frame_time, open_video, scaled_size,
)  # fmt: skip
from videodit.files import replaced_atomically

METADATA_FILE = "metadata.parquet"
DECODED_CLIPS_DIR = "decoded_clips"  # a shard folder of the training clips, keyed by path
MEASURE_CHUNK = 32  # frames measured per numpy call: fast, and memory stays bounded for long clips

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
    ("signature", pa.binary()),  # content signature for near-duplicate detection (`duplicates.py`)
    ("decode_ok", pa.bool_()),
    ("error", pa.string()),
    ("attributes", pa.string()),
])  # fmt: skip


def channel_max(pixels: np.ndarray) -> np.ndarray:
    """Max over the last (RGB) axis, plane by plane: ~9x faster than a reduction over a length-3 axis."""
    return np.maximum(np.maximum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])


def rgb_to_hsv(rgb: np.ndarray, dark_floor: float = 0.0) -> np.ndarray:
    """uint8 RGB [..., 3] → float32 HSV on OpenCV's scale (H 0-180, S and V 0-255), as PySceneDetect uses.

    Pixels darker than `dark_floor` get hue and saturation 0: there they are codec noise, and a
    (2, 0, 1) pixel would otherwise count as fully saturated.
    """
    # Max, min and the hue branch are exact on the uint8 planes, and hue needs one division, not three.
    r8, g8, b8 = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v8 = channel_max(rgb)
    delta = (v8 - np.minimum(np.minimum(r8, g8), b8)).astype(np.float32)
    v = v8.astype(np.float32)
    s = 255.0 * delta / np.maximum(v, 1e-6)
    r, g, b = r8.astype(np.float32), g8.astype(np.float32), b8.astype(np.float32)
    is_r, is_g = v8 == r8, v8 == g8
    offset = np.where(is_r, np.float32(0.0), np.where(is_g, np.float32(2.0), np.float32(4.0)))
    h = (offset + np.where(is_r, g - b, np.where(is_g, b - r, r - g)) / np.maximum(delta, 1e-6)) * 30.0
    h = np.where(h < 0, h + 180.0, h)  # grey pixels (delta 0) come out as hue 0
    dark = v8 < dark_floor
    hsv = np.empty(rgb.shape, np.float32)
    hsv[..., 0], hsv[..., 1], hsv[..., 2] = np.where(dark, 0.0, h), np.where(dark, 0.0, s), v
    return hsv


def _caption_fields(caption: str | None) -> dict:
    return {
        "caption": caption,
        "caption_chars": len(caption) if caption else 0,
        "caption_words": len(caption.split()) if caption else 0,
    }


@dataclass(frozen=True)
class ProbedClip:
    row: dict  # one METADATA_SCHEMA row
    frames: np.ndarray | None = None  # the training clip, uint8 [T, H, W, 3]; None when the clip gives none
    frame_times_s: list[float] | None = None  # source timestamps of its frames


def probe_clip(data_dir: Path, clip: SourceClip, config: ProbeConfig, curation: CurationConfig) -> ProbedClip:
    """Measure one clip. Never raises for a bad file: the row says decode_ok=False and why."""
    row = {name: None for name in METADATA_SCHEMA.names}
    row.update(path=clip.path, attributes=json.dumps(clip.attributes, sort_keys=True), **_caption_fields(clip.caption))
    if clip.problem:
        return ProbedClip({**row, "decode_ok": False, "error": clip.problem})
    path = Path(data_dir) / clip.path
    row.update(sha256=file_sha256(path), size_bytes=path.stat().st_size)
    try:
        container, info = open_video(path)
        with container:
            measures, picked = _decode_once(container, path, info, config, curation)
    except VideoDecodeError as exc:
        return ProbedClip({**row, "decode_ok": False, "error": str(exc)})
    if measures["n_frames"] == 0:
        return ProbedClip({**row, "decode_ok": False, "error": f"{path}: no frame could be decoded"})
    row = {
        **row, **measures,
        "container": info.container, "codec": info.codec, "width": info.width, "height": info.height,
        "has_audio": info.has_audio, "decode_ok": True, "error": None,
    }  # fmt: skip
    return ProbedClip(row, training_clip(picked, curation), [round(f.time_s, 6) for f in picked])


def _decode_once(
    container, path: Path, info: StreamInfo, config: ProbeConfig, curation: CurationConfig
) -> tuple[dict, list[DecodedFrame]]:
    """Every frame is measured at analysis size; the first ones also feed the training clip at cover size."""
    analysis = scaled_size(info.width, info.height, config.analysis_size)
    cover = cover_size(info.width, info.height, curation.width, curation.height)
    analysis_rgb, cover_rgb = RGBConverter(path, analysis), RGBConverter(path, cover)
    measures = _FrameMeasures(config)
    decoded = decode_video(container, path)

    def cover_frames() -> Iterator[DecodedFrame]:
        for frame in decoded:
            time_s, rgb = frame_time(frame), analysis_rgb(frame)
            measures.add(time_s, rgb)
            yield DecodedFrame(time_s, rgb if cover == analysis else cover_rgb(frame))

    picked = resample(cover_frames(), curation.fps, curation.n_frames)
    for frame in decoded:  # the training clip is complete: the rest of the clip is only measured
        measures.add(frame_time(frame), analysis_rgb(frame))
    return measures.result(), picked


class _FrameMeasures:
    """Cut and motion measures between consecutive frames, computed in numpy over chunks of frames."""

    def __init__(self, config: ProbeConfig):
        self.config = config
        self.times: list[float] = []
        self.cuts: list[float] = []
        self.moving: list[float] = []
        self.thumbnails: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []  # starts with the last frame of the previous chunk

    def add(self, time_s: float, rgb: np.ndarray) -> None:
        self.times.append(time_s)
        self.thumbnails.append(thumbnail(rgb))
        self._pending.append(rgb)
        if len(self._pending) > MEASURE_CHUNK:
            self._flush()

    def _flush(self) -> None:
        if len(self._pending) < 2:
            return
        rgb = np.stack(self._pending)
        n = len(rgb) - 1
        hsv = rgb_to_hsv(rgb, self.config.dark_floor)
        hsv_change = np.abs(hsv[1:] - hsv[:-1]).reshape(n, -1).mean(axis=1)
        # |a - b| on uint8 without a wider copy. A pixel moved when any channel changed by more than the delta.
        later, earlier = rgb[1:], rgb[:-1]
        moved = channel_max(np.maximum(later, earlier) - np.minimum(later, earlier)) > self.config.motion_pixel_delta
        self.moving += [float(m) for m in moved.reshape(n, -1).mean(axis=1)]
        times = self.times[len(self.times) - n :]
        self.cuts += [round(t, 6) for t, change in zip(times, hsv_change) if change > self.config.cut_threshold]
        self._pending = self._pending[-1:]

    def result(self) -> dict:
        self._flush()
        times, n = self.times, len(self.times)
        # Duration counts the last frame's display time too, so 16 frames at 8 fps last 2.0 s.
        step = (times[-1] - times[0]) / (n - 1) if n > 1 else 0.0
        duration = (times[-1] - times[0]) + step if n > 1 else 0.0
        return {
            "n_frames": n,
            "duration_s": duration,
            "fps": n / duration if duration > 0 else 0.0,
            "n_cuts": len(self.cuts),
            "cut_times_s": self.cuts,
            "motion_score": float(np.mean(self.moving)) if self.moving else 0.0,
            "signature": content_signature(self.thumbnails) if self.thumbnails else None,
        }


def probe_rows(
    data_dir: Path, clips: list[SourceClip], config: ProbeConfig, curation: CurationConfig, progress: bool = True
) -> Iterator[ProbedClip]:
    for clip in tqdm(clips, desc="probe", unit="clip", disable=not progress):
        yield probe_clip(data_dir, clip, config, curation)


def write_metadata(probed: Iterable[ProbedClip], out_dir: Path, curation: CurationConfig, batch_size: int = 64) -> dict:
    """Stream rows into `out_dir`/metadata.parquet and training clips into `out_dir`/decoded_clips;
    returns counts for asset metadata."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir / DECODED_CLIPS_DIR, ignore_errors=True)  # no stale shards from an earlier run
    clips = ShardWriter(out_dir / DECODED_CLIPS_DIR, curation.clips_per_shard)
    counts = {"clips": 0, "decode_failures": 0, "clips_with_cuts": 0}
    batch: list[dict] = []
    with replaced_atomically(out_dir / METADATA_FILE) as table, pq.ParquetWriter(table, METADATA_SCHEMA) as writer:
        for clip in probed:
            row = clip.row
            counts["clips"] += 1
            counts["decode_failures"] += not row["decode_ok"]
            counts["clips_with_cuts"] += bool(row["n_cuts"])
            if clip.frames is not None:
                clips.add(clip.frames, {"path": row["path"], "frame_times_s": clip.frame_times_s})
            batch.append(row)
            if len(batch) == batch_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=METADATA_SCHEMA))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=METADATA_SCHEMA))
    clips.close()
    (out_dir / DECODED_CLIPS_DIR / GEOMETRY_FILE).write_text(json.dumps(clip_geometry(curation), indent=2))
    return counts
