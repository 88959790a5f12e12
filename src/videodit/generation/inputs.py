"""The frames a clip is conditioned on, read from files: an image or a video, fitted to the size generated.

Fitting is curation's: scaled to cover the size and centre-cropped, a video resampled to the model's fps, so a
given frame looks like a training frame. Whatever is wrong with a file is an `InputError` naming it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from videodit.data.config import Bucket
from videodit.data.curation import bucket_size, center_crop, cover_size, resample
from videodit.data.video_io import DecodedFrame, RGBConverter, VideoDecodeError, decode_video, frame_time, open_video

# Above this many pixels an image is refused before it is decoded (PIL's own guard would stop at ~179M).
MAX_IMAGE_PIXELS = 100_000_000
# Frames read from a video to extend, after resampling to the model's fps (a minute at 8 fps).
MAX_VIDEO_FRAMES = 480


class InputError(ValueError):
    """A conditioning file that cannot be used; the message names it."""


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({type(exc).__name__})") from None


def video_size(path: Path) -> tuple[int, int]:
    """(width, height) of a video file's first video stream."""
    try:
        container, info = open_video(path)
    except VideoDecodeError as exc:
        raise InputError(f"{path}: {exc.reason}") from None
    container.close()
    if not info.width or not info.height:
        raise InputError(f"{path}: its video stream has no frame size (not a video this can read)")
    return info.width, info.height


def fitted_size(size: tuple[int, int], buckets: tuple[Bucket, ...]) -> tuple[int, int]:
    """(height, width) of the trained size nearest the aspect ratio of a (width, height): the size to generate at."""
    return bucket_size(*size, buckets)


def _fit(rgb: Image.Image, height: int, width: int) -> np.ndarray:
    cover = cover_size(rgb.width, rgb.height, width, height)
    return center_crop(np.asarray(rgb.resize(cover, Image.Resampling.BICUBIC)), height, width)


def read_image(path: Path, height: int, width: int) -> np.ndarray:
    """uint8 [1, height, width, 3]: the image scaled to cover the size and centre-cropped (a warning says so when
    its size differs); an image over MAX_IMAGE_PIXELS is refused before decoding."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise InputError(f"{path}: {image.width}x{image.height} pixels, over the limit of {MAX_IMAGE_PIXELS:,}")
            original = image.size
            # A JPEG decodes straight to the nearest power-of-two reduction that still covers the size.
            image.draft("RGB", cover_size(image.width, image.height, width, height))
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({type(exc).__name__})") from None
    if original != (width, height):
        warnings.warn(f"{path} is {original[0]}x{original[1]}: resized to {width}x{height} (scaled to cover, "
                      "centre-cropped)", UserWarning, stacklevel=2)  # fmt: skip
    return _fit(rgb, height, width)[None]


def read_video(path: Path, height: int, width: int, fps: float) -> np.ndarray:
    """uint8 [T, height, width, 3]: the video resampled to `fps` (at most MAX_VIDEO_FRAMES frames) and fitted to
    the size as `read_image` fits an image."""
    try:
        container, info = open_video(path)
    except VideoDecodeError as exc:
        raise InputError(f"{path}: {exc.reason}") from None
    try:
        cover = cover_size(info.width, info.height, width, height)
        to_rgb = RGBConverter(path, cover)
        frames = (DecodedFrame(frame_time(f), to_rgb(f)) for f in decode_video(container, path))
        picked = resample(frames, fps, MAX_VIDEO_FRAMES + 1)
    except VideoDecodeError as exc:
        raise InputError(f"{path}: {exc.reason}") from None
    finally:
        container.close()
    if not picked:
        raise InputError(f"{path}: holds no frames")
    if len(picked) > MAX_VIDEO_FRAMES:
        raise InputError(f"{path}: longer than {MAX_VIDEO_FRAMES} frames at {fps:g} fps; trim it to the part to extend")
    if (info.width, info.height) != (width, height):
        warnings.warn(f"{path} is {info.width}x{info.height}: resized to {width}x{height} (scaled to cover, "
                      "centre-cropped)", UserWarning, stacklevel=2)  # fmt: skip
    return np.stack([center_crop(f.rgb, height, width) for f in picked])
