"""ONNX export of the text encoder, DiT and VAE decoder into a bundle, with parity checks against PyTorch, an int8
copy and the prompt adherence of a bundle."""

from videodit.export.adherence import score_bundle
from videodit.export.onnx_export import (
    bundle_psnr, end_to_end_parity, export_bundle, export_pipeline, graph_parity, quantize_bundle, random_models,
)  # fmt: skip

__all__ = [
    "bundle_psnr", "end_to_end_parity", "export_bundle", "export_pipeline", "graph_parity", "quantize_bundle",
    "random_models", "score_bundle",
]  # fmt: skip
