"""Frame conditioning, numpy only: clips that begin or end with given frames, extended clips and long videos.

Given frames are encoded by the VAE and their latent frames are kept clean (t = 0, never denoised) while the
others are denoised (Wan2.2's TI2V, LTX-Video's conditioning mask); the DiT learns it from `conditioning_frames`
of `videodit.models.rectified_flow`. One definition serves the torch models (`DiTModule.generate`) and the
torch-free onnxruntime generator: each supplies an `Encode` (frames -> normalised latents) and a `GenerateWindow`.

With the causal VAE's frame rule (1 + r·k frames <-> 1 + k latent frames) a clip's latent frame 0 holds its first
frame alone and latent frame j >= 1 its frames r(j-1)+1 .. rj, so:
  first = 1 frame            latent frame 0 is the image (image-to-video)
  first = 1 + r·(k-1) frames  latent frames 0 .. k-1 are the clip's (continue a clip)
  last = 1 frame             the last latent frame is the image held for r frames (end at an image)
  last = 1 + r·k frames      the last k latent frames are the clip's after its first frame (lead into a clip)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Latent frames a window continues from when extending (fewer where the window is too short): 1 would be a still
# image, 2 (1 + r frames) carry a direction but too little for the demo DiT to hold the shape's place and speed.
# More context, steadier seams (demo DiT, 8 unseen prompts, the jump over the step between latent frames, for 2 / 4
# / 6: extension 4.6 / 2.3 / 1.3x, long videos 4.7 / 3.0 / 1.7x), at the price of fewer new frames per window:
# 6 new per 17-frame window instead of 14, so 64 frames take 9 windows instead of 5.
CONTEXT_LATENT_FRAMES = 6

Encode = Callable[[np.ndarray], np.ndarray]  # uint8 [1 + r·k, H, W, 3] -> float32 [C, 1 + k, h, w], normalised


@dataclass(frozen=True)
class FrameCondition:
    """Frames a generated clip must begin and/or end with: uint8 [n, H, W, 3] at the generated size (see the
    module docstring for what n may be)."""

    first: np.ndarray | None = None
    last: np.ndarray | None = None

    def given_video_frames(self, frames: int) -> list[int]:
        """Indices of the generated clip's frames that reproduce given frames, for marking them in a contact sheet."""
        first = [] if self.first is None else list(range(len(self.first)))
        last = [] if self.last is None else list(range(frames - len(self.last) + (len(self.last) > 1), frames))
        return first + last


def _check_frames(frames: np.ndarray, name: str, r: int, size: tuple[int, int]) -> int:
    """Latent frames `frames` stand for; ValueError naming the fault."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} frames must be uint8 [n, H, W, 3], got {getattr(frames, 'shape', type(frames))}")
    n, height, width = frames.shape[:3]
    if (height, width) != size:
        raise ValueError(f"{name} frames are {width}x{height}, the clip is {size[1]}x{size[0]}: resize them first")
    if n != 1 and (n - 1) % r:
        raise ValueError(f"{name}: {n} frames; give 1 (an image) or 1 + {r}·k frames (a clip), e.g. {1 + r}")
    return 1 if n == 1 else 1 + (n - 1) // r


def given_latents(
    conditions: list[FrameCondition | None], latent_shape: tuple[int, int, int, int], r: int,
    frame_size: tuple[int, int], encode: Encode,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(given latents float32 [B, C, T, h, w], given frames bool [B, T]) for one condition per clip (None: text
    only). `frame_size` is the clip's (height, width); at least one latent frame is always left to generate."""
    latent_t = latent_shape[1]
    latents = np.zeros((len(conditions), *latent_shape), np.float32)
    given = np.zeros((len(conditions), latent_t), bool)
    for i, condition in enumerate(conditions):
        if condition is None:
            continue
        if condition.first is not None:
            k = _check_frames(condition.first, "first", r, frame_size)
            z = encode(_as_clip(condition.first, r))[:, :k]
            _place(latents[i], given[i], z, 0, "first")
        if condition.last is not None:
            k = _check_frames(condition.last, "last", r, frame_size)
            # An image ends the clip as the latent frame of it held still; a clip's frames after its first.
            z = encode(_as_clip(condition.last, r))[:, 1 : 1 + (1 if len(condition.last) == 1 else k - 1)]
            _place(latents[i], given[i], z, latent_t - z.shape[1], "last")
        if given[i].all():
            raise ValueError(f"the given frames fill all {latent_t} latent frames of the clip: nothing to generate")
    return latents, given


