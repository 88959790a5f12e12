"""Read a clip's shape, colour, size and direction from its pixels alone — no model involved — naming each
with the vocabulary of the `Domain` it is read against.

Every frame is split into foreground (pixels brighter than half the clip's peak brightness) and black
background; the largest connected foreground blob is "the shape". Half-maximum is the threshold that a
symmetric blur leaves in place on a straight edge, so blurry generated frames measure like sharp ones.

Decisions, each from one measure:
  colour     the domain colour nearest to the median RGB of the blob, both scaled so their brightest
             channel is 1 (a dim or washed-out red is still red);
  shape      an apex-up triangle piles its pixels low, so its row coordinates skew negative (circle and
             square: 0) even when blur eats the apex; circle and square then split by how much of
             their bounding box they fill (π/4 against 1);
  size       bounding-box side over frame side, cut at the geometric means of consecutive domain sizes;
  direction  the domain direction closest in angle to the centroid's least-squares velocity over the clip.
Clips without a plausible single shape (all black, noise, a flat colour) read as UNKNOWN throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from videodit.domain import Domain

UNKNOWN = "unknown"
MEASURED_SHAPES = frozenset({"circle", "square", "triangle"})  # the shapes `_shape` tells apart

# A clip whose 99th-percentile brightness is below this (0-255) has no foreground at all.
MIN_PEAK_BRIGHTNESS = 48
PEAK_PERCENTILE = 99
HALF_MAXIMUM = 0.5
# Plausible mean foreground fraction of a frame: the dataset spans 0.031 (small triangle) to 0.16
# (large square); noise or a flat colour lights up far more, an empty clip far less.
MIN_FOREGROUND_FRACTION = 0.01
MAX_FOREGROUND_FRACTION = 0.35
# The shape must be visible in at least this fraction of frames.
MIN_PRESENT_FRACTION = 0.5
# The largest blob must hold at least this share of the foreground, else it is not one shape.
MIN_BLOB_SHARE = 0.7
# Shape cuts. Ideal shapes: rows of an apex-up triangle have skewness −2√2/5 ≈ −0.57 (symmetric shapes:
# 0); a circle fills π/4 ≈ 0.79 of its bounding box, a square 1. Small rasterised shapes stray from the
# ideal: on 32×32 clips blurred 3×3 with σ=10 noise, triangles measured −0.29 at most, circles up to
# ±0.11 skewness and 0.89 fill, squares ≥ 0.94 fill. Each cut sits midway between those worst cases.
TRIANGLE_SKEWNESS_CUT = -0.2
FILL_CUT = 0.91
# Every dataset clip travels ≥ 40% of the frame side; less than this is "not moving".
MIN_TRAVEL_FRACTION = 0.1


def check_video(video: np.ndarray, name: str = "video") -> None:
    """Raise a ValueError naming what is wrong unless `video` is uint8 [T, H, W, 3] with T ≥ 1."""
    if not isinstance(video, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(video).__name__}")
    if video.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got dtype {video.dtype}")
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < 1:
        raise ValueError(f"{name} must have shape [T, H, W, 3] with T >= 1, got {video.shape}")


@dataclass(frozen=True)
class ShapeTrack:
    """Per-frame measurements of the largest foreground blob; NaN where a frame has none."""

    present: np.ndarray  # bool [T]
    foreground_fraction: np.ndarray  # [T] all foreground pixels / frame pixels
    blob_share: np.ndarray  # [T] largest blob pixels / foreground pixels
    centroid_x: np.ndarray  # [T] pixels
    centroid_y: np.ndarray  # [T] pixels
    box_width: np.ndarray  # [T] pixels
    box_height: np.ndarray  # [T] pixels
    fill_ratio: np.ndarray  # [T] blob pixels / bounding-box pixels
    row_skewness: np.ndarray  # [T] skewness of the blob's row coordinates; < 0: mass sits low
    area: np.ndarray  # [T] blob pixels
    frame_colour: np.ndarray  # [T, 3] mean RGB (0-255) of the blob's pixels in each frame
    colour: np.ndarray  # [3] median RGB (0-255) of all blob pixels; zeros when there are none
    peak_brightness: float  # 0-255
    background_level: float  # 0-255, median brightness outside the foreground
    frame_side: int  # min(H, W)


def _skewness(values: np.ndarray) -> float:
    spread = values.std()
    return float(((values - values.mean()) ** 3).mean() / spread**3) if spread > 0 else 0.0


def track_shape(video: np.ndarray) -> ShapeTrack:
    """Measure the largest foreground blob in every frame of a uint8 [T, H, W, 3] clip."""
    check_video(video)
    n_frames, height, width, _ = video.shape
    brightness = video.max(axis=-1)
    peak = float(np.percentile(brightness, PEAK_PERCENTILE))
    foreground = brightness >= max(MIN_PEAK_BRIGHTNESS, HALF_MAXIMUM * peak)
    per_frame = {key: np.full(n_frames, np.nan) for key in (
        "blob_share", "centroid_x", "centroid_y", "box_width", "box_height", "fill_ratio", "row_skewness", "area",
    )}  # fmt: skip
    per_frame["frame_colour"] = np.full((n_frames, 3), np.nan)
    present = np.zeros(n_frames, dtype=bool)
    blob_pixels = []
    for t in range(n_frames):
        labels, n_blobs = ndimage.label(foreground[t])
        if n_blobs == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        blob = labels == 1 + int(np.argmax(sizes))
        ys, xs = np.nonzero(blob)
        box_height, box_width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        present[t] = True
        per_frame["blob_share"][t] = sizes.max() / sizes.sum()
        per_frame["centroid_x"][t] = xs.mean() + 0.5
        per_frame["centroid_y"][t] = ys.mean() + 0.5
        per_frame["box_width"][t] = box_width
        per_frame["box_height"][t] = box_height
        per_frame["fill_ratio"][t] = len(ys) / (box_width * box_height)
        per_frame["row_skewness"][t] = _skewness(ys)
        per_frame["area"][t] = len(ys)
        blob_pixels.append(video[t][blob])
        per_frame["frame_colour"][t] = blob_pixels[-1].mean(axis=0)
    colour = np.median(np.concatenate(blob_pixels), axis=0) if blob_pixels else np.zeros(3)
    background = brightness[~foreground]
    return ShapeTrack(
        present=present,
        foreground_fraction=foreground.mean(axis=(1, 2)),
        colour=colour.astype(np.float64),
        peak_brightness=peak,
        background_level=float(np.median(background)) if background.size else 0.0,
        frame_side=min(height, width),
        **per_frame,
    )


@dataclass(frozen=True)
class Motion:
    """The centroid's straight-line fit over the clip."""

    dx: float  # pixels moved from the first to the last frame
    dy: float
    residual: float  # RMS distance (pixels) of the centroids from the fitted line


