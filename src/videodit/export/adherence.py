"""The prompt adherence of an exported bundle, read from its onnxruntime videos on the evaluation's unseen split:
what `model_evaluation` scores a trained pipeline on, by the same code, so a bundle and its quantized copy compare
like with like."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from videodit.domain import Domain
from videodit.evaluation.model_report import EvaluationConfig, split_adherence
from videodit.generation.onnx_generator import OnnxVideoGenerator
from videodit.sampling import SamplerConfig


class _BundlePipeline:
    """A bundle's generator behind the trained pipeline's `generate(prompts, seeds, sampler, **size)`."""

    def __init__(self, generator: OnnxVideoGenerator):
        self.generator = generator

    def generate(self, prompts: list[str], seeds: int | list[int], sampler: SamplerConfig, **size) -> list[np.ndarray]:
        return self.generator.generate(prompts, seeds, sampler.steps, sampler.guidance, **size)


def score_bundle(bundle_dir: Path | str, config: EvaluationConfig, domain: Domain) -> dict[str, float]:
    """The bundle's unseen-split adherence with its own sampler: `overall` and each attribute's accuracy (with 95%
    intervals), the names `evaluate_pipeline` reports, on the CPU as `bundle_psnr` runs."""
    generator = OnnxVideoGenerator(bundle_dir, providers=["CPUExecutionProvider"])
    scores, _ = split_adherence(_BundlePipeline(generator), domain.unseen_prompts(), config, generator.spec.sampler, domain)
    return scores
