"""What one generation request makes: text to video, an animated image, a clip ending at an image, an
interpolation, an extended video or a video longer than the model's window. Shared by the CLI and the MLflow
model, so both serve the same modes with the same checks; errors are ValueErrors (an `InputError` names its file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videodit.conditioning import FrameCondition
from videodit.generation.inputs import InputError, fitted_size, image_size, read_image, read_video, video_size
from videodit.generation.onnx_generator import OnnxVideoGenerator


# Frames of one video made window by window (two minutes at 8 fps): a typo of a few zeros must not run for hours.
MAX_FRAMES = 960


@dataclass(frozen=True)
class GenerationRequest:
    """Prompts and seeds, the sampler and size overrides (None: the bundle's), and what is given: an image to
    start from and/or end at, or a video to extend (forward, or backward in time)."""

    prompts: list[str]
    seeds: list[int]
    steps: int | None = None
    guidance: float | None = None
    frames: int | None = None  # new frames when extending; beyond the window, a long video
    size: tuple[int, int] | None = None  # (width, height); default: nearest the given file's aspect ratio
    image: Path | None = None
    last_image: Path | None = None
    extend: Path | None = None
    extend_backward: bool = False

    def check(self) -> None:
        if self.extend and (self.image or self.last_image):
            raise ValueError("--extend continues a video: it cannot be combined with --image or --last-image")
        if self.extend_backward and not self.extend:
            raise ValueError("--extend-backward needs --extend VIDEO")


def _size(request: GenerationRequest, generator: OnnxVideoGenerator) -> tuple[int, int]:
    """(height, width): asked for, else the trained size nearest the first given file's aspect ratio, else the
    bundle's. Every given file is checked here, before anything is generated."""
    spec = generator.spec
    if request.extend:
        sizes = [video_size(request.extend)]
    else:
        sizes = [image_size(p) for p in (request.image, request.last_image) if p]
    if request.size:
        return request.size[1], request.size[0]
    return fitted_size(sizes[0], spec.buckets) if sizes else (spec.height, spec.width)


def default_frames(generator: OnnxVideoGenerator, height: int, width: int) -> int:
    """The bundle's clip length at its own size, the longest trained window at another."""
    spec = generator.spec
    return spec.frames if (height, width) == (spec.height, spec.width) else generator.window_frames(height, width)


def generate_request(generator: OnnxVideoGenerator, request: GenerationRequest) -> tuple[list[np.ndarray], dict]:
    """The videos, and what a manifest records of how they were made: the mode, the given files and the frames
    of each video that reproduce given ones."""
    request.check()
    spec = generator.spec
    height, width = _size(request, generator)
    window = generator.window_frames(height, width)
    if request.frames is not None and request.frames > MAX_FRAMES:
        raise ValueError(f"frames={request.frames} is not supported by this model: use {spec.frame_range.describe()} "
                         f"in one window, or any count up to {MAX_FRAMES} (made window by window beyond {window})")  # fmt: skip
    steps, guidance = request.steps, request.guidance
    if request.extend:
        clip = read_video(request.extend, height, width, spec.fps)
        shortest = 1 + spec.temporal_compression  # one latent frame after the first
        if len(clip) < shortest:
            raise ValueError(f"{request.extend}: {len(clip)} frames at {spec.fps} fps, shorter than one latent frame "
                             f"after the first ({shortest} frames): nothing to continue from")  # fmt: skip
        new = request.frames or window
        videos = [generator.extend(p, s, clip, new, request.extend_backward, steps, guidance)
                  for p, s in zip(request.prompts, request.seeds)]  # fmt: skip
        given = list(range(new, new + len(clip))) if request.extend_backward else list(range(len(clip)))
        mode = "extend_backward" if request.extend_backward else "extend"
        return videos, {"mode": mode, "source": str(request.extend), "given_frames": given}

    condition = None
    if request.image or request.last_image:
        condition = FrameCondition(
            first=read_image(request.image, height, width) if request.image else None,
            last=read_image(request.last_image, height, width) if request.last_image else None,
        )  # fmt: skip
    frames = request.frames or default_frames(generator, height, width)
    mode = {(True, False): "image_to_video", (False, True): "end_at_image", (True, True): "interpolate"}.get(
        (request.image is not None, request.last_image is not None), "text_to_video")  # fmt: skip
    record = {"mode": mode, "sources": [str(p) for p in (request.image, request.last_image) if p]}
    if frames > window:
        if request.last_image:
            raise ValueError(f"--last-image ends one window: --frames must be at most {window} here")
        videos = [generator.generate_long(p, s, frames, height, width, condition, steps, guidance)
                  for p, s in zip(request.prompts, request.seeds)]  # fmt: skip
        record.update(mode=f"long_{mode}", window_frames=window)
    else:
        conditions = [condition] * len(request.prompts) if condition else None
        videos = generator.generate(request.prompts, request.seeds, steps, guidance, frames, height, width, conditions)
    record["given_frames"] = condition.given_video_frames(frames) if condition else []
    return videos, record


# A folder of requests (`conditioned_videos`): requests.json lists them, file paths relative to the folder.
REQUESTS_JSON = "requests.json"
_FILE_KEYS = ("image", "last_image", "extend")
_REQUEST_KEYS = {"prompt", "seed", "frames", "extend_backward", *_FILE_KEYS}


def read_requests(folder: Path) -> list[dict]:
    """The entries of `folder`/requests.json as written; a folder without one, or a file that is not a JSON list
    of objects, is an InputError naming the file."""
    path = folder / REQUESTS_JSON
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError(f"{path}: expected a list of objects, one per request")
    return entries


def folder_request(entry: dict, folder: Path, seed: int) -> GenerationRequest:
    """One requests.json entry as a request for one video; `seed` unless the entry gives its own. A malformed
    entry is a ValueError saying which key is wrong."""
    unknown = set(entry) - _REQUEST_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; expected some of {sorted(_REQUEST_KEYS)}")
    if not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
        raise ValueError("'prompt' must be a non-empty string")
    for key, kind in (("seed", int), ("frames", int), ("extend_backward", bool), *((k, str) for k in _FILE_KEYS)):
        if key in entry and (not isinstance(entry[key], kind) or (kind is int and isinstance(entry[key], bool))):
            raise ValueError(f"'{key}' must be a {kind.__name__}, got {entry[key]!r}")
    if "frames" in entry and entry["frames"] < 1:
        raise ValueError(f"'frames' must be at least 1, got {entry['frames']}")
    files = {k: folder / entry[k] for k in _FILE_KEYS if k in entry}
    return GenerationRequest([entry["prompt"].strip()], [entry.get("seed", seed)], frames=entry.get("frames"),
                             extend_backward=entry.get("extend_backward", False), **files)  # fmt: skip
