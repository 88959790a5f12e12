"""The REST endpoint of a `videodit-onnx` model: MLflow's scoring server over the pyfunc, and its wire format.

    mlflow models serve -m models:/videodit-onnx@champion --env-manager local -h 127.0.0.1 -p 5001   # make serve

POST /invocations with JSON `{"inputs": ["a red circle moves left", ...], "params": {"seed": 0, "steps": 10,
"guidance": 4.0}}` (params optional, as in the pyfunc's signature); the answer is `{"predictions": videos}`,
the uint8 videos [B, T, H, W, 3] as nested JSON arrays, or with `"encoding": "mp4"` among the params one
base64-encoded MP4 string per prompt (kilobytes a clip instead of T·H·W·3 numbers); `videos_from_response` reads
either back as uint8 videos.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from videodit.data.video_io import mp4_frames


def request_body(prompts: list[str], **params) -> bytes:
    return json.dumps({"inputs": list(prompts), "params": params}).encode()


def videos_from_response(body: bytes) -> np.ndarray:
    """uint8 videos [B, T, H, W, 3] of an answer, nested arrays or base64 MP4s (decoded: H.264 is lossy)."""
    predictions = json.loads(body)["predictions"]
    if predictions and isinstance(predictions[0], str):
        return np.stack([mp4_frames(base64.b64decode(video)) for video in predictions])
    return np.array(predictions, dtype=np.uint8)


def invoke(url: str, prompts: list[str], timeout: float = 120, **params) -> np.ndarray:
    """POST `prompts` to a scoring server's /invocations; its videos, uint8 [B, T, H, W, 3]."""
    request = urllib.request.Request(f"{url}/invocations", request_body(prompts, **params),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return videos_from_response(response.read())


@contextlib.contextmanager
def serving(model_uri: str, port: int, tracking_uri: str | None = None, timeout: float = 120) -> Iterator[str]:
    """`mlflow models serve` of `model_uri` on 127.0.0.1:`port` in this environment, until the block ends; yields
    its base URL once /ping answers."""
    env = {**os.environ, **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {})}
    # MLflow starts `uvicorn` from PATH: this interpreter's, also when its environment is not activated.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]  # fmt: skip
    # Its own session: the server's workers are stopped with it.
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {server.returncode}: {server.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow models serve of {model_uri} did not answer /ping in {timeout:.0f} s")
                time.sleep(0.25)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
