"""Does a generated clip hold together over time — frame to frame, across the seam where a continuation was
joined on, along the path an interpolation draws, and window after window of a long video?

Everything is read from `track_shape` (the largest foreground blob in each frame), on uint8 [T, H, W, 3] clips of
any frame size. Relative changes, used for colour and area alike:
  area    |a' − a| / a, with a the blob's pixel count;
  colour  ‖c' − c‖ / ‖c‖, with c the mean RGB of the blob's pixels: a shape dimmed uniformly by 30% changes by
          0.30, and so does a red (255, 0, 0) that turns (255, 77, 0).
A frame where no shape is found cannot be compared with its neighbours: its steps are NaN, it is counted in
`missing_frames`, and a clip with any such frame does not pass.
Areas are pixel counts, so a hard-edged shape at sub-pixel positions changes area as it moves: the built-in
data's own small triangles exceed 10% in 10 of 28 clips at 64×64 (32 of 56 triangles at 32×32; every circle
and square stays within; seed-0 renders). Compare a model's stability pass rate with that of its training clips.

The PSNR of a given (conditioning) frame against its input is `image_quality.psnr(video[t:t + 1], frame[None])`.
The `*_metrics` helpers average per-clip results into flat dicts whose keys are used unchanged as Dagster
metadata and MLflow metric names (a caller reporting several modes prefixes them, e.g. "extension/").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from videodit.domain import Domain
from videodit.evaluation.attributes import ClipAttributes, ShapeTrack, check_video, read_attributes, track_shape
from videodit.evaluation.prompt_adherence import prompt_adherence

# Colour and area may change by at most this fraction frame to frame (issue #15) and across a seam (#16).
RELATIVE_CHANGE_TOLERANCE = 0.10
# A seam's position jump may be at most this multiple of the median per-frame displacement elsewhere (#16).
SEAM_MAX_JUMP_RATIO = 1.5
# Centroid moves up to this are measurement noise (edge pixels crossing the half-maximum threshold), not
# motion: the floor of a seam's reference displacement, so a still shape staying still passes, and the
# backtrack an interpolation path may show and still count as monotone.
CENTROID_JITTER_PX = 1.0


def _relative_change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """‖after − before‖ / ‖before‖ over the last axis; NaN where either is NaN (a missing frame)."""
    return np.linalg.norm(after - before, axis=-1) / np.linalg.norm(before, axis=-1)


def _nan_reduce(reduce: Callable[[np.ndarray], float], values: np.ndarray) -> float:
    """`reduce` over the finite values; NaN when there are none (no warning for an all-NaN slice)."""
    finite = values[np.isfinite(values)]
    return float(reduce(finite)) if finite.size else float("nan")


def _centroids(track: ShapeTrack) -> np.ndarray:
    return np.stack([track.centroid_x, track.centroid_y], axis=-1)  # [T, 2], NaN where no shape


# --- frame-to-frame stability (#15) ----------------------------------------------------------------


@dataclass(frozen=True)
class TemporalStability:
    """How much the shape's colour and area change between consecutive frames of one clip."""

    colour_change: np.ndarray  # [T − 1] relative colour change from frame t to t + 1; NaN if either is missing
    area_change: np.ndarray  # [T − 1] relative area change from frame t to t + 1; NaN if either is missing
    missing_frames: int  # frames in which no shape was found
    tolerance: float

    @property
    def colour_change_max(self) -> float:
        return _nan_reduce(np.max, self.colour_change)

    @property
    def colour_change_median(self) -> float:
        return _nan_reduce(np.median, self.colour_change)

    @property
    def area_change_max(self) -> float:
        return _nan_reduce(np.max, self.area_change)

    @property
    def area_change_median(self) -> float:
        return _nan_reduce(np.median, self.area_change)

    @property
    def passes(self) -> bool:
        """The shape is in every frame and no step changes its colour or area by more than `tolerance`
        (a single-frame clip with a shape passes: nothing changes)."""
        changes = np.concatenate([self.colour_change, self.area_change])
        return self.missing_frames == 0 and bool(np.all(changes <= self.tolerance))


def temporal_stability(video: np.ndarray, tolerance: float = RELATIVE_CHANGE_TOLERANCE) -> TemporalStability:
    """Frame-to-frame relative change of the shape's mean colour and pixel area in a uint8 [T, H, W, 3] clip."""
    track = track_shape(video)
    return TemporalStability(
        colour_change=_relative_change(track.frame_colour[:-1], track.frame_colour[1:]),
        area_change=_relative_change(track.area[:-1, None], track.area[1:, None]),
        missing_frames=int((~track.present).sum()),
        tolerance=tolerance,
    )


