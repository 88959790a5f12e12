"""ONNX export of the text encoder, DiT and VAE decoder into a bundle, with parity checks against PyTorch."""

from videodit.export.onnx_export import (
    bundle_psnr, end_to_end_parity, export_bundle, export_pipeline, graph_parity, quantize_bundle, random_models,
)  # fmt: skip

__all__ = [
    "bundle_psnr", "end_to_end_parity", "export_bundle", "export_pipeline", "graph_parity", "quantize_bundle",
    "random_models",
]  # fmt: skip
