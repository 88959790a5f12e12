"""The registered `videodit-onnx` model: an MLflow pyfunc over the ONNX bundle, prompts in, videos out.

`mlflow.pyfunc.load_model("models:/videodit-onnx@champion").predict(["a red circle moves left"])`
returns uint8 videos [B, T, H, W, 3]; with the param `encoding` "mp4" it returns one base64-encoded MP4 (H.264) per
prompt instead, a fraction of the bytes over REST. Like the generator it wraps, it needs no torch.

The frames a clip is conditioned on travel as params, the bytes of a file in base64 (`image`, `last_image`:
PNG or JPEG; `video`: MP4), with `extend_backward` and `frames` as the CLI's --extend-backward and --frames:
params apply to every prompt of the request, and keep the input a plain list of prompts (a second, optional
input column would make MLflow want a named DataFrame instead).
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

BUNDLE_ARTIFACT = "bundle"
ENCODINGS = ("array", "mp4")  # what `predict` answers: uint8 videos, or base64 MP4 strings
# One unnamed string column: pyfunc then takes a plain list of prompts (a named one would want a DataFrame). The
# outputs are the default encoding's: MLflow checks inputs and params against a signature, never outputs.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string")]),
    outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1, 3), "video")]),
    params=ParamSchema([
        ParamSpec("seed", "long", 0), ParamSpec("steps", "long", 0), ParamSpec("guidance", "double", -1.0),
        ParamSpec("frames", "long", 0), ParamSpec("image", "string", ""), ParamSpec("last_image", "string", ""),
        ParamSpec("video", "string", ""), ParamSpec("extend_backward", "boolean", False),
        ParamSpec("encoding", "string", ENCODINGS[0]),
    ]),
)  # fmt: skip
FILE_PARAMS = {"image": "image.png", "last_image": "last_image.png", "video": "video.mp4"}  # base64 file bytes


class OnnxBundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from videodit.generation.onnx_generator import OnnxVideoGenerator

        self.generator = OnnxVideoGenerator(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input, params: dict | None = None) -> np.ndarray | list[str]:
        from videodit.data.video_io import mp4_bytes
        from videodit.generation.modes import GenerationRequest, generate_request
        from videodit.sampling import prompt_seeds

        prompts = model_input.iloc[:, 0].tolist() if hasattr(model_input, "columns") else list(model_input)
        params = params or {}
        encoding = params.get("encoding", ENCODINGS[0])
        if encoding not in ENCODINGS:
            raise ValueError(f"param 'encoding' is {encoding!r}: use one of {', '.join(ENCODINGS)}")
        seeds = prompt_seeds(int(params.get("seed", 0)), len(prompts))  # prompt i gets seed + i
        # 0 steps or frames / negative guidance in the signature's defaults mean "the bundle's default".
        guidance = float(params.get("guidance", -1.0))
        with tempfile.TemporaryDirectory(prefix="videodit-request-") as folder:
            files = {}
            for name, filename in FILE_PARAMS.items():
                if params.get(name):
                    try:
                        data = base64.b64decode(params[name], validate=True)
                    except binascii.Error:
                        raise ValueError(f"param {name!r} is not base64-encoded file bytes") from None
                    files[name] = Path(folder) / filename
                    files[name].write_bytes(data)
            request = GenerationRequest(
                prompts, seeds, int(params.get("steps", 0)) or None, guidance if guidance >= 0 else None,
                int(params.get("frames", 0)) or None, None, files.get("image"), files.get("last_image"),
                files.get("video"), bool(params.get("extend_backward", False)),
            )  # fmt: skip
            videos, _ = generate_request(self.generator, request)
        if encoding == "mp4":
            return [base64.b64encode(mp4_bytes(video, self.generator.spec.fps)).decode("ascii") for video in videos]
        return np.stack(videos)
