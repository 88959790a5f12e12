"""Draws the example folder of conditioning inputs that `conditioned_videos` reads by default: two PNGs and one
short MP4 of the built-in shapes at the demo size, and a requests.json whose prompts say what they show.

    python scripts/draw_conditioning_examples.py src/videodit/generation/examples   (make conditioning-examples)

The files are drawn, not shipped unexplained: rerunning this rewrites them from the renderer and a fixed seed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from videodit.config import load_preset
from videodit.data.config import SyntheticConfig
from videodit.data.synthetic import CAPTION_TEMPLATES, render_clip
from videodit.data.video_io import write_mp4

# What each file shows: (shape, colour, size, direction); the prompts are the first caption template on them.
CIRCLE = ("circle", "red", "large", "right")
TRIANGLE = ("triangle", "cyan", "small", "down")
VIDEO_FRAMES = 9  # two latent frames after the first at the demo's 4x temporal compression: enough to continue
LONG_FRAMES = 64  # beyond every trained window: a long video stitched window by window


def prompt(shape: str, colour: str, size: str, direction: str) -> str:
    return CAPTION_TEMPLATES[0].format(shape=shape, colour=colour, size=size, direction=direction)


def draw_examples(out_dir: Path, seed: int = 0) -> Path:
    """Write circle_first.png, circle_last.png, triangle.mp4 and requests.json into `out_dir`; returns requests.json."""
    demo = load_preset("demo")
    config = SyntheticConfig(n_frames=demo.frames, height=demo.height, width=demo.width, fps=demo.fps, position_jitter=0.0)
    rng = np.random.default_rng(seed)
    circle = render_clip(*CIRCLE, config, rng)
    triangle = render_clip(*TRIANGLE, replace(config, n_frames=VIDEO_FRAMES), rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(circle[0]).save(out_dir / "circle_first.png", optimize=True)
    Image.fromarray(circle[-1]).save(out_dir / "circle_last.png", optimize=True)
    write_mp4(triangle, out_dir / "triangle.mp4", demo.fps)
    requests = [
        {"prompt": prompt(*CIRCLE), "image": "circle_first.png"},
        {"prompt": prompt(*CIRCLE), "image": "circle_first.png", "last_image": "circle_last.png"},
        {"prompt": prompt(*CIRCLE), "last_image": "circle_last.png"},
        {"prompt": prompt(*TRIANGLE), "extend": "triangle.mp4"},
        {"prompt": prompt(*TRIANGLE), "extend": "triangle.mp4", "extend_backward": True},
        {"prompt": prompt(*CIRCLE), "image": "circle_first.png", "frames": LONG_FRAMES},
    ]
    path = out_dir / "requests.json"
    path.write_text(json.dumps(requests, indent=2) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    print(draw_examples(Path(sys.argv[1])))
