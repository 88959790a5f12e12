"""ONNX export of the tiny models: bundle contents, per-graph parity and end-to-end parity with PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

from tiny_bundle import STEPS, tiny_bundle
from videodit.export import end_to_end_parity, export_bundle, graph_parity
from videodit.export.onnx_export import OPSET, _export
from videodit.generation.onnx_generator import euler_timesteps

PROMPTS = ["a red circle moves left", "a large blue square moves up"]
MAX_GRAPH_DIFF = 1e-3
MIN_PSNR_DB = 40.0


@pytest.fixture(scope="module")
def bundle():
    return tiny_bundle()


def test_bundle_holds_graphs_tokenizer_and_spec(bundle):
    names = {p.name for p in bundle.path.iterdir()}
    assert {"text_encoder.onnx", "dit.onnx", "vae_decoder.onnx", "tokenizer", "bundle.json"} <= names
    assert (bundle.path / "tokenizer" / "tokenizer.json").is_file()
    spec = json.loads((bundle.path / "bundle.json").read_text())
    assert spec["sampler"]["steps"] == STEPS
    assert spec["sampler"]["latent_shape"] == [4, 3, 4, 4]
    assert spec["sampler"]["max_tokens"] == bundle.text_encoder.max_tokens
    assert spec["limits"]["dynamic_latent_thw"] is True
    assert spec["source_versions"] == {"model_version": "tiny-test"}
    assert spec["versions"]["onnxruntime"] and spec["opset"] == OPSET
    ops = {}
    for graph in ("text_encoder", "dit", "vae_decoder"):  # every graph was written at the pinned opset
        model = onnx.load(bundle.path / f"{graph}.onnx", load_external_data=False)
        assert {o.domain: o.version for o in model.opset_import}[""] == OPSET, graph
        ops[graph] = {node.op_type for node in model.graph.node}
    assert {"Attention", "Gelu"} <= ops["dit"], ops["dit"]  # what the pin buys: fused attention and GELU nodes


def test_every_graph_matches_pytorch_on_random_and_real_inputs(bundle):
    clip = torch.rand(len(PROMPTS), 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        real_latents = bundle.vae.encode(clip).mean.numpy()
    diffs = graph_parity(bundle.path, bundle.vae, bundle.dit, bundle.text_encoder, PROMPTS, real_latents)
    assert set(diffs) == {f"{g}/{k}" for g in ("text_encoder", "dit", "vae_decoder") for k in ("random", "real")}
    assert max(diffs.values()) < MAX_GRAPH_DIFF, diffs


def test_torch_and_onnxruntime_make_the_same_video(bundle):
    psnrs = end_to_end_parity(bundle.path, bundle.vae, bundle.dit, bundle.text_encoder, PROMPTS, [1, 2], STEPS)
    assert min(psnrs) >= MIN_PSNR_DB, psnrs


def test_decoder_upsamples_each_frame_with_a_4d_resize(bundle):
    model = onnx.shape_inference.infer_shapes(onnx.load(bundle.path / "vae_decoder.onnx", load_external_data=False))
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in model.graph.value_info}
    resizes = [node for node in model.graph.node if node.op_type == "Resize"]
    assert len(resizes) == 3 and all(ranks[node.input[0]] == 4 for node in resizes)  # tiny VAE: 4 levels


class NearestUpsample(torch.nn.Module):
    def __init__(self, scale: tuple[float, float, float]):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


@pytest.mark.parametrize("scale", [(1.0, 2.0, 2.0), (2.0, 2.0, 2.0), (1.0, 3.0, 2.0)])
def test_nearest_upsample_exports_exactly_at_other_sizes(scale, tmp_path):
    """Per-frame (time scale 1) and torchlib's own translation both give torch's values at any input size."""
    dims = {"x": {i: Dim(f"d{i}", min=2, max=16) for i in range(5)}}
    _export(NearestUpsample(scale), (torch.randn(2, 3, 4, 5, 6),), tmp_path / "up.onnx",
            {"inputs": ["x"], "outputs": ["y"]}, dims)  # fmt: skip
    session = ort.InferenceSession(str(tmp_path / "up.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 2, 5, 7, 9)
    np.testing.assert_array_equal(session.run(None, {"x": x.numpy()})[0], NearestUpsample(scale)(x).numpy())


@pytest.mark.parametrize("steps", [1, 2, 3, 9, 25, 50, 99])
def test_timestep_schedule_is_torch_linspace_bit_for_bit(steps):
    np.testing.assert_array_equal(euler_timesteps(steps), torch.linspace(1.0, 0.0, steps + 1).numpy())


def test_export_names_missing_sampler_defaults(bundle, tmp_path):
    with pytest.raises(ValueError, match="sampler_defaults lacks guidance"):
        export_bundle(bundle.vae, bundle.dit, bundle.text_encoder, tmp_path, {"steps": 2, "fps": 8, "frames": 8,
                      "height": 32, "width": 32}, {})  # fmt: skip
