"""What the registry holds for the VAE and the DiT, logged so that both ways a user loads them work.

`mlflow.pytorch.load_model(uri)` gives the object back: `Reconstructor(...).vae` encodes and decodes,
`GenerationPipeline(...).generate(prompts)` makes videos. `mlflow.pyfunc.load_model(uri).predict(x, params)` calls
`object(torch.from_numpy(x), **params)` and wants one tensor back, so each object's `forward` is that call, and its
`signature()` says what it takes and returns. The pickle names `videodit` classes: `log_model` logs the package with
the model (`code_paths`: MLflow puts it on `sys.path` on load) and pins what its code imports (`pip_requirements`).
"""

from __future__ import annotations

from dataclasses import replace

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

from videodit.evaluation.model_report import reconstruct_clips
from videodit.models.vae import VideoVAE
from videodit.tracking.source import code_paths, pip_requirements
from videodit.training.dit_module import DiTModule


def _videos(name: str | None, frames: int = -1, height: int = -1, width: int = -1) -> TensorSpec:
    """uint8 videos [B, T, H, W, 3], as generated (-1: any size). An input is unnamed: pyfunc turns a named one into
    a dict, which the pytorch flavor refuses."""
    return TensorSpec(np.dtype(np.uint8), (-1, frames, height, width, 3), name)


class Reconstructor(torch.nn.Module):
    """`videodit-vae`: the trained VAE (`.vae`); forward reconstructs uint8 videos [B, T, H, W, 3] through its
    posterior mean (T any length, H and W multiples of its spatial compression)."""

    def __init__(self, vae: VideoVAE):
        super().__init__()
        self.vae = vae.eval()

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack(reconstruct_clips(self.vae, list(videos.cpu().numpy()))))

    def signature(self) -> ModelSignature:
        return ModelSignature(inputs=Schema([_videos(None)]), outputs=Schema([_videos("reconstructions")]))


class GenerationPipeline(DiTModule):
    """`videodit-dit`: the trained pipeline (EMA DiT, VAE decoder, latent statistics, sampler); forward makes one
    video per seed, of the prompt at the same place in `prompts`."""

    def forward(self, seeds: torch.Tensor, prompts: list[str] = (), steps: int = 0, guidance: float = -1.0) -> torch.Tensor:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(seeds)} seeds and {len(prompts)} prompts: params['prompts'] holds one prompt per seed")
        # 0 steps and a negative guidance (the signature's defaults) keep the pipeline's sampler, as the ONNX model does.
        sampler = replace(self.sampler, steps=steps or self.sampler.steps, guidance=self.sampler.guidance if guidance < 0 else guidance)
        return torch.from_numpy(self.generate(list(prompts), seeds.tolist(), sampler))

    def signature(self) -> ModelSignature:
        return ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
            outputs=Schema([_videos("videos", *self.video_shape)]),
            params=ParamSchema([ParamSpec("prompts", "string", [], (-1,)), ParamSpec("steps", "long", 0), ParamSpec("guidance", "double", -1.0)]),
        )  # fmt: skip


def log_model(model: Reconstructor | GenerationPipeline, name: str) -> ModelInfo:
    """`model`, pickled, into the active MLflow run, with its signature, the `videodit` package and its requirements."""
    return mlflow.pytorch.log_model(
        model, name=name, signature=model.signature(), serialization_format="pickle", code_paths=code_paths(),
        pip_requirements=pip_requirements(__name__),
    )  # fmt: skip
