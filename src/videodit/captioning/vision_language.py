"""A captioner over a transformers image-to-text model (BLIP, GIT and the like) in a local folder.

The model and its processor load from `model_dir` with `local_files_only=True`: nothing is downloaded, and a
folder that does not hold a loadable model is an error naming it. The clip's middle frame is captioned, without
a prompt. The captioner's version is the model class and a hash of the folder, so another checkpoint in the same
place is another version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

MAX_NEW_TOKENS = 40
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HASHED_PREFIX = 1 << 20  # weights are hashed by name, size and first MiB: a checkpoint of gigabytes hashes in ms


class ModelFolderError(ValueError):
    """`model_dir` is missing or holds no model transformers can load offline; the message names the folder."""


def folder_fingerprint(model_dir: Path) -> str:
    """A hash of every file of the folder: configs and tokenizer files whole, weights by name, size and first MiB."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode())
        with path.open("rb") as f:
            if path.suffix in WEIGHT_SUFFIXES:
                digest.update(str(path.stat().st_size).encode())
                digest.update(f.read(HASHED_PREFIX))
            else:
                digest.update(f.read())
    return digest.hexdigest()[:12]


class VisionLanguageCaptioner:
    name = "vision_language"

    def __init__(self, model_dir: str | Path):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model_dir = Path(model_dir).expanduser()
        if not self.model_dir.is_dir():
            raise ModelFolderError(f"captioning.model_dir {self.model_dir} is not a folder: point it at a saved model")
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_dir, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(self.model_dir, local_files_only=True).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFolderError(f"captioning.model_dir {self.model_dir} holds no image-to-text model transformers "
                                   f"can load offline: {exc}") from None  # fmt: skip
        self.name = f"vision_language:{type(self.model).__name__}"
        self.version = folder_fingerprint(self.model_dir)

    def caption(self, frames: np.ndarray, fps: float) -> str | None:
        import torch

        inputs = self.processor(images=frames[len(frames) // 2], return_tensors="pt")
        with torch.inference_mode():
            tokens = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS)
        text = self.processor.batch_decode(tokens, skip_special_tokens=True)[0].strip()
        return text or None
