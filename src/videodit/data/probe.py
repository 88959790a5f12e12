"""`video_metadata`: one row per clip, measured by decoding it once, and that clip's training clip.

Scene cuts come from PySceneDetect's ContentDetector (mean HSV change between frames against a threshold), motion
is the fraction of pixels that change per frame; both are measured at a small analysis size. The cuts split the
clip into shots, and the same decode also yields the training windows of every long-enough shot that curation would
make (resampled by timestamps, scaled to cover the bucket nearest the clip's aspect ratio, centre-cropped), so
curation copies accepted clips' windows instead of decoding them again. Rows are streamed to parquet in small batches and clips to shards, so memory does not
grow with the number of clips.
"""

from __future__ import annotations

import json
import shutil
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector
from tqdm import tqdm

from videodit.data.config import Bucket, CurationConfig, ProbeConfig, video_buckets
from videodit.data.curation import (
    GEOMETRY_FILE, Resampler, bucket_size, clip_geometry, cover_size, crop_box, longest_bucket, shortest_shot_s,
    training_clip,
)  # fmt: skip
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
WINDOW_TYPE = pa.struct([("window", pa.int32()), ("shot", pa.int32()), ("start_s", pa.float64()),
                         ("end_s", pa.float64()), ("bucket", pa.string())])  # fmt: skip

METADATA_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("sha256", pa.string()),
    ("size_bytes", pa.int64()),
    ("container", pa.string()),
    ("codec", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("aspect_ratio", pa.float64()),  # width / height
    ("pixels", pa.int64()),  # width × height
    ("bucket", pa.string()),  # the longest bucket its windows fill; None when they fill none
    ("crop", pa.list_(pa.int32())),  # [left, top, width, height] in source pixels: what the bucket keeps
    ("fps", pa.float64()),
    ("n_frames", pa.int32()),
    ("duration_s", pa.float64()),
    ("has_audio", pa.bool_()),
    ("caption", pa.string()),
    ("caption_chars", pa.int32()),
    ("caption_words", pa.int32()),
    ("n_cuts", pa.int32()),
    ("cut_times_s", pa.list_(pa.float64())),
    ("shot_times_s", pa.list_(pa.list_(pa.float64()))),  # [start, end] of each shot, split at the cuts
    ("n_windows", pa.int32()),
    ("windows", pa.list_(WINDOW_TYPE)),  # the training windows of its long-enough shots
    ("motion_score", pa.float64()),
    ("signature", pa.binary()),  # content signature for near-duplicate detection (`duplicates.py`)
    ("decode_ok", pa.bool_()),
    ("error", pa.string()),
    ("attributes", pa.string()),
])  # fmt: skip


def channel_max(pixels: np.ndarray) -> np.ndarray:
    """Max over the last (RGB) axis, plane by plane: ~9x faster than a reduction over a length-3 axis."""
    return np.maximum(np.maximum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])


def _caption_fields(caption: str | None) -> dict:
    return {
        "caption": caption,
        "caption_chars": len(caption) if caption else 0,
        "caption_words": len(caption.split()) if caption else 0,
    }


@dataclass(frozen=True)
class Window:
    """One training clip of a shot: its frames' source seconds and the bucket it fills."""

    shot: int
    start_s: float
    end_s: float
    bucket: Bucket
    frames: np.ndarray  # uint8 [T, H, W, 3]
    frame_times_s: list[float]  # source timestamps of its frames


@dataclass(frozen=True)
class ProbedClip:
    row: dict  # one METADATA_SCHEMA row
    windows: list[Window] = ()


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
        size = bucket_size(info.width, info.height, curation.buckets)
        cover = cover_size(info.width, info.height, size[1], size[0])
        with container:
            measures, windows = _decode_once(container, path, info, config, curation, cover, size)
    except VideoDecodeError as exc:
        return ProbedClip({**row, "decode_ok": False, "error": str(exc)})
    if measures["n_frames"] == 0:
        return ProbedClip({**row, "decode_ok": False, "error": f"{path}: no frame could be decoded"})
    longest = max(windows, key=lambda w: w.bucket.frames, default=None)
    row = {
        **row, **measures,
        "container": info.container, "codec": info.codec, "width": info.width, "height": info.height,
        "aspect_ratio": info.width / info.height, "pixels": info.width * info.height,
        "bucket": longest and longest.bucket.name, "crop": crop_box(info.width, info.height, cover, size),
        "n_windows": len(windows), "windows": [
            {"window": i, "shot": w.shot, "start_s": w.start_s, "end_s": w.end_s, "bucket": w.bucket.name}
            for i, w in enumerate(windows)
        ],
        "has_audio": info.has_audio, "decode_ok": True, "error": None,
    }  # fmt: skip
    return ProbedClip(row, windows)


