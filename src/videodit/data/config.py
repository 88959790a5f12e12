"""Typed configuration of the data layer; the whole schema and the presets are in `videodit.config`."""

from __future__ import annotations

from dataclasses import dataclass


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

    def __post_init__(self):
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
    # Below this brightness (0-255) hue and saturation are codec noise and are not compared.
    dark_floor: float = 24.0
    # A pixel "moves" when its brightest channel changes by more than this (0-255); codec noise stays below.
    motion_pixel_delta: int = 24


@dataclass(frozen=True)
class ValidationConfig:
    """Bounds of the Great Expectations suite and the blocking accepted-fraction check."""

    min_width: int = 32
    min_height: int = 32
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


@dataclass(frozen=True)
class CurationConfig:
    """How accepted clips become fixed-size training clips."""

    fps: float = 8.0
    n_frames: int = 16
    height: int = 64
    width: int = 64
    val_fraction: float = 0.1
    clips_per_shard: int = 256