def _as_clip(frames: np.ndarray, r: int) -> np.ndarray:
    """An image as a still clip of 1 + r frames (the encoder's shortest); a clip as it is."""
    return np.repeat(frames, 1 + r, axis=0) if len(frames) == 1 else frames


def _place(latents: np.ndarray, given: np.ndarray, z: np.ndarray, start: int, name: str) -> None:
    stop = start + z.shape[1]
    if start < 0 or stop > given.shape[0] or given[start:stop].any():
        raise ValueError(f"{name}: its {z.shape[1]} latent frames do not fit a clip of {given.shape[0]} latent "
                         "frames beside the other given frames: generate more frames")  # fmt: skip
    latents[:, start:stop], given[start:stop] = z, True


def start_latents(noise: np.ndarray, latents: np.ndarray, given: np.ndarray) -> np.ndarray:
    """The sampler's starting point: noise, with the given latent frames in place (they stay clean throughout)."""
    return np.where(given[:, None, :, None, None], latents, noise).astype(np.float32)


# (frames, condition, window index) -> one uint8 clip [frames, H, W, 3]; the index picks the window's noise.
GenerateWindow = Callable[[int, FrameCondition | None, int], np.ndarray]
WINDOW_SEED_STRIDE = 1_000_003  # window i of a video of seed s draws noise from s + i·stride: apart from prompts' s + j


def window_seed(seed: int, index: int) -> int:
    """The noise seed of window `index` of a long or extended video of `seed` (window 0: the seed itself)."""
    return seed + WINDOW_SEED_STRIDE * index


def context_latent_frames(latent_window: int, backward: bool = False) -> int:
    """Latent frames a window of `latent_window` latent frames is given when it continues a video (the first ones)
    or, `backward`, leads into one (the last ones): CONTEXT_LATENT_FRAMES, fewer where the window would have nothing
    left to generate; below 1 for a window too short to extend. Training gives the DiT these masks too."""
    # Backward, the window's latent frame 0 is never given: the context's first frame is not a latent frame of it.
    return min(CONTEXT_LATENT_FRAMES, latent_window - (2 if backward else 1))


def context_frames(window: int, r: int, backward: bool = False) -> int:
    """Frames of what is there that each window of `window` frames (1 + r·k) continues from (leads into when
    `backward`): `context_latent_frames` of them."""
    # A window of 1 + r(T - 1) frames takes j latent frames of context and adds r(T - 1 - j) frames going forward
    # (the context's first frame is a latent frame of its own), r(T - 2 - j) + r going backward (it is not given).
    j = context_latent_frames(1 + (window - 1) // r, backward)
    if j < 1:
        raise ValueError(f"windows of {window} frames are too short to extend {'backward' if backward else 'forward'}")
    return 1 + r * (j if backward else j - 1)


def extend_video(generate: GenerateWindow, clip: np.ndarray, new_frames: int, window: int, r: int,
                 backward: bool = False) -> np.ndarray:  # fmt: skip
    """`clip` with `new_frames` more frames after it (before it when `backward`), generated in windows of `window`
    frames (1 + r·k), each continuing from (leading into) `context_frames` of what is there."""
    if len(clip) < 1 + r:
        raise ValueError(f"a clip to extend needs at least {1 + r} frames (one latent frame after the first), got "
                         f"{len(clip)}")  # fmt: skip
    most = context_frames(window, r, backward)
    # Backward, the video is built in reversed time: its end is the clip's start.
    video, index = (clip[::-1] if backward else clip), 1
    while len(video) < len(clip) + new_frames:
        context = min(most, 1 + r * ((len(video) - 1) // r))  # 1 + r·j frames
        edge = np.ascontiguousarray(video[-context:][::-1] if backward else video[-context:])
        condition = FrameCondition(last=edge) if backward else FrameCondition(first=edge)
        generated = generate(window, condition, index)
        # The window reproduces the context at its end (backward) or start; the rest is new.
        video = np.concatenate([video, generated[::-1][context:] if backward else generated[context:]])
        index += 1
    video = video[: len(clip) + new_frames]
    return np.ascontiguousarray(video[::-1] if backward else video)


def long_video(generate: GenerateWindow, frames: int, window: int, r: int,
               condition: FrameCondition | None = None) -> np.ndarray:  # fmt: skip
    """A clip of `frames` frames, more than one window holds: the first window from the text (and `condition`),
    then extended window by window."""
    first = generate(window, condition, 0)
    return first[:frames] if frames <= window else extend_video(generate, first, frames - window, window, r)


def long_video_seams(frames: int, window: int, r: int) -> list[int]:
    """The first frame of each window after the first in `long_video(…, frames, window, r)`: where it has seams."""
    return list(range(window, frames, window - context_frames(window, r)))
