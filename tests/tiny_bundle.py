"""One tiny exported bundle per test run, shared by every module that needs one (test_export, test_generation,
test_cli, test_conditioning) and by every pytest-xdist worker of the run: an export is ~50 s on a 2-core CPU,
the models behind it are rebuilt from their seed in milliseconds. Also its int8 copy."""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

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


def _shared_dir(factory: pytest.TempPathFactory) -> Path:
    """The run's temp root, which every xdist worker's own base temp sits in (pytest keeps the last few runs')."""
    base = factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def _built_once(out: Path, build) -> Path:
    """`build(folder)` by the first worker to get here, renamed to `out` when complete; the others wait on the
    lock and find it there."""
    with FileLock(str(out) + ".lock"):
        if not out.is_dir():
            partial = out.with_name(out.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            build(partial)
            partial.rename(out)
    return out


@functools.cache
def _models() -> tuple[VideoVAE, SpacetimeDiT, MiniLMTextEncoder]:
    vae, dit = random_models(load_preset("tiny"), WEIGHT_STD)
    return vae, dit, MiniLMTextEncoder()


def tiny_bundle(factory: pytest.TempPathFactory) -> TinyBundle:
    preset = load_preset("tiny")
    vae, dit, text_encoder = _models()
    # A non-trivial latent normalisation, so parity also covers its undoing inside vae_decoder.onnx.
    clip = {"fps": preset.fps, "frames": preset.frames, "height": preset.height, "width": preset.width,
            "latent_shift": 0.25, "latent_scale": 2.0}  # fmt: skip
    out = _built_once(_shared_dir(factory) / "tiny-bundle", lambda out: export_bundle(
        vae, dit, text_encoder, out, SAMPLER, clip, {"model_version": "tiny-test"}, preset.buckets))  # fmt: skip
    return TinyBundle(out, vae, dit, text_encoder)


def tiny_int8_bundle(factory: pytest.TempPathFactory) -> Path:
    """`quantize_bundle` of the tiny bundle, its decoder calibrated on two prompts (a few seconds)."""
    source = tiny_bundle(factory).path
    return _built_once(_shared_dir(factory) / "tiny-int8-bundle",
                       lambda out: quantize_bundle(source, out, ["a red circle moves left", "a white square moves up"], [0]))
