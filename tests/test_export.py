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

from tiny_bundle import SAMPLER, tiny_bundle, tiny_int8_bundle
from videodit.export import bundle_psnr, end_to_end_parity, export_bundle, graph_parity
from videodit.export.onnx_export import OPSET, _export
from videodit.generation import OnnxVideoGenerator
from videodit.models import generate_videos, rectified_flow
from videodit.sampling import SamplerConfig, timestep_schedule

PROMPTS = ["a red circle moves left", "a large blue square moves up"]
MAX_GRAPH_DIFF = 1e-3
MIN_PSNR_DB = 40.0
BUCKETS = [(9, 32, 32), (5, 32, 32), (9, 24, 48), (5, 24, 48), (9, 48, 24), (5, 48, 24), (1, 32, 32)]
MIN_INT8_PSNR_DB = 30.0  # against the fp32 bundle; the demo size measures ~57 dB (bench/README.md)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def test_bundle_holds_graphs_tokenizer_and_spec(bundle):
    names = {p.name for p in bundle.path.iterdir()}
    assert {"text_encoder.onnx", "condition.onnx", "dit.onnx", "vae_encoder.onnx", "vae_decoder.onnx", "tokenizer",
            "bundle.json"} <= names  # fmt: skip
    assert (bundle.path / "tokenizer" / "tokenizer.json").is_file()
    spec = json.loads((bundle.path / "bundle.json").read_text())
    assert spec["sampler"] == {"steps": 3, "guidance": 4.0, "shift": 1.0, "timesteps": SAMPLER.timesteps().tolist()}
    assert spec["clip"]["latent_shape"] == [4, 3, 4, 4]
    assert spec["text"]["max_tokens"] == bundle.text_encoder.max_tokens
    assert spec["limits"]["dynamic_latent_thw"] is True
    # Every bucket of the tiny preset, its T=1 image bucket too, which the limits cover.
    assert [(b["frames"], b["height"], b["width"]) for b in spec["buckets"]] == BUCKETS
    assert spec["limits"]["frames"] == {"minimum": 1, "maximum": 45, "multiple": 4}  # 1 + 4k, 1 to 4 × 3 latent frames
    for name in ("height", "width"):
        assert spec["limits"][name] == {"minimum": 8, "maximum": 4 * 48, "multiple": 8}
    assert spec["source_versions"] == {"model_version": "tiny-test"}
    assert spec["versions"]["onnxruntime"] and spec["opset"] == OPSET and spec["precision"] == "fp32"
    ops, nodes = {}, {}
    for graph in ("text_encoder", "condition", "dit", "vae_encoder", "vae_decoder"):  # all at the pinned opset
        model = onnx.load(bundle.path / f"{graph}.onnx", load_external_data=False)
        assert {o.domain: o.version for o in model.opset_import}[""] == OPSET, graph
        nodes[graph] = list(model.graph.node)
        ops[graph] = {node.op_type for node in model.graph.node}
    assert "Gelu" in ops["dit"], ops["dit"]  # what the pin buys: fused GELU nodes
    # Attention is onnxruntime's fused MultiHeadAttention, self and cross in every block, with no head transposes
    # feeding or reading it (export/translations.py).
    dit_nodes = nodes["dit"]
    attention = [node for node in dit_nodes if node.op_type == "MultiHeadAttention"]
    assert len(attention) == 2 * bundle.dit.config.depth and "Attention" not in ops["dit"]
    transposed = {name for node in dit_nodes if node.op_type == "Transpose" for name in (*node.input, *node.output)}
    assert not transposed & {name for node in attention for name in (*node.input, *node.output)}
    # The caption's MLP is in the once-per-video graph, not in the step: the step's only GELU is the blocks' MLP.
    assert "Gelu" in ops["condition"]


