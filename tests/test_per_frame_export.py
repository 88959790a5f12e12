"""The VAE exported as an image network over frames (temporal_kernel 1): the same values as the 5-D model, in
torch and through onnxruntime at other sizes than the example's, its GroupNorms as InstanceNormalization; a VAE
whose convs look across frames is refused."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.export import Dim

from videodit.export.onnx_export import VAEDecoderGraph, VAEEncoderGraph, _export
from videodit.export.per_frame import PerFrame
from videodit.models import VideoVAE
from videodit.models.vae import VAEConfig

CONFIG = dict(channels=(8, 16, 16), spatial_compression=4, temporal_compression=2, blocks_per_level=1)


def random_vae(temporal_kernel: int) -> VideoVAE:
    torch.manual_seed(0)
    vae = VideoVAE(VAEConfig(**CONFIG, temporal_kernel=temporal_kernel)).eval()
    with torch.no_grad():
        for parameter in vae.parameters():  # past taps start at zero: random ones would hide a frame mix-up
            parameter.normal_(0.0, 0.3)
    return vae


def test_per_frame_layers_compute_what_the_5d_layers_compute():
    vae = random_vae(temporal_kernel=1)
    z = torch.randn(2, 4, 3, 4, 6)
    video = torch.rand(2, 3, 5, 16, 24) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(VAEDecoderGraph(vae, 0.25, 2.0)(z), vae.decoder(z / 2.0 + 0.25), rtol=1e-5, atol=1e-5)
        mean = vae.encoder(video)[:, :4]
        torch.testing.assert_close(VAEEncoderGraph(vae, 0.25, 2.0)(video), (mean - 0.25) * 2.0, rtol=1e-5, atol=1e-5)


def test_a_vae_that_looks_across_frames_is_not_run_per_frame():
    vae = random_vae(temporal_kernel=3)
    assert VAEDecoderGraph(vae).per_frame is None and VAEEncoderGraph(vae).per_frame is None
    with pytest.raises(ValueError, match="3 time taps"):
        PerFrame(vae.decoder.layers)


def test_the_per_frame_decoder_exports_4d_and_matches_the_model_at_other_sizes(tmp_path):
    vae = random_vae(temporal_kernel=1)
    graph, path = VAEDecoderGraph(vae), tmp_path / "decoder.onnx"
    dims = {"latents": {0: Dim("batch", min=1, max=8), 2: Dim("t", min=1, max=16), 3: Dim("h", min=1, max=16),
                        4: Dim("w", min=1, max=16)}}  # fmt: skip
    _export(graph, (torch.randn(2, 4, 3, 4, 6),), path, {"inputs": ["latents"], "outputs": ["video"]}, dims)
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*model.graph.value_info, *model.graph.input]}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    initializers = {tensor.name for tensor in model.graph.initializer}  # weights as constants, as quantizers need
    assert convs and all(ranks[node.input[0]] == 4 and node.input[1] in initializers for node in convs)
    # GroupNorm as InstanceNormalization, one onnxruntime CPU kernel (export/translations.py), not the function
    # body of ONNX's GroupNormalization.
    ops = {node.op_type for node in model.graph.node}
    assert "InstanceNormalization" in ops and "GroupNormalization" not in ops, ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 4, 1, 4, 4), (3, 4, 5, 6, 3)]:  # an image, and a clip of another batch, length and shape
        z = torch.randn(shape)
        with torch.no_grad():
            expected = vae.decoder(z).numpy()
        np.testing.assert_allclose(session.run(None, {"latents": z.numpy()})[0], expected, rtol=1e-4, atol=1e-4)
