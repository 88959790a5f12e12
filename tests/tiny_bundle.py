"""One tiny exported bundle per test session, shared by test_export.py and test_generation.py (export is ~30 s),
and its int8 copy."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from videodit.export import export_bundle, quantize_bundle, random_models
from videodit.models import MiniLMTextEncoder, SpacetimeDiT, VideoVAE
from videodit.sampling import SamplerConfig
from videodit.config import load_preset

SAMPLER = SamplerConfig(steps=3, guidance=4.0)
WEIGHT_STD = 0.05  # adaLN-Zero starts the DiT at zero velocity; random weights make parity meaningful


@dataclass(frozen=True)
class TinyBundle:
    path: Path
    vae: VideoVAE
    dit: SpacetimeDiT
    text_encoder: MiniLMTextEncoder


@functools.cache
def tiny_bundle() -> TinyBundle:
    preset = load_preset("tiny")
    vae, dit = random_models(preset, WEIGHT_STD)
    text_encoder = MiniLMTextEncoder()
    out = Path(tempfile.mkdtemp(prefix="videodit-tiny-bundle-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    # A non-trivial latent normalisation, so parity also covers its undoing inside vae_decoder.onnx.
    clip = {"fps": preset.fps, "frames": preset.frames, "height": preset.height, "width": preset.width,
            "latent_shift": 0.25, "latent_scale": 2.0}  # fmt: skip
    export_bundle(vae, dit, text_encoder, out, SAMPLER, clip, {"model_version": "tiny-test"}, preset.buckets)
    return TinyBundle(out, vae, dit, text_encoder)


@functools.cache
def tiny_int8_bundle() -> Path:
    """`quantize_bundle` of the tiny bundle (about a second)."""
    out = Path(tempfile.mkdtemp(prefix="videodit-tiny-int8-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    return quantize_bundle(tiny_bundle().path, out)