def _decode_once(
    container, path: Path, info: StreamInfo, config: ProbeConfig, curation: CurationConfig,
    cover: tuple[int, int], size: tuple[int, int],
) -> tuple[dict, list[Window]]:
    """Every frame is measured at analysis size and goes to the cut detector; until the clip has all its windows,
    it also goes at `cover` size to the shot it belongs to."""
    analysis = scaled_size(info.width, info.height, config.analysis_size)
    analysis_rgb, cover_rgb = RGBConverter(path, analysis), RGBConverter(path, cover)
    measures = _FrameMeasures(config, info.nominal_fps)
    shots = _ShotWindows(curation, size)
    waiting: deque[DecodedFrame] = deque()  # the detector reports a cut up to `measures.delay` frames late

    def route(cuts: list[float], keep: int) -> None:
        for cut in cuts:
            while waiting and waiting[0].time_s < cut:
                shots.add(waiting.popleft())
            shots.cut(cut)
        while len(waiting) > keep:
            shots.add(waiting.popleft())

    for frame in decode_video(container, path):
        time_s, rgb = frame_time(frame), analysis_rgb(frame)
        cuts = measures.add(time_s, rgb)
        if not shots.full:
            waiting.append(DecodedFrame(time_s, rgb if cover == analysis else cover_rgb(frame)))
        route(cuts, measures.delay)
    route(measures.close(), 0)
    result = measures.result()
    if result["n_frames"]:
        shots.close(result["shot_times_s"][-1][1])
    return result, shots.windows


class _ShotWindows:
    """The training windows of each shot, its frames resampled to the training fps: one at the shot's start in the
    longest bucket it fills, then one every `window_stride_s` that fills the longest bucket of the clip's size. A
    shot shorter than `shortest_shot_s` gives none; a clip gives at most `max_windows_per_source`."""

    def __init__(self, curation: CurationConfig, size: tuple[int, int]):
        self.curation, self.size = curation, size
        self.longest = max((b for b in video_buckets(curation.buckets) if (b.height, b.width) == size), key=lambda b: b.frames)
        self.stride = max(1, round(curation.window_stride_s * curation.fps))
        self.shortest_s = shortest_shot_s(curation)
        self.windows: list[Window] = []
        self.shot = -1
        self._start(None)

    @property
    def full(self) -> bool:
        return len(self.windows) + len(self.pending) >= self.curation.max_windows_per_source

    def _start(self, start_s: float | None) -> None:
        self.shot += 1
        self.start_s = start_s  # None: the first frame's time
        self.resampler = Resampler(self.curation.fps)
        self.recent: deque[DecodedFrame] = deque(maxlen=self.longest.frames)
        self.picks = 0
        self.pending: list[Window] = []  # windows of a shot not yet known to be long enough

    def add(self, frame: DecodedFrame) -> None:
        self.start_s = frame.time_s if self.start_s is None else self.start_s
        self._take(self.resampler.push(frame))

    def cut(self, time_s: float) -> None:
        self.close(time_s)
        self._start(time_s)

    def close(self, end_s: float) -> None:
        """End the current shot at `end_s`: its windows count if it lasted long enough."""
        self._take(self.resampler.finish())
        if self.start_s is not None and end_s - self.start_s >= self.shortest_s:
            bucket = longest_bucket(self.picks, self.size, self.curation.buckets)
            if self.picks < self.longest.frames and bucket and not self.full:  # shorter than the longest bucket: one window
                self._emit(list(self.recent), bucket)
            self.windows += self.pending
        self.pending = []

    def _take(self, picks: list[DecodedFrame]) -> None:
        for pick in picks:
            self.recent.append(pick)
            self.picks += 1
            past = self.picks - self.longest.frames
            if past >= 0 and past % self.stride == 0 and not self.full:
                self._emit(list(self.recent), self.longest)

    def _emit(self, frames: list[DecodedFrame], bucket: Bucket) -> None:
        frames = frames[: bucket.frames]
        start_s = round(frames[0].time_s, 6)
        window = Window(self.shot, start_s, round(start_s + bucket.frames / self.curation.fps, 6), bucket,
                        training_clip(frames, bucket), [round(f.time_s, 6) for f in frames])  # fmt: skip
        # Windows wait until the shot is known to be long enough; memory stays bounded for long shots.
        self.pending.append(window)
        if frames[-1].time_s - self.start_s >= self.shortest_s:
            self.windows += self.pending
            self.pending = []


