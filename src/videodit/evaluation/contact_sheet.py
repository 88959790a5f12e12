"""Pictures of clips for reports: a captioned frame grid, an animated GIF, and a PNG data URI."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from videodit.evaluation.attributes import check_video

# Tiny clips (32×32) are scaled up by a whole factor, nearest-neighbour, until at least this tall.
MIN_DISPLAY_HEIGHT = 96
CAPTION_HEIGHT = 18  # px band above each row; PIL's default font draws text about 12 px tall
CAPTION_MARGIN = 3
CAPTION_COLOUR = (230, 230, 230)
SHEET_BACKGROUND = (24, 24, 24)
FRAME_GAP = 2  # px of background between frames and rows, so black frames don't merge
# Frames that were given to the generator (conditioning frames) get an outline drawn inside the cell, so the
# sheet keeps its size; amber stands out against black backgrounds and every shape colour alike.
GIVEN_FRAME_OUTLINE = (255, 176, 0)
GIVEN_FRAME_OUTLINE_WIDTH = 3  # px on the sheet


def display_scale(height: int) -> int:
    """Whole-number upscale factor that makes a frame of `height` px at least MIN_DISPLAY_HEIGHT tall."""
    return max(1, math.ceil(MIN_DISPLAY_HEIGHT / height))


def _upscaled(frame: np.ndarray, scale: int) -> Image.Image:
    image = Image.fromarray(frame)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def contact_sheet(
    videos: list[np.ndarray],
    captions: list[str] | None = None,
    frames_per_row: int = 8,
    given_frames: list[Sequence[int]] | None = None,
) -> Image.Image:
    """One row per clip of `frames_per_row` evenly spaced frames, each row under its caption if given.

    `given_frames[i]` lists the frame indices of `videos[i]` that were given rather than generated; those of
    them that the row shows are outlined in GIVEN_FRAME_OUTLINE (the first frame is always shown, and the last
    one too when frames_per_row >= 2).

    All clips must share one frame size. With s = display_scale(H), n = len(videos), g = FRAME_GAP and
    b = CAPTION_HEIGHT when captions are given (else 0) the sheet is
    frames_per_row · W·s + (frames_per_row − 1) · g wide and n · (b + H·s) + (n − 1) · g tall.
    """
    if not videos:
        raise ValueError("contact_sheet needs at least one video")
    if captions is not None and len(captions) != len(videos):
        raise ValueError(f"got {len(videos)} videos but {len(captions)} captions")
    if frames_per_row < 1:
        raise ValueError(f"frames_per_row must be >= 1, got {frames_per_row}")
    if given_frames is not None and len(given_frames) != len(videos):
        raise ValueError(f"got {len(videos)} videos but {len(given_frames)} lists of given frames")
    for index, video in enumerate(videos):
        check_video(video, f"videos[{index}]")
        outside = [t for t in (given_frames[index] if given_frames is not None else ()) if not 0 <= t < len(video)]
        if outside:
            raise ValueError(f"given_frames[{index}] has indices {outside} outside the clip's {len(video)} frames")
    frame_height, frame_width = videos[0].shape[1:3]
    if any(video.shape[1:3] != (frame_height, frame_width) for video in videos):
        raise ValueError(f"all videos must share one frame size; sizes: {sorted({v.shape[1:3] for v in videos})}")

    scale = display_scale(frame_height)
    cell_width, cell_height = frame_width * scale, frame_height * scale
    band = CAPTION_HEIGHT if captions is not None else 0
    sheet_size = (
        frames_per_row * (cell_width + FRAME_GAP) - FRAME_GAP,
        len(videos) * (band + cell_height + FRAME_GAP) - FRAME_GAP,
    )
    sheet = Image.new("RGB", sheet_size, SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for row, video in enumerate(videos):
        top = row * (band + cell_height + FRAME_GAP)
        if captions is not None:
            draw.text((CAPTION_MARGIN, top + CAPTION_MARGIN), captions[row], fill=CAPTION_COLOUR, font=font)
        # Short clips repeat frames rather than leave gaps, so every row has the same width.
        frame_indices = np.linspace(0, len(video) - 1, frames_per_row).round().astype(int)
        given = set(given_frames[row]) if given_frames is not None else set()
        for column, t in enumerate(frame_indices):
            left = column * (cell_width + FRAME_GAP)
            sheet.paste(_upscaled(video[t], scale), (left, top + band))
            if t in given:
                corners = (left, top + band, left + cell_width - 1, top + band + cell_height - 1)
                draw.rectangle(corners, outline=GIVEN_FRAME_OUTLINE, width=GIVEN_FRAME_OUTLINE_WIDTH)
    return sheet


def save_gif(video: np.ndarray, path: Path | str, fps: float) -> Path:
    """Write a looping GIF of a uint8 [T, H, W, 3] clip, scaled up like the contact sheet; returns the path."""
    check_video(video)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = display_scale(video.shape[1])
    first, *rest = (_upscaled(frame, scale) for frame in video)
    first.save(path, save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)
    return path


def png_data_uri(image: Image.Image, max_width: int | None = None) -> str:
    """`data:image/png;base64,...` of an image, shrunk to `max_width` px wide if wider (for markdown)."""
    if max_width is not None and image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        image = image.resize((max_width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