def fit_motion(track: ShapeTrack) -> Motion:
    """Least-squares line through the centroids: robust to one jittery frame, unlike first-vs-last."""
    times = np.flatnonzero(track.present).astype(np.float64)
    if len(times) < 2:
        return Motion(0.0, 0.0, 0.0)
    span = len(track.present) - 1
    xs, ys = track.centroid_x[track.present], track.centroid_y[track.present]
    (vx, x0), (vy, y0) = np.polyfit(times, xs, deg=1), np.polyfit(times, ys, deg=1)
    residual = np.sqrt(np.mean((xs - (x0 + vx * times)) ** 2 + (ys - (y0 + vy * times)) ** 2))
    return Motion(float(vx * span), float(vy * span), float(residual))


@dataclass(frozen=True)
class ClipAttributes:
    """What a clip shows, with the measures each decision came from."""

    colour: str
    shape: str
    size: str
    direction: str
    foreground_fraction: float  # mean over frames
    fill_ratio: float  # median over frames where the shape is present
    row_skewness: float  # median; 0 for circle and square, −0.57 for an apex-up triangle
    side_fraction: float  # median bounding-box side / frame side
    displacement_px: tuple[float, float]  # (dx, dy) of the centroid over the whole clip, from the fit

    @property
    def is_readable(self) -> bool:
        return self.shape != UNKNOWN


def _is_one_shape(track: ShapeTrack) -> bool:
    present_fraction = track.present.mean()
    fraction = float(track.foreground_fraction.mean())
    return (
        present_fraction >= MIN_PRESENT_FRACTION
        and MIN_FOREGROUND_FRACTION <= fraction <= MAX_FOREGROUND_FRACTION
        and float(np.nanmedian(track.blob_share)) >= MIN_BLOB_SHARE
    )


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """RGB scaled so its brightest channel is 1 (black stays black)."""
    return rgb / np.maximum(rgb.max(axis=-1, keepdims=True), 1.0)


def _nearest_colour(rgb: np.ndarray, domain: Domain) -> str:
    names = list(domain.colours)
    palette = _chroma(np.array([domain.colours[name] for name in names], dtype=np.float64))
    return names[int(np.argmin(np.linalg.norm(palette - _chroma(rgb), axis=1)))]


def _shape(fill_ratio: float, row_skewness: float) -> str:
    if row_skewness < TRIANGLE_SKEWNESS_CUT:
        return "triangle"
    return "square" if fill_ratio >= FILL_CUT else "circle"


