"""Continuity of generated clips (issues #15 and #16), measured on squares drawn here with numpy."""

import math

import numpy as np
import pytest

from videodit.data.synthetic import SHAPES_DOMAIN
from videodit.evaluation import (
    contact_sheet,
    path_metrics,
    path_monotonicity,
    seam_continuity,
    seam_metrics,
    stability_metrics,
    temporal_stability,
    window_adherence,
    window_adherence_metrics,
    window_attributes,
)
from videodit.evaluation.contact_sheet import CAPTION_HEIGHT, GIVEN_FRAME_OUTLINE, GIVEN_FRAME_OUTLINE_WIDTH
from videodit.evaluation.continuity import frame_windows

RED = (255, 0, 0)
# (height, width): square, portrait and landscape frames.
FRAME_SIZES = [(48, 48), (64, 40), (40, 64)]


def squares(xs, ys=None, side=8, height=48, width=48, colours=None) -> np.ndarray:
    """A `side`-px square with its top-left corner at (xs[t], ys[t]) in frame t, on black; None: an empty frame."""
    ys = [height // 3] * len(xs) if ys is None else ys
    colours = [RED] * len(xs) if colours is None else colours
    video = np.zeros((len(xs), height, width, 3), np.uint8)
    for t, (x, y, colour) in enumerate(zip(xs, ys, colours, strict=True)):
        if x is not None:
            video[t, y : y + side, x : x + side] = colour
    return video


def moving_right(n_frames=12, step=2, start=2, **kwargs) -> np.ndarray:
    return squares([start + step * t for t in range(n_frames)], **kwargs)


# --- frame-to-frame stability ----------------------------------------------------------------------


@pytest.mark.parametrize("height,width", FRAME_SIZES)
def test_a_square_moving_steadily_is_stable(height, width):
    result = temporal_stability(moving_right(height=height, width=width))
    assert result.colour_change.shape == result.area_change.shape == (11,)
    assert result.colour_change_max == result.area_change_max == 0.0
    assert result.missing_frames == 0 and result.passes


def test_a_30_percent_colour_flicker_is_unstable():
    colours = [RED] * 12
    colours[5] = (178, 0, 0)  # 70% as bright; still above half the clip's peak, so still the shape
    result = temporal_stability(moving_right(colours=colours))
    assert result.colour_change[4] == pytest.approx(77 / 255)  # 0.30 down
    assert result.colour_change[5] == pytest.approx(77 / 178)  # 0.43 back up, relative to the dim frame
    assert result.colour_change_max == pytest.approx(77 / 178)
    assert result.colour_change_median == 0.0 and result.area_change_max == 0.0
    assert not result.passes
    assert temporal_stability(moving_right(colours=colours), tolerance=0.5).passes


def test_a_shrinking_square_is_unstable_and_the_tolerance_is_relative():
    sides = [8] * 6 + [7] * 6  # 64 -> 49 px: 23% smaller
    video = np.concatenate([squares([4 + 2 * t], side=side) for t, side in enumerate(sides)])
    result = temporal_stability(video)
    assert result.area_change_max == pytest.approx(15 / 64)
    assert result.area_change_median == 0.0 and not result.passes


def test_a_frame_without_the_shape_counts_as_unstable_not_an_error():
    xs = [2 + 2 * t for t in range(12)]
    xs[6] = None
    result = temporal_stability(squares(xs))
    assert result.missing_frames == 1
    assert np.isnan(result.colour_change[5]) and np.isnan(result.area_change[6])
    assert result.colour_change_max == 0.0  # the other steps still measure
    assert not result.passes
    blank = temporal_stability(np.zeros((4, 32, 32, 3), np.uint8))
    assert blank.missing_frames == 4 and math.isnan(blank.area_change_max) and not blank.passes


# --- seams ------------------------------------------------------------------------------------------


def joined(jump: int, seam_frame: int = 8, n_frames: int = 16, colours=None, **kwargs) -> np.ndarray:
    """A square moving 2 px/frame whose frame `seam_frame` lands `jump` px after the frame before."""
    xs = [2 + 2 * t if t < seam_frame else 2 + 2 * (t - 1) + jump for t in range(n_frames)]
    return squares(xs, colours=colours, **kwargs)


@pytest.mark.parametrize("height,width", FRAME_SIZES)
def test_a_10_px_jump_at_the_seam_fails_and_a_2_px_one_passes(height, width):
    jumped = seam_continuity(joined(10, height=height, width=width), seam_frame=8)
    assert (jumped.jump_px, jumped.median_step_px, jumped.jump_ratio) == (10.0, 2.0, 5.0)
    assert not jumped.passes
    smooth = seam_continuity(joined(2, height=height, width=width), seam_frame=8)
    assert (smooth.jump_px, smooth.jump_ratio, smooth.colour_change, smooth.area_change) == (2.0, 1.0, 0.0, 0.0)
    assert smooth.passes
    assert seam_continuity(joined(3), seam_frame=8).passes  # 1.5× the step: the limit itself passes
    assert not seam_continuity(joined(4), seam_frame=8).passes
    assert seam_continuity(joined(10), seam_frame=8, max_jump_ratio=5.0).passes


def test_a_seam_between_latent_frames_is_compared_with_the_steps_between_latent_frames():
    # As a VAE with 2 frames per latent frame decodes steady motion: frames 2j-1 and 2j at one place, 4 px on to the
    # next pair. A seam always falls between latent frames (frame 9 starts latent frame 5).
    staircase = [2 + 4 * ((t + 1) // 2) for t in range(17)]
    steady = seam_continuity(squares(staircase, width=64), seam_frame=9, period=2)
    assert (steady.jump_px, steady.median_step_px, steady.jump_ratio) == (4.0, 4.0, 1.0) and steady.passes
    # Against all steps (half of them 0) the same steady clip would "jump" 4× the 1 px floor.
    assert seam_continuity(squares(staircase, width=64), seam_frame=9).jump_ratio == 4.0
    restarted = [x if t < 9 else x - 12 for t, x in enumerate(staircase)]  # 8 px back instead of 4 px on
    jumped = seam_continuity(squares(restarted, width=64), seam_frame=9, period=2)
    assert (jumped.jump_px, jumped.jump_ratio) == (8.0, 2.0) and not jumped.passes


def test_a_colour_change_at_the_seam_fails_even_without_a_jump():
    dimmer = [RED] * 8 + [(200, 0, 0)] * 8
    result = seam_continuity(joined(2, colours=dimmer), seam_frame=8)
    assert result.jump_ratio == 1.0 and result.colour_change == pytest.approx(55 / 255)
    assert not result.passes


def test_a_still_shape_that_stays_still_passes_the_seam():
    result = seam_continuity(squares([10] * 10), seam_frame=5)
    assert result.median_step_px == 0.0 and result.jump_ratio == 0.0 and result.passes


def test_a_seam_without_the_shape_fails_and_a_bad_seam_frame_is_named():
    xs = [2 + 2 * t for t in range(10)]
    xs[5] = None
    result = seam_continuity(squares(xs), seam_frame=5)
    assert math.isnan(result.jump_px) and math.isnan(result.colour_change) and not result.passes
    for seam_frame in (0, 10):
        with pytest.raises(ValueError, match="seam_frame must be a frame index in 1..9"):
            seam_continuity(squares(xs), seam_frame=seam_frame)


# --- interpolation paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("height,width", FRAME_SIZES)
def test_a_smooth_interpolation_path_is_monotone(height, width):
    xs = np.linspace(2, 30, 16).round().astype(int).tolist()  # 1.87 px a frame, rounded to whole pixels
    ys = np.linspace(4, 28, 16).round().astype(int).tolist()  # and diagonally down
    result = path_monotonicity(squares(xs, ys, height=height, width=width))
    assert result.passes and result.forward_fraction == 1.0 and result.max_backtrack_px == 0.0
    assert result.travel_px == pytest.approx(math.hypot(28, 24))
    assert result.axis == pytest.approx((28 / math.hypot(28, 24), 24 / math.hypot(28, 24)), abs=0.01)


def test_a_back_and_forth_path_is_not_monotone():
    xs = [2 + 3 * t for t in range(9)] + [26 - 3 * t for t in range(1, 5)]  # out to 26, back to 14
    result = path_monotonicity(squares(xs))
    assert result.max_backtrack_px == pytest.approx(12.0) and result.forward_fraction == pytest.approx(8 / 12)
    assert not result.passes
    # Out and all the way back: the first-to-last chord is zero, the principal axis still sees the trip.
    there_and_back = path_monotonicity(squares([2 + 3 * t for t in range(8)] + [23 - 3 * t for t in range(8)]))
    assert there_and_back.travel_px == pytest.approx(0.0) and there_and_back.max_backtrack_px == pytest.approx(21.0)
    assert not there_and_back.passes


def test_a_one_pixel_wobble_is_jitter_but_a_missing_frame_fails():
    xs = [2, 4, 6, 5, 8, 10, 12]
    result = path_monotonicity(squares(xs))
    assert result.max_backtrack_px == pytest.approx(1.0) and result.passes
    assert not path_monotonicity(squares(xs), jitter_px=0.5).passes
    with_gap = path_monotonicity(squares([2, 4, None, 8, 10]))
    assert with_gap.missing_frames == 1 and with_gap.max_backtrack_px == 0.0 and not with_gap.passes


# --- metrics over clips ----------------------------------------------------------------------------


def test_metrics_average_over_clips_and_count_the_passes():
    seams = [seam_continuity(joined(2), 8), seam_continuity(joined(10), 8)]
    assert seam_metrics(seams) == {
        "seam_pass_rate": 0.5, "seam_jump_ratio": 3.0, "seam_colour_change": 0.0, "seam_area_change": 0.0,
    }  # fmt: skip
    colours = [RED] * 12
    colours[5] = (178, 0, 0)
    stability = stability_metrics([temporal_stability(moving_right()), temporal_stability(moving_right(colours=colours))])
    assert stability["stability_pass_rate"] == 0.5
    assert stability["stability_colour_change_max"] == pytest.approx(77 / 178 / 2)
    assert stability["stability_missing_frame_clip_rate"] == 0.0
    paths = path_metrics([path_monotonicity(moving_right()), path_monotonicity(squares([2, 8, 4]))])
    assert paths == {"path_monotone_rate": 0.5, "path_forward_fraction": 0.75, "path_max_backtrack_px": 2.0}
    # A clip that could not be measured fails the rate but stays out of the means.
    unmeasured = seam_continuity(squares([2, 4, None, 8]), seam_frame=2)
    assert seam_metrics([seams[0], unmeasured]) == {
        "seam_pass_rate": 0.5, "seam_jump_ratio": 1.0, "seam_colour_change": 0.0, "seam_area_change": 0.0,
    }  # fmt: skip
    with pytest.raises(ValueError, match="no clips"):
        seam_metrics([])


# --- long videos: windows --------------------------------------------------------------------------


def test_windows_cover_every_frame_with_the_given_overlap():
    assert [(w.start, w.stop) for w in frame_windows(64, 16, 4)] == [(0, 16), (12, 28), (24, 40), (36, 52), (48, 64)]
    assert [(w.start, w.stop) for w in frame_windows(20, 8, 0)] == [(0, 8), (8, 16), (12, 20)]
    assert [(w.start, w.stop) for w in frame_windows(8, 8, 2)] == [(0, 8)]
    with pytest.raises(ValueError, match="window must be 1..8"):
        frame_windows(8, 9, 0)
    with pytest.raises(ValueError, match="overlap must be 0..3"):
        frame_windows(8, 4, 4)


def test_adherence_is_reported_per_window_and_its_decay_shows():
    # A small (16/64 = 0.25) red square moving right 1 px a frame that turns blue for the last 16 of 48 frames.
    colours = [RED] * 32 + [(0, 0, 255)] * 16
    video = squares(list(range(2, 50)), side=16, height=64, width=64, colours=colours)
    readings = window_attributes(video, SHAPES_DOMAIN, window=16)
    assert [(r.colour, r.shape, r.size, r.direction) for r in readings] == [
        ("red", "square", "small", "right"), ("red", "square", "small", "right"), ("blue", "square", "small", "right"),
    ]  # fmt: skip
    expected = {"colour": "red", "shape": "square", "size": "small", "direction": "right"}
    per_window = window_adherence([video, video[:, :, ::-1].copy()], [expected] * 2, SHAPES_DOMAIN, window=16)
    # The mirrored copy moves left: direction is wrong in every window for it.
    assert [report["colour"] for report in per_window] == [1.0, 1.0, 0.0]
    assert [report["direction"] for report in per_window] == [0.5, 0.5, 0.5]
    metrics = window_adherence_metrics(per_window)
    assert metrics["window_adherence_first"] == pytest.approx(0.875)
    assert metrics["window_adherence_last"] == metrics["window_adherence_min"] == pytest.approx(0.625)
    assert metrics["window_adherence_decay"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="one length"):
        window_adherence([video, video[:40]], [expected] * 2, SHAPES_DOMAIN, window=16)


# --- contact sheets with the given frames marked ---------------------------------------------------


def test_contact_sheet_outlines_the_given_frames_and_is_unchanged_without_them():
    videos = [moving_right(n_frames=8, height=32, width=32), moving_right(n_frames=8, start=6, height=32, width=32)]
    plain = np.asarray(contact_sheet(videos, ["a", "b"], frames_per_row=8))
    assert np.array_equal(np.asarray(contact_sheet(videos, ["a", "b"], frames_per_row=8, given_frames=None)), plain)
    assert np.array_equal(np.asarray(contact_sheet(videos, ["a", "b"], frames_per_row=8, given_frames=[[], []])), plain)

    marked = np.asarray(contact_sheet(videos, ["a", "b"], frames_per_row=8, given_frames=[[0, 7], []]))
    cell, gap, width = 96, 2, GIVEN_FRAME_OUTLINE_WIDTH  # 32 px frames scale ×3; 8 frames fill 8 columns
    first = marked[CAPTION_HEIGHT : CAPTION_HEIGHT + cell, :cell]
    assert (first[:width] == GIVEN_FRAME_OUTLINE).all() and (first[:, -width:] == GIVEN_FRAME_OUTLINE).all()
    plain_first = plain[CAPTION_HEIGHT : CAPTION_HEIGHT + cell, :cell]
    assert np.array_equal(first[width:-width, width:-width], plain_first[width:-width, width:-width])
    changed_columns = np.flatnonzero((marked != plain).any(axis=(0, 2)))
    assert set(changed_columns) == set(range(cell)) | set(range(7 * (cell + gap), 8 * cell + 7 * gap))
    changed_rows = np.flatnonzero((marked != plain).any(axis=(1, 2)))
    assert changed_rows.min() == CAPTION_HEIGHT and changed_rows.max() == CAPTION_HEIGHT + cell - 1  # row 0 only

    with pytest.raises(ValueError, match="2 videos but 1 lists"):
        contact_sheet(videos, None, given_frames=[[0]])
    with pytest.raises(ValueError, match=r"given_frames\[1\] has indices \[8\]"):
        contact_sheet(videos, None, given_frames=[[0], [8]])