class _FrameMeasures:
    """Cuts (PySceneDetect, frame by frame) and motion between consecutive frames (numpy, over chunks of frames)."""

    def __init__(self, config: ProbeConfig, fps: float):
        self.config = config
        self.fps = fps or 30.0  # FrameTimecode needs a rate; cuts are compared in seconds, which it does not change
        self.detector = ContentDetector(threshold=config.cut_threshold, min_scene_len=config.min_scene_s)
        self.delay = self.detector.event_buffer_length
        self.times: list[float] = []
        self.cuts: list[float] = []
        self.moving: list[float] = []
        self.thumbnails: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []  # starts with the last frame of the previous chunk

    def add(self, time_s: float, rgb: np.ndarray) -> list[float]:
        """Measure a frame; returns the cuts the detector found with it (maybe at an earlier frame)."""
        self.times.append(time_s)
        self.thumbnails.append(thumbnail(rgb))
        self._pending.append(rgb)
        if len(self._pending) > MEASURE_CHUNK:
            self._flush()
        return self._found(self.detector.process_frame(FrameTimecode(time_s, fps=self.fps), self._detector_frame(rgb)))

    def close(self) -> list[float]:
        """The cuts the detector was still holding back."""
        self._flush()
        return self._found(self.detector.post_process(FrameTimecode(self.times[-1], fps=self.fps))) if self.times else []

    def _found(self, cuts: list[FrameTimecode]) -> list[float]:
        found = [round(c.seconds, 6) for c in cuts]
        self.cuts += found
        return found

    def _detector_frame(self, rgb: np.ndarray) -> np.ndarray:
        """BGR for PySceneDetect, with pixels below our `dark_floor` made grey: its HSV conversion then gives them
        hue and saturation 0, as ours did. Without that, codec noise in dark areas (a (2, 0, 1) pixel is fully
        saturated) adds up to false cuts in dark footage."""
        v = channel_max(rgb)
        floored = np.where((v < self.config.dark_floor)[..., None], v[..., None], rgb)
        return np.ascontiguousarray(floored[..., ::-1])

    def _flush(self) -> None:
        if len(self._pending) < 2:
            return
        rgb = np.stack(self._pending)
        n = len(rgb) - 1
        # |a - b| on uint8 without a wider copy. A pixel moved when any channel changed by more than the delta.
        later, earlier = rgb[1:], rgb[:-1]
        moved = channel_max(np.maximum(later, earlier) - np.minimum(later, earlier)) > self.config.motion_pixel_delta
        self.moving += [float(m) for m in moved.reshape(n, -1).mean(axis=1)]
        self._pending = self._pending[-1:]

    def result(self) -> dict:
        times, n = self.times, len(self.times)
        # Duration counts the last frame's display time too, so 16 frames at 8 fps last 2.0 s.
        step = (times[-1] - times[0]) / (n - 1) if n > 1 else 0.0
        duration = (times[-1] - times[0]) + step if n > 1 else 0.0
        bounds = [round(times[0], 6), *self.cuts, round(times[-1] + step, 6)] if n else []
        return {
            "n_frames": n,
            "duration_s": duration,
            "fps": n / duration if duration > 0 else 0.0,
            "n_cuts": len(self.cuts),
            "cut_times_s": self.cuts,
            "shot_times_s": [list(pair) for pair in zip(bounds, bounds[1:])],
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
    counts = {"clips": 0, "decode_failures": 0, "clips_with_cuts": 0, "windows": 0}
    batch: list[dict] = []
    with replaced_atomically(out_dir / METADATA_FILE) as table, pq.ParquetWriter(table, METADATA_SCHEMA) as writer:
        for clip in probed:
            row = clip.row
            counts["clips"] += 1
            counts["decode_failures"] += not row["decode_ok"]
            counts["clips_with_cuts"] += bool(row["n_cuts"])
            counts["windows"] += len(clip.windows)
            for i, w in enumerate(clip.windows):
                clips.add(w.frames, {"path": row["path"], "window": i, "shot": w.shot, "start_s": w.start_s, "end_s": w.end_s,
                                     "bucket": w.bucket.name, "crop": row["crop"], "frame_times_s": w.frame_times_s})
            batch.append(row)
            if len(batch) == batch_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=METADATA_SCHEMA))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=METADATA_SCHEMA))
    clips.close()
    (out_dir / DECODED_CLIPS_DIR / GEOMETRY_FILE).write_text(json.dumps(clip_geometry(curation), indent=2))
    return counts