def test_every_graph_matches_pytorch_on_random_and_real_inputs(bundle):
    clip = torch.rand(len(PROMPTS), 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        real_latents = bundle.vae.encode(clip).mean.numpy()
    diffs = graph_parity(bundle.path, bundle.vae, bundle.dit, bundle.text_encoder, PROMPTS, real_latents)
    buckets = [f"random/{f}x{h}x{w}" for f, h, w in BUCKETS]
    expected = {f"{g}/{k}" for g in ("text_encoder", "condition") for k in ("random", "real")}
    expected |= {f"{g}/{k}" for g in ("dit", "vae_encoder", "vae_decoder") for k in (*buckets, "real")}
    assert set(diffs) == expected
    assert max(diffs.values()) < MAX_GRAPH_DIFF, diffs


def test_torch_and_onnxruntime_make_the_same_video_in_every_bucket(bundle):
    psnrs = end_to_end_parity(bundle.path, bundle.vae, bundle.dit, bundle.text_encoder, PROMPTS, [1, 2])
    assert list(psnrs) == [f"{f}x{h}x{w}" for f, h, w in BUCKETS]
    assert min(min(p) for p in psnrs.values()) >= MIN_PSNR_DB, psnrs
    psnrs = end_to_end_parity(bundle.path, bundle.vae, bundle.dit, bundle.text_encoder, PROMPTS, [1, 2], steps=2)
    assert min(min(p) for p in psnrs.values()) >= MIN_PSNR_DB, psnrs


def test_an_int8_bundle_quantizes_the_dit_step_and_the_decoder_and_stays_close_to_fp32(bundle, tmp_path_factory):
    int8 = tiny_int8_bundle(tmp_path_factory)
    assert json.loads((int8 / "bundle.json").read_text())["precision"] == "int8"
    assert OnnxVideoGenerator(int8).spec.precision == "int8"
    ops = {node.op_type for node in onnx.load(int8 / "dit.onnx").graph.node}
    assert "MatMulInteger" in ops and "MatMul" not in ops, ops  # every MatMul of the step, the rest fp32
    decoder = onnx.load(int8 / "vae_decoder.onnx").graph.node
    # Every convolution of the decoder reads int8 weights and a calibrated uint8 input (QDQ around each Conv).
    quantized = {n.output[0] for n in decoder if n.op_type == "DequantizeLinear"}
    convs = [n for n in decoder if n.op_type == "Conv"]
    assert convs and all(n.input[0] in quantized and n.input[1] in quantized for n in convs)
    calibration = json.loads((int8 / "bundle.json").read_text())["quantization"]["vae_decoder.onnx"]["calibration"]
    assert (calibration["buckets"], calibration["latents"]) == (7, 2 * 1 * 7)  # 2 prompts, 1 seed, every bucket
    fp32_bytes = sum(p.stat().st_size for p in bundle.path.glob("dit.onnx*"))
    assert sum(p.stat().st_size for p in int8.glob("dit.onnx*")) < fp32_bytes / 2
    assert not (int8 / "dit.onnx.data").exists()  # the fp32 weights are not carried along
    psnrs = bundle_psnr(bundle.path, int8, PROMPTS, [1, 2])
    assert min(psnrs) >= MIN_INT8_PSNR_DB, psnrs


def spy_on_noise(monkeypatch, owner, name: str) -> list[np.ndarray]:
    """The noise (second argument) of every call of `owner.name`, which still runs."""
    seen, original = [], getattr(owner, name)

    def spy(*args):
        seen.append(np.asarray(args[1]))
        return original(*args)

    monkeypatch.setattr(owner, name, spy)
    return seen


def test_a_prompt_gets_its_noise_and_video_alone_or_in_a_batch_in_torch_and_onnxruntime(bundle, monkeypatch):
    torch_noise = spy_on_noise(monkeypatch, rectified_flow, "sample_euler")
    onnx_noise = spy_on_noise(monkeypatch, OnnxVideoGenerator, "_denoise")
    generator = OnnxVideoGenerator(bundle.path, providers=["CPUExecutionProvider"])

    def both(prompts: list[str], seeds: list[int]) -> dict[str, np.ndarray]:
        in_torch = generate_videos(bundle.vae, bundle.dit, bundle.text_encoder, prompts, seeds, SAMPLER.timesteps(),
                                   SAMPLER.guidance, (9, 32, 32), 0.25, 2.0)  # fmt: skip
        return {"torch": in_torch.astype(np.int16), "onnx": np.stack(generator.generate(prompts, seeds)).astype(np.int16)}

    batched, alone = both(PROMPTS, [1, 2]), both(PROMPTS[1:], [2])
    # What each path drew: [2, ...] for the batch, then [1, ...] for the second prompt alone.
    np.testing.assert_array_equal(torch_noise[0], onnx_noise[0])
    for noise in (torch_noise, onnx_noise):
        np.testing.assert_array_equal(noise[1][0], noise[0][1])
    for runtime in ("torch", "onnx"):
        # The same noise and timesteps; what may remain is the rounding of kernels that depend on the batch size.
        assert np.abs(alone[runtime][0] - batched[runtime][1]).max() <= 1, runtime


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
    np.testing.assert_array_equal(timestep_schedule(steps), torch.linspace(1.0, 0.0, steps + 1).numpy())
    np.testing.assert_array_equal(SamplerConfig(steps).timesteps(), timestep_schedule(steps, shift=1.0))


@pytest.mark.parametrize("shift", [0.5, 3.0, 12.0])
def test_a_shifted_schedule_runs_monotonically_from_noise_to_data(shift):
    linear, shifted = timestep_schedule(25), SamplerConfig(25, shift=shift).timesteps()
    assert shifted.dtype == np.float32 and len(shifted) == 26 and (shifted[0], shifted[-1]) == (1.0, 0.0)
    assert np.all(np.diff(shifted) < 0)
    # shift > 1 keeps more of the steps at high noise (t' >= t), shift < 1 at low noise.
    assert np.all((shifted[1:-1] > linear[1:-1]) == (shift > 1))
    np.testing.assert_allclose(shifted, shift * linear / (1 + (shift - 1) * linear), rtol=1e-6)


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"steps": 0}, "steps=0: must be a whole number >= 1"), ({"steps": 2.5}, "steps=2.5"),
     ({"shift": 0.0}, "shift=0.0: must be a finite number > 0"), ({"shift": -1.0}, "shift=-1.0"),
     ({"guidance": float("nan")}, "guidance=nan: must be a finite number")],
)  # fmt: skip
def test_sampler_config_refuses_what_it_cannot_sample(settings, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**settings)


def test_export_names_missing_clip_defaults(bundle, tmp_path):
    with pytest.raises(ValueError, match="clip lacks fps"):
        export_bundle(bundle.vae, bundle.dit, bundle.text_encoder, tmp_path, SAMPLER, {"frames": 8, "height": 32,
                      "width": 32}, {})  # fmt: skip
