"""Reading and writing video files with PyAV, with errors that name the file instead of FFmpeg internals."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from videodit.cpu import cpu_flags


class VideoDecodeError(Exception):
    """A file that cannot be read as a video; the message names the file and says why."""

    def __init__(self, path: Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class StreamInfo:
    container: str
    codec: str
    width: int
    height: int
    nominal_fps: float
    has_audio: bool


@dataclass(frozen=True)
class DecodedFrame:
    time_s: float
    rgb: np.ndarray  # uint8 [H, W, 3]


def _describe(exc: Exception) -> str:
    # FFmpeg errors carry an errno-style prefix and the file name; keep only the human part.
    if isinstance(exc, av.error.FFmpegError):
        return exc.strerror or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def open_video(path: Path) -> tuple[av.container.InputContainer, StreamInfo]:
    """Open `path` and describe its first video stream; raises VideoDecodeError on anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(path, "file not found")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
        raise VideoDecodeError(path, f"not a readable video container ({_describe(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "contains no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    info = StreamInfo(
        container=container.format.name,
        codec=stream.codec_context.name,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        nominal_fps=float(rate) if rate else 0.0,
        has_audio=bool(container.streams.audio),
    )
    return container, info


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side shrunk to `short_side`, aspect kept, both even; never upscales."""
    if min(width, height) <= short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class RGBConverter:
    """Converts the decoded frames of one file to uint8 RGB at one size (width, height), None keeping theirs.

    It keeps one swscale context for every frame: `frame.to_ndarray(format=...)` builds a new one per
    frame, which costs more than decoding a small frame.
    """

    def __init__(self, path: Path, size: tuple[int, int] | None = None):
        self.path, self.size = path, size
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = self.size or (frame.width, frame.height)
        try:
            return self._reformatter.reformat(frame, width=width, height=height, format="rgb24").to_ndarray()
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(self.path, f"cannot convert a frame to RGB ({_describe(exc)})") from None


def decode_video(container: av.container.InputContainer, path: Path) -> Iterator[av.VideoFrame]:
    """The frames of the first video stream, in presentation order as FFmpeg returns them."""
    try:
        yield from container.decode(container.streams.video[0])
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(path, f"decoding failed mid-stream ({_describe(exc)})") from None


def frame_time(frame: av.VideoFrame) -> float:
    return float(frame.time) if frame.time is not None else float("nan")


def write_mp4(frames: np.ndarray, path: Path, fps: int, crf: int = 18) -> None:
    """Write uint8 frames [T, H, W, 3] as an MP4 file, `mp4_bytes`' bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mp4_bytes(frames, fps, crf))


def mp4_frames(data: bytes) -> np.ndarray:
    """uint8 frames [T, H, W, 3] of an MP4 held in memory (as `mp4_bytes` makes it)."""
    with av.open(io.BytesIO(data), mode="r") as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


# x264's AVX-512 kernels encode the same frames to different bytes now and then (on a Zen 4 EPYC, 8 distinct
# files from 200 encodes of one clip); with its kernels up to AVX2, which every AVX-512 CPU has, 200 of 200 match.
X264_PARAMS = "asm=avx2" if "avx512f" in cpu_flags() else ""


def mp4_bytes(frames: np.ndarray, fps: int, crf: int = 18) -> bytes:
    """uint8 frames [T, H, W, 3] as the bytes of an H.264 (yuv420p) MP4. One encoder thread and x264's AVX2 kernels
    on AVX-512 CPUs (`X264_PARAMS`) keep them reproducible."""
    buffer = io.BytesIO()
    n, height, width, _ = frames.shape
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "preset": "medium", **({"x264-params": X264_PARAMS} if X264_PARAMS else {})}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()
