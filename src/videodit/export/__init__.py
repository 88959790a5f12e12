"""ONNX export of the text encoder, DiT and VAE decoder into a bundle, with parity checks against PyTorch."""

from videodit.export.onnx_export import end_to_end_parity, export_bundle, export_pipeline, graph_parity, random_models

__all__ = ["end_to_end_parity", "export_bundle", "export_pipeline", "graph_parity", "random_models"]
