"""Model library: shapes over durations/resolutions/aspect ratios, causality, overfitting, sampler, text encoder."""

import math

import pytest
import torch

from videodit.models.dit import DiTConfig, SpacetimeDiT
from videodit.models.rectified_flow import rectified_flow_loss, sample_euler, sample_timesteps
from videodit.models.text_encoder import MiniLMTextEncoder
from videodit.models.vae import VAEConfig, VideoVAE, channels_to_frames, frames_to_channels
from videodit.sampling import timestep_schedule
from videodit.config import ProjectConfig, load_preset


STEPS = 100
FALLS_BY = 2  # a tiny DiT fitting one batch of images: the mean of the last 10 losses vs the first 10


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VideoVAE(load_preset("tiny").vae).eval()


def tiny_dit(patch_size=(1, 2, 2)) -> SpacetimeDiT:
    torch.manual_seed(0)
    return SpacetimeDiT(DiTConfig(hidden_size=64, depth=2, num_heads=4, patch_size=patch_size, text_dim=16))


def text_batch(b: int, length: int = 6, dim: int = 16):
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[:, length // 2 :] = False
    return torch.randn(b, length, dim), mask


@pytest.mark.parametrize(
    "frames, height, width, latent_frames",
    [(1, 32, 32, 1), (8, 32, 32, 3), (16, 32, 64, 5), (17, 64, 32, 5), (5, 40, 24, 2)],
)
def test_vae_shapes_any_frame_count(vae, frames, height, width, latent_frames):
    x = torch.rand(2, 3, frames, height, width) * 2 - 1
    with torch.no_grad():
        recon, posterior = vae(x)
    assert posterior.mean.shape == (2, 4, latent_frames, height // 8, width // 8)
    assert vae.latent_shape(frames, height, width) == tuple(posterior.mean.shape[1:])
    assert recon.shape == x.shape


def test_vae_rejects_sizes_off_the_spatial_grid(vae):
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(torch.zeros(1, 3, 4, 30, 32))


def test_vae_is_causal_an_image_encodes_like_the_first_frame(vae):
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        whole = vae.encode(video).mean
        first = vae.encode(video[:, :, :1]).mean
        prefix = vae.encode(video[:, :, :5]).mean
    torch.testing.assert_close(first[:, :, 0], whole[:, :, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(prefix, whole[:, :, :2], atol=1e-5, rtol=1e-4)


def test_time_is_compressed_by_stacking_frames_into_channels_and_back():
    video = torch.arange(3 * 9 * 2 * 2, dtype=torch.float32).view(1, 3, 9, 2, 2)
    stacked = frames_to_channels(video, 4)
    assert stacked.shape == (1, 12, 3, 2, 2)
    # Latent frame 0 holds frame 0 alone (four copies); latent frame 2 holds frames 5..8, channel-major.
    torch.testing.assert_close(stacked[0, :, 0].view(3, 4, 2, 2), video[0, :, :1].expand(3, 4, 2, 2))
    torch.testing.assert_close(stacked[0, :, 2].view(3, 4, 2, 2), video[0, :, 5:9])
    torch.testing.assert_close(channels_to_frames(stacked, 4), video)


@pytest.mark.parametrize("r, latent_frames", [(1, 9), (2, 5), (8, 2)])
def test_every_temporal_compression_round_trips(r, latent_frames):
    video = torch.rand(1, 3, 9, 4, 4)
    stacked = frames_to_channels(video, r)
    assert stacked.shape == (1, 3 * r, latent_frames, 4, 4)
    torch.testing.assert_close(channels_to_frames(stacked, r), video)
    vae = VideoVAE(VAEConfig(channels=(8, 8), spatial_compression=2, temporal_compression=r, blocks_per_level=0))
    assert vae(video)[0].shape == video.shape


@pytest.mark.parametrize("shape", [(1, 4, 4), (5, 4, 4), (3, 4, 8), (2, 8, 2), (1, 6, 10)])
def test_dit_any_duration_resolution_and_aspect(shape):
    dit = tiny_dit()
    x = torch.randn(2, 4, *shape)
    text, mask = text_batch(2)
    out = dit(x, torch.rand(2), text, mask)
    assert out.shape == x.shape


def test_dit_rejects_latents_off_the_patch_grid():
    with pytest.raises(ValueError, match="patch_size"):
        tiny_dit()(torch.randn(1, 4, 2, 5, 4), torch.rand(1), *text_batch(1))


def test_dit_masked_text_tokens_are_ignored():
    dit = tiny_dit()
    for p in dit.parameters():  # adaLN-Zero starts at zero output; perturb so the text path matters
        p.data += 0.05 * torch.randn_like(p)
    x, t = torch.randn(1, 4, 2, 4, 4), torch.rand(1)
    text, mask = text_batch(1)
    changed = text.clone()
    changed[:, 3:] = 100.0  # only padding positions change
    torch.testing.assert_close(dit(x, t, text, mask), dit(x, t, changed, mask))
    torch.testing.assert_close(dit(x, t, text, mask), dit(x, t, text[:, :3], mask[:, :3]))  # or are cut off
    changed[:, 0] = 100.0
    assert not torch.allclose(dit(x, t, text, mask), dit(x, t, changed, mask))


def test_dit_activation_checkpointing_gives_the_same_gradients():
    x, t = torch.randn(2, 4, 3, 4, 4), torch.rand(2)
    text, mask = text_batch(2)
    grads = []
    for checkpointing in (False, True):
        dit = tiny_dit()
        dit.final_layer.linear.weight.data.normal_()
        dit.config.gradient_checkpointing = checkpointing
        dit(x, t, text, mask).square().mean().backward()
        grads.append(dit.x_embedder.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_dit_overfits_a_single_batch(one_torch_thread):
    dit = tiny_dit()
    x, t = torch.randn(4, 4, 3, 4, 4), torch.rand(4)
    text, mask = text_batch(4)
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(dit.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        loss = (dit(x, t, text, mask) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20


def test_rectified_flow_loss_starts_at_the_path_length_and_falls_with_training(one_torch_thread):
    dit = tiny_dit()
    torch.manual_seed(0)
    x = torch.randn(4, 4, 1, 4, 4)  # T = 1: an image
    text, mask = text_batch(4)
    # adaLN-Zero: the untrained DiT predicts zero velocity, so the loss is E|noise - x|^2 = 1 + E|x|^2.
    assert rectified_flow_loss(dit, x, text, mask).item() == pytest.approx(1 + x.square().mean().item(), rel=0.25)
    opt = torch.optim.AdamW(dit.parameters(), lr=3e-3)
    losses = []
    for _ in range(STEPS):
        loss = rectified_flow_loss(dit, x, text, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert all(map(math.isfinite, losses)) and last < first / FALLS_BY, (first, last)


def test_logit_normal_timesteps():
    t = sample_timesteps(20_000, generator=torch.Generator().manual_seed(0))
    assert 0 < t.min() and t.max() < 1
    assert t.mean().item() == pytest.approx(0.5, abs=0.01)
    assert ((t > 0.25) & (t < 0.75)).float().mean().item() > 0.6  # mass concentrates mid-path


class StraightPathOracle:
    """The exact velocity along x_t = (1-t) a + t noise towards `a`: towards_text[i] for a captioned row i, towards_null
    for rows whose caption is the all-zero null caption. It has the DiT's sampling interface: `caption_condition`
    once (the caption itself stands in for the pooled embedding), then `conditioned_velocity` per step."""

    def __init__(self, towards_text, towards_null):
        self.towards_text, self.towards_null = towards_text, towards_null

    def caption_condition(self, text, mask):
        return text, text[None]

    def conditioned_velocity(self, x, t, text, text_kv, mask):
        is_null = (text == 0).all(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        repeats = x.shape[0] // len(self.towards_text)
        target = torch.where(is_null, self.towards_null, self.towards_text.repeat(repeats, 1, 1, 1, 1))
        return (x - target) / t[:, None, :, None, None]  # t per latent frame


@pytest.mark.parametrize("guidance", [1.0, 3.0, 0.0])
def test_euler_sampler_follows_straight_paths_exactly_and_guides_by_the_cfg_formula(guidance):
    """With v_c = (x - a)/t and v_u = (x - b)/t, the guided v_u + w (v_c - v_u) is the straight path towards
    b + w (a - b); Euler steps follow straight paths exactly, so sampling lands there for any schedule."""
    a, b = torch.randn(2, 4, 3, 4, 4), torch.randn(1, 4, 3, 4, 4)
    text, mask = text_batch(2)
    null_text, null_mask = torch.zeros(1, *text.shape[1:]), mask[:1]
    out = sample_euler(StraightPathOracle(a, b), torch.randn_like(a), text, mask, null_text, null_mask,
                       timestep_schedule(5, shift=3.0), guidance)  # fmt: skip
    torch.testing.assert_close(out, b + guidance * (a - b), atol=1e-4, rtol=1e-4)


def test_euler_sampler_is_deterministic_with_a_seed(one_torch_thread):
    dit = tiny_dit()
    for p in dit.parameters():
        p.data += 0.05 * torch.randn_like(p)
    text, mask = text_batch(2)

    def run(seed):
        noise = torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
        return sample_euler(dit, noise, text, mask, text[:1], mask[:1], timestep_schedule(4), guidance=2.0)

    torch.testing.assert_close(run(7), run(7), atol=0, rtol=0)
    assert not torch.allclose(run(7), run(8))


def test_text_encoder_loads_and_embeds_with_the_network_blocked(no_network, monkeypatch):
    import socket

    import huggingface_hub.constants

    with pytest.raises(no_network):  # the guard is real: the hub's host cannot even be resolved
        socket.create_connection(("huggingface.co", 443), timeout=1)
    # Offline mode off, so a load that went to the hub would try to connect (and hit the guard), not skip it.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    encoder = MiniLMTextEncoder(max_tokens=32)
    captions = ["a small red circle moves left", "a small red circle moving to the left", "a large blue square moves up",
                ""]  # fmt: skip
    tokens, mask = encoder.encode(captions)
    assert encoder.dim == 384 and tokens.shape == (4, 32, 384) and mask.shape == (4, 32) and mask.dtype == torch.bool
    assert torch.isfinite(tokens).all()
    assert mask[3].sum() == 2  # the unconditional caption is just [CLS] [SEP]
    assert mask[0].sum() > 5
    pooled = [tokens[i][mask[i]].mean(0) for i in range(4)]
    similar, different = (torch.cosine_similarity(pooled[0], pooled[i], dim=0).item() for i in (1, 2))
    assert similar > different + 0.1, (similar, different)  # trained weights: a paraphrase lands nearer
    assert not torch.allclose(tokens[0], tokens[2])


def test_configs_round_trip_through_json():
    import json

    for name in ("tiny", "demo", "base"):
        preset = load_preset(name)
        assert ProjectConfig.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset
    with pytest.raises(ValueError, match="levels"):
        VAEConfig(channels=(8, 16), spatial_compression=8)
    with pytest.raises(ValueError, match="unknown preset"):
        load_preset("huge")
