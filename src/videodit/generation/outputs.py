"""The files a generation run leaves: per clip an MP4 and a GIF, one contact sheet, one manifest.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from videodit.data.video_io import write_mp4
from videodit.evaluation.contact_sheet import contact_sheet, save_gif

CONTACT_SHEET_PNG = "contact_sheet.png"
MANIFEST_JSON = "manifest.json"


@dataclass(frozen=True)
class GeneratedClip:
    """One generated video and what produced it; `name` is the file stem of its MP4 and GIF."""

    name: str
    prompt: str
    seed: int
    video: np.ndarray  # uint8 [T, H, W, 3]
    given_frames: list[int] = field(default_factory=list)  # frames that reproduce given ones (marked in the sheet)
    given_prompt: str | None = None  # the prompt as given, when a prompt rewriter made `prompt` from it


def write_outputs(out_dir: Path, clips: list[GeneratedClip], fps: int, settings: dict) -> Path:
    """Write <name>.mp4 and <name>.gif per clip, contact_sheet.png and manifest.json into `out_dir`.

    settings (steps, guidance, model versions, timings, ...) go into the manifest as given; returns its path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for clip in clips:
        mp4, gif = out_dir / f"{clip.name}.mp4", out_dir / f"{clip.name}.gif"
        write_mp4(clip.video, mp4, fps)
        save_gif(clip.video, gif, fps)
        given = {} if clip.given_prompt is None else {"given_prompt": clip.given_prompt}
        records.append({"prompt": clip.prompt, **given, "seed": clip.seed, "mp4": mp4.name, "gif": gif.name})
    sheet = contact_sheet([c.video for c in clips], [c.prompt for c in clips], given_frames=[c.given_frames for c in clips])
    sheet.save(out_dir / CONTACT_SHEET_PNG)
    manifest = {**settings, "fps": fps, "contact_sheet": CONTACT_SHEET_PNG, "videos": records}
    manifest_path = out_dir / MANIFEST_JSON
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest_path