def _size(side_fraction: float, domain: Domain) -> str:
    names = sorted(domain.sizes, key=domain.sizes.get)
    sides = np.array([domain.sizes[name] for name in names])
    cuts = np.sqrt(sides[:-1] * sides[1:])
    return names[int(np.searchsorted(cuts, side_fraction, side="right"))]


def _direction(dx: float, dy: float, frame_side: int, domain: Domain) -> str:
    if max(abs(dx), abs(dy)) < MIN_TRAVEL_FRACTION * frame_side:
        return UNKNOWN
    names = list(domain.directions)
    unit = np.array([domain.directions[name] for name in names], dtype=np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return names[int(np.argmax(unit @ (dx, dy)))]  # the first of equally close directions


def read_attributes(video: np.ndarray, domain: Domain) -> ClipAttributes:
    """Colour, shape, size and direction of the one shape in a uint8 [T, H, W, 3] clip, or UNKNOWN."""
    return attributes_of_track(track_shape(video), domain)


def attributes_of_track(track: ShapeTrack, domain: Domain) -> ClipAttributes:
    """`read_attributes` of a clip already tracked (a caller that also reads the track itself tracks once)."""
    unmeasured = sorted(set(domain.shapes) - MEASURED_SHAPES)
    if unmeasured:
        raise ValueError(f"the domain names shapes {unmeasured} this reader cannot measure: it knows {sorted(MEASURED_SHAPES)}")
    fraction = float(track.foreground_fraction.mean())
    if not _is_one_shape(track):
        nan = float("nan")
        return ClipAttributes(UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, fraction, nan, nan, nan, (0.0, 0.0))
    fill_ratio = float(np.nanmedian(track.fill_ratio))
    row_skewness = float(np.nanmedian(track.row_skewness))
    side_fraction = float(np.nanmedian(np.maximum(track.box_width, track.box_height))) / track.frame_side
    motion = fit_motion(track)
    return ClipAttributes(
        colour=_nearest_colour(track.colour, domain),
        shape=_shape(fill_ratio, row_skewness),
        size=_size(side_fraction, domain),
        direction=_direction(motion.dx, motion.dy, track.frame_side, domain),
        foreground_fraction=fraction,
        fill_ratio=fill_ratio,
        row_skewness=row_skewness,
        side_fraction=side_fraction,
        displacement_px=(motion.dx, motion.dy),
    )


# One entry per dimension of `attribute_features`; lengths are fractions of the frame side,
# brightness and colour fractions of 255, so every feature lives roughly in [-1, 1].
FEATURE_NAMES = (
    "colour_r", "colour_g", "colour_b", "peak_brightness", "background_level",
    "foreground_fraction_mean", "foreground_fraction_std", "present_fraction", "blob_share",
    "fill_ratio_mean", "fill_ratio_std", "row_skewness", "box_width", "box_height", "box_side_std",
    "centroid_x_mean", "centroid_y_mean", "displacement_x", "displacement_y", "path_residual",
    "frame_change",
)  # fmt: skip


def attribute_features(video: np.ndarray) -> np.ndarray:
    """Fixed-length float64 vector (see FEATURE_NAMES) describing a clip's look and motion.

    Frames without a shape are left out of the per-frame statistics; a clip with none scores 0 there,
    so degenerate clips still get a finite vector and count against a Fréchet distance.
    """
    track = track_shape(video)
    side = float(track.frame_side)
    seen = track.present

    def mean(values: np.ndarray) -> float:
        return float(values[seen].mean()) if seen.any() else 0.0

    def std(values: np.ndarray) -> float:
        return float(values[seen].std()) if seen.any() else 0.0

    motion = fit_motion(track)
    frame_change = np.abs(np.diff(video.astype(np.float32), axis=0)).mean() if len(video) > 1 else 0.0
    features = [
        *(track.colour / 255.0),
        track.peak_brightness / 255.0,
        track.background_level / 255.0,
        float(track.foreground_fraction.mean()),
        float(track.foreground_fraction.std()),
        float(seen.mean()),
        mean(track.blob_share),
        mean(track.fill_ratio),
        std(track.fill_ratio),
        mean(track.row_skewness),
        mean(track.box_width) / side,
        mean(track.box_height) / side,
        std(np.maximum(track.box_width, track.box_height)) / side,
        mean(track.centroid_x) / side,
        mean(track.centroid_y) / side,
        motion.dx / side,
        motion.dy / side,
        motion.residual / side,
        float(frame_change) / 255.0,
    ]
    return np.asarray(features, dtype=np.float64)
