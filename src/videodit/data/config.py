"""Typed configuration of the data layer; the whole schema and the presets are in `videodit.config`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """One training shape of the bucket table: `frames` × `height` × `width`; `weight` is its share of the batch budget.

    A T=1 bucket is an image bucket: it trains on single frames of that size (joint image+video training)."""

    height: int
    width: int
    frames: int
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def orientation(self) -> str:
        return "square" if self.width == self.height else "landscape" if self.width > self.height else "portrait"


def as_buckets(entries) -> tuple[Bucket, ...]:
    """A bucket table from Buckets or their dicts (a preset file, `asdict`, MLflow params)."""
    return tuple(b if isinstance(b, Bucket) else Bucket(**b) for b in entries)


def video_buckets(buckets: tuple[Bucket, ...]) -> tuple[Bucket, ...]:
    """The clip buckets (T > 1): the ones curation fills; image buckets reuse their sizes' clips."""
    return tuple(b for b in buckets if b.frames > 1)


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in moving-shapes dataset: every attribute combination, `clips_per_combination` times."""

    n_frames: int = 16
    height: int = 64
    width: int = 64
    fps: int = 8
    clips_per_combination: int = 1
    # Keep only this many clips (a seeded sample of the combinations); None keeps every combination.
    max_clips: int | None = None
    seed: int = 0
    # How much of the random range each clip's start, path length and cross position span: 1 anywhere the shape
    # fits, 0 one path per size and direction. Below 1 the layout is narrower, so a small model learns the
    # attributes from fewer steps.
    position_jitter: float = 1.0
    # The bucket table (copied from the project's); besides every combination at the default size, this many
    # seeded combinations are rendered in each other clip bucket (landscape, portrait, other durations).
    buckets: tuple[Bucket, ...] = ()
    clips_per_other_bucket: int = 0

    def __post_init__(self):
        object.__setattr__(self, "buckets", as_buckets(self.buckets))
        if not 0.0 <= self.position_jitter <= 1.0:
            raise ValueError(f"position_jitter={self.position_jitter} must lie in [0, 1]")


@dataclass(frozen=True)
class SourceConfig:
    """What `raw_videos` may read from a user's folder. Anything else is quarantined unread, with its reason."""

    # Symlinks whose target stays inside the source folder are followed only when this is set; a symlink that
    # leaves the folder is never followed.
    follow_symlinks: bool = False
    # A larger file is quarantined unread: it bounds what one clip can copy into data/ and the DVC remote.
    max_file_bytes: int = 4 << 30
    # False when a captioner is configured (`captioning.generates`): a video without a caption is then copied for
    # `captioned_clips` to caption; True quarantines it unread.
    captions_required: bool = True

    def __post_init__(self):
        if self.max_file_bytes <= 0:
            raise ValueError(f"max_file_bytes={self.max_file_bytes} must be positive")


@dataclass(frozen=True)
class ProbeConfig:
    """How `video_metadata` measures each clip."""

    # Frames are analysed at this short side: cut and motion scores barely change, decoding cost drops.
    analysis_size: int = 64
    # PySceneDetect's ContentDetector default: mean HSV delta (0-255) above which a frame starts a new shot.
    cut_threshold: float = 27.0
    # A cut is one frame above the threshold after at least this long below it (PySceneDetect's min_scene_len, merge
    # mode): a fast-moving shape is above it frame after frame and is no cut, while a 3-frame shot at 8 fps still is.
    min_scene_s: float = 0.2
    # Below this brightness (0-255) hue and saturation are codec noise and are not compared.
    dark_floor: float = 24.0
    # A pixel "moves" when its brightest channel changes by more than this (0-255); codec noise stays below.
    motion_pixel_delta: int = 24


@dataclass(frozen=True)
class ValidationConfig:
    """Bounds of the Great Expectations suite and the blocking accepted-fraction check."""

    min_fps: float = 4.0
    max_fps: float = 120.0
    min_duration_s: float = 0.5
    max_duration_s: float = 600.0
    min_frames: int = 8
    caption_min_chars: int = 8
    caption_max_chars: int = 300
    # Fraction of pixels that move per frame, averaged over the clip; static footage scores ~0.
    min_motion: float = 0.002
    # Near-duplicates (`duplicates.py`): a signature cell differs when it changes by more than this (0-255), and
    # clips whose signatures differ in at most this fraction of cells are one clip shown twice.
    near_duplicate_pixel_delta: int = 32
    near_duplicate_max_changed: float = 0.002
    min_accepted_fraction: float = 0.5
    # A clip whose aspect ratio is more extreme than the bucket table's widest (or tallest) by more than this
    # factor would lose too much to the crop: a 3:1 clip still fills a 2:1 bucket, a 10:1 strip does not.
    max_aspect_crop: float = 1.5


@dataclass(frozen=True)
class CurationConfig:
    """How accepted clips become training clips of the bucket table's shapes."""

    fps: float = 8.0
    # The default generation size (copied from the project's): the bucket training reads until it samples buckets.
    n_frames: int = 17
    height: int = 64
    width: int = 64
    # The bucket table (copied from the project's): a clip goes to the size nearest its aspect ratio and the longest
    # duration it fills.
    buckets: tuple[Bucket, ...] = (Bucket(64, 64, 17),)
    val_fraction: float = 0.1
    clips_per_shard: int = 256
    # A video is split at its cuts into shots. A shot shorter than this is quarantined (fast cutting, as Sora's
    # curation rejects it); each longer one gives a window at its start, in the longest bucket it fills, and
    # then one every `window_stride_s` that fills the longest bucket, at most `max_windows_per_source` per video.
    min_shot_s: float = 0.5
    window_stride_s: float = 2.0
    max_windows_per_source: int = 8

    def __post_init__(self):
        object.__setattr__(self, "buckets", as_buckets(self.buckets))
        if not video_buckets(self.buckets):
            raise ValueError("buckets: the table needs at least one clip bucket (frames > 1)")
        if self.window_stride_s <= 0 or self.max_windows_per_source < 1:
            raise ValueError(f"window_stride_s={self.window_stride_s} must be positive and "
                             f"max_windows_per_source={self.max_windows_per_source} at least 1")

    @property
    def default_bucket(self) -> str:
        return Bucket(self.height, self.width, self.n_frames).name
