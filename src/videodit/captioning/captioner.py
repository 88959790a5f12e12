"""The `Captioner` interface and the config that picks one and says which caption trains.

A captioner turns a training clip's frames into a caption, or None when it cannot describe the clip. Its `name` and
`version` go with every caption it writes (lineage), so a caption can always be traced to what produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

NO_CAPTIONER = "none"
CAPTIONERS = (NO_CAPTIONER, "descriptive", "vision_language")
CAPTION_SOURCES = ("user", "generated")  # which caption of a clip trains: the user's or the captioner's


class Captioner(Protocol):
    name: str
    version: str  # changes whenever what it writes for the same clip may change

    def caption(self, frames: np.ndarray, fps: float) -> str | None:
        """A caption of uint8 frames [T, H, W, 3] shown at `fps`, or None when the clip cannot be described."""


@dataclass(frozen=True)
class CaptioningConfig:
    """`captioned_clips`: which captioner writes generated captions and which caption of each clip trains.

    A clip without the chosen caption trains on the other one (a user clip without a caption on the generated one,
    a clip the captioner cannot describe on the user's); the table records which one did."""

    # "none": the user's captions pass through; "descriptive": read from the pixels of the built-in shapes set;
    # "vision_language": a transformers image-to-text model loaded from `model_dir`, never downloaded.
    captioner: str = NO_CAPTIONER
    model_dir: str = ""
    train_on: str = "user"

    def __post_init__(self):
        if self.captioner not in CAPTIONERS:
            raise ValueError(f"captioner={self.captioner!r} is not one of {', '.join(CAPTIONERS)}")
        if self.train_on not in CAPTION_SOURCES:
            raise ValueError(f"train_on={self.train_on!r} is not one of {', '.join(CAPTION_SOURCES)}")

    @property
    def generates(self) -> bool:
        """Whether a captioner is configured: then a clip without a user caption is captioned, not quarantined."""
        return self.captioner != NO_CAPTIONER
