"""The registered `videodit-onnx` model: an MLflow pyfunc over the ONNX bundle, prompts in, videos out.

`mlflow.pyfunc.load_model("models:/videodit-onnx@champion").predict(["a red circle moves left"])`
returns uint8 videos [B, T, H, W, 3]. Like the generator it wraps, it needs no torch.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

BUNDLE_ARTIFACT = "bundle"
# One unnamed string column: pyfunc then takes a plain list of prompts (a named one would want a DataFrame).
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string")]),
    outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1, 3), "video")]),
    params=ParamSchema([ParamSpec("seed", "long", 0), ParamSpec("steps", "long", 0), ParamSpec("guidance", "double", -1.0)]),
)


class OnnxBundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from videodit.generation.onnx_generator import OnnxVideoGenerator

        self.generator = OnnxVideoGenerator(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input, params: dict | None = None) -> np.ndarray:
        prompts = model_input.iloc[:, 0].tolist() if hasattr(model_input, "columns") else list(model_input)
        params = params or {}
        seed = int(params.get("seed", 0))  # prompt i gets seed + i
        # 0 steps / negative guidance in the signature's defaults mean "the bundle's default".
        steps = int(params.get("steps", 0)) or None
        guidance = float(params.get("guidance", -1.0))
        videos = self.generator.generate(prompts, seed, steps=steps, guidance=guidance if guidance >= 0 else None)
        return np.stack(videos)