# --- the seam of an extension or a long video (#16) ------------------------------------------------


@dataclass(frozen=True)
class SeamContinuity:
    """What changes across the seam between frame `seam_frame − 1` (old) and `seam_frame` (first new)."""

    seam_frame: int
    jump_px: float  # centroid distance across the seam
    median_step_px: float  # median centroid distance between consecutive frames away from the seam (see `period`)
    jump_ratio: float  # jump_px / max(median_step_px, CENTROID_JITTER_PX)
    colour_change: float  # relative colour change across the seam
    area_change: float  # relative area change across the seam
    max_jump_ratio: float
    tolerance: float

    @property
    def passes(self) -> bool:
        """Every figure was measured (NaN fails) and is within its threshold."""
        return bool(
            self.jump_ratio <= self.max_jump_ratio
            and self.colour_change <= self.tolerance
            and self.area_change <= self.tolerance
        )


def seam_continuity(
    video: np.ndarray,
    seam_frame: int,
    max_jump_ratio: float = SEAM_MAX_JUMP_RATIO,
    tolerance: float = RELATIVE_CHANGE_TOLERANCE,
    period: int = 1,
) -> SeamContinuity:
    """Position jump, colour and area change across the seam of a clip joined from two parts at `seam_frame`.

    The jump is compared with how far the shape moves per frame elsewhere in the clip, so a fast shape may
    jump further than a slow one. Figures that need a frame without a shape are NaN (and fail).

    `period`: the clip's frames come in groups of this many that move together, e.g. the r frames one latent
    frame of a VAE decodes to; the jump is then compared with the steps at the same place in a group as the seam's
    only. (The demo's VAE, r = 2, draws a steady 2.2 px/frame as steps of 0.1 px within a latent frame and 4.5 px
    between two: against the median of all steps even the true clip through the VAE "jumps" 4.4× at a seam.)
    """
    check_video(video)
    n_frames = len(video)
    if not 1 <= seam_frame <= n_frames - 1:
        raise ValueError(f"seam_frame must be a frame index in 1..{n_frames - 1} (the first new frame), got {seam_frame}")
    if period < 1:
        raise ValueError(f"period must be at least 1 frame, got {period}")
    track = track_shape(video)
    steps = np.linalg.norm(np.diff(_centroids(track), axis=0), axis=-1)  # [T − 1]; step t joins frames t, t + 1
    seam_step = seam_frame - 1
    same_place = np.arange(len(steps)) % period == seam_step % period
    same_place[seam_step] = False
    median_step = _nan_reduce(np.median, steps[same_place])
    old, new = seam_frame - 1, seam_frame
    return SeamContinuity(
        seam_frame=seam_frame,
        jump_px=float(steps[seam_step]),
        median_step_px=median_step,
        jump_ratio=float(steps[seam_step] / np.maximum(median_step, CENTROID_JITTER_PX)),  # NaN stays NaN
        colour_change=float(_relative_change(track.frame_colour[old], track.frame_colour[new])),
        area_change=float(_relative_change(track.area[old, None], track.area[new, None])),
        max_jump_ratio=max_jump_ratio,
        tolerance=tolerance,
    )


# --- the path of an interpolation (#16) ------------------------------------------------------------


@dataclass(frozen=True)
class PathMonotonicity:
    """Whether the shape's centroid moves steadily one way along its dominant axis of motion."""

    axis: tuple[float, float]  # unit (x, y): the centroids' principal axis, pointing from first to last frame
    travel_px: float  # first-to-last distance along the axis (≥ 0)
    forward_fraction: float  # steps that move along the axis or stay within the jitter of where they were
    max_backtrack_px: float  # furthest the centroid falls behind the furthest point it had reached
    missing_frames: int  # frames in which no shape was found
    jitter_px: float

    @property
    def passes(self) -> bool:
        """The shape is in every frame and never falls back by more than `jitter_px`."""
        return self.missing_frames == 0 and self.max_backtrack_px <= self.jitter_px


def path_monotonicity(video: np.ndarray, jitter_px: float = CENTROID_JITTER_PX) -> PathMonotonicity:
    """Monotonicity of the centroid path of a uint8 [T, H, W, 3] clip, e.g. one interpolated between two frames.

    The axis is the principal direction of the centroids rather than first-to-last, so a shape that goes
    out and comes back to where it started is caught; frames without a shape are skipped in the path.
    """
    track = track_shape(video)
    points = _centroids(track)[track.present]
    missing = int((~track.present).sum())
    if len(points) < 2:
        return PathMonotonicity((1.0, 0.0), 0.0, float("nan"), float("nan"), missing, jitter_px)
    _, vectors = np.linalg.eigh(np.cov(points, rowvar=False))
    axis = vectors[:, -1]  # the eigenvector of the largest eigenvalue
    position = points @ axis
    if position[-1] < position[0]:
        axis, position = -axis, -position
    steps = np.diff(position)
    return PathMonotonicity(
        axis=(float(axis[0]), float(axis[1])),
        travel_px=float(position[-1] - position[0]),
        forward_fraction=float(np.mean(steps >= -jitter_px)),
        max_backtrack_px=float(np.max(np.maximum.accumulate(position) - position)),
        missing_frames=missing,
        jitter_px=jitter_px,
    )


