"""Torch-free text-to-video generation from an exported ONNX bundle, and the files a run writes."""

from videodit.generation.onnx_generator import BundleSpec, OnnxVideoGenerator
from videodit.generation.outputs import GeneratedClip, write_outputs

__all__ = ["BundleSpec", "GeneratedClip", "OnnxVideoGenerator", "write_outputs"]