# --- over many clips: metrics ----------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    return _nan_reduce(np.mean, np.asarray(values, dtype=np.float64))


def _pass_rate(results: Sequence[TemporalStability | SeamContinuity | PathMonotonicity]) -> float:
    if not results:
        raise ValueError("cannot report over no clips")
    return float(np.mean([result.passes for result in results]))


def stability_metrics(results: Sequence[TemporalStability]) -> dict[str, float]:
    """Means over clips of each clip's largest step (clips with no measurable step left out of the means);
    the pass rate counts every clip, unmeasurable ones as failing."""
    return {
        "stability_pass_rate": _pass_rate(results),
        "stability_colour_change_max": _mean([r.colour_change_max for r in results]),
        "stability_area_change_max": _mean([r.area_change_max for r in results]),
        "stability_colour_change_median": _mean([r.colour_change_median for r in results]),
        "stability_area_change_median": _mean([r.area_change_median for r in results]),
        "stability_missing_frame_clip_rate": float(np.mean([r.missing_frames > 0 for r in results])),
    }


def seam_metrics(results: Sequence[SeamContinuity]) -> dict[str, float]:
    """Means over seams (unmeasured ones left out) and the fraction of all seams that pass."""
    return {
        "seam_pass_rate": _pass_rate(results),
        "seam_jump_ratio": _mean([r.jump_ratio for r in results]),
        "seam_colour_change": _mean([r.colour_change for r in results]),
        "seam_area_change": _mean([r.area_change for r in results]),
    }


def path_metrics(results: Sequence[PathMonotonicity]) -> dict[str, float]:
    """Means over clips (unmeasured ones left out) and the fraction of all clips whose path is monotone."""
    return {
        "path_monotone_rate": _pass_rate(results),
        "path_forward_fraction": _mean([r.forward_fraction for r in results]),
        "path_max_backtrack_px": _mean([r.max_backtrack_px for r in results]),
    }


# --- long videos: adherence per window (#16) -------------------------------------------------------


def frame_windows(n_frames: int, window: int, overlap: int) -> list[slice]:
    """Windows of `window` frames, each starting `window − overlap` after the last; a last window ends at the
    final frame when the stride does not land there, so every frame is in some window."""
    if not 1 <= window <= n_frames:
        raise ValueError(f"window must be 1..{n_frames} frames (the clip's length), got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be 0..{window - 1} frames (less than the window), got {overlap}")
    starts = list(range(0, n_frames - window + 1, window - overlap))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return [slice(start, start + window) for start in starts]


def window_attributes(video: np.ndarray, domain: Domain, window: int, overlap: int = 0) -> list[ClipAttributes]:
    """`read_attributes` of each window of a long clip (see `frame_windows`)."""
    check_video(video)
    return [read_attributes(video[frames], domain) for frames in frame_windows(len(video), window, overlap)]


def window_adherence(
    videos: Sequence[np.ndarray], expected: Sequence[dict], domain: Domain, window: int, overlap: int = 0
) -> list[dict]:
    """`prompt_adherence` of every clip's k-th window, for each k: does the video still follow its prompt later on?

    All clips must have the same length, so window k spans the same frames in each.
    """
    lengths = sorted({len(video) for video in videos})
    if len(lengths) != 1:
        raise ValueError(f"window adherence needs clips of one length, got lengths {lengths}")
    return [
        prompt_adherence([video[frames] for video in videos], list(expected), domain)
        for frames in frame_windows(lengths[0], window, overlap)
    ]


def window_adherence_metrics(per_window: Sequence[dict]) -> dict[str, float]:
    """Overall adherence of the first, last and worst window, and the decay first − last (> 0: it got worse)."""
    if not per_window:
        raise ValueError("cannot report over no windows")
    overall = [report["overall"] for report in per_window]
    return {
        "window_adherence_first": float(overall[0]),
        "window_adherence_last": float(overall[-1]),
        "window_adherence_min": _nan_reduce(np.min, np.asarray(overall, dtype=np.float64)),
        "window_adherence_decay": float(overall[0] - overall[-1]),
    }
