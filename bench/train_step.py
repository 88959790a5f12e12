"""Training throughput of SpacetimeDiT against diffusers' LatteTransformer3DModel at equal size, same run.

Both models get the same width, heads, patching, token count, caption tokens and the same number of transformer
blocks (a Latte "layer" is a spatial + a temporal block, so Latte gets num_layers = depth / 2), and the same
training step: rectified-flow loss, backward, fused AdamW. Steps alternate between the two models and each model's
time is the median of its steps, so other load on the machine hits both alike. Prints tokens/s, samples/s, the
ratio ours/Latte, and MFU on CUDA (model FLOPs per step, counted by torch's FlopCounterMode, / step time /
--peak-flops).

With --mixed-buckets it also times our DiT on the step sequence the bucket batch sampler draws from the preset's
bucket table (a bucket per step, ∝ its weight, each batch as many items as fit the default bucket's token budget)
against steps of the default bucket alone, interleaved, and prints the tokens/s of each and their ratio.

    python bench/train_step.py --preset demo --precision fp32 bf16 --compile
    python bench/train_step.py --preset demo --precision fp32 --mixed-buckets
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from videodit.models.dit import SpacetimeDiT
from videodit.models.vae import VideoVAE
from videodit.config import load_preset
from videodit.training.datamodule import BatchGroup, BucketBatchSampler

CAPTION_TOKENS, CAPTION_WORDS = 32, 12  # every caption padded to 32 tokens, 12 of them real


class LatteVelocity(torch.nn.Module):
    """LatteTransformer3DModel behind our DiT's call signature: (x, t in [0, 1], text, text_mask) -> velocity."""

    def __init__(self, hidden: int, depth: int, heads: int, patch: int, latent_shape, text_dim: int):
        super().__init__()
        from diffusers import LatteTransformer3DModel

        if depth % 2:
            raise ValueError(f"depth {depth} must be even: Latte layers come in spatial+temporal pairs")
        channels, frames, height, width = latent_shape
        if height != width:
            raise ValueError("LatteTransformer3DModel needs square latents (one sample_size)")
        self.model = LatteTransformer3DModel(
            num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=channels,
            out_channels=channels, num_layers=depth // 2, cross_attention_dim=hidden, attention_bias=True,
            sample_size=height, patch_size=patch, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
            norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=text_dim,
            video_length=frames,
        )  # fmt: skip

    def forward(self, x, t, text, text_mask):
        # Latte hands the mask to every per-frame spatial block unchanged, so it must already be an additive
        # bias with one row per (sample, frame).
        bias = (~text_mask).to(text.dtype) * -10000.0
        bias = bias.repeat_interleave(x.shape[2], dim=0)[:, None, :]
        return self.model(x, t * 1000, text, bias, return_dict=False)[0]


def random_batch(n: int, latent_shape, text_dim: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents [n, *latent_shape], caption tokens and their mask (realistic padded captions)."""
    mask = torch.ones(n, CAPTION_TOKENS, dtype=torch.bool, device=device)
    mask[:, CAPTION_WORDS:] = False
    return torch.randn(n, *latent_shape, device=device), torch.randn(n, CAPTION_TOKENS, text_dim, device=device), mask


def patch_tokens(latent_shape, patch_size) -> int:
    """The DiT's sequence length for one item of `latent_shape`."""
    (_, frames, height, width), (pt, ph, pw) = latent_shape, patch_size
    return frames // pt * (height // ph) * (width // pw)


def train_step(model, optimizer, x, text, mask, dtype):
    noise = torch.randn_like(x)
    t = torch.sigmoid(torch.randn(x.shape[0], device=x.device))
    t_ = t.view(-1, 1, 1, 1, 1)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        velocity = model((1 - t_) * x + t_ * noise, t, text, mask)
    assert velocity.shape == x.shape, f"{type(model).__name__} returned {tuple(velocity.shape)} for {tuple(x.shape)}"
    loss = F.mse_loss(velocity.float(), noise - x)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(models: dict, batch, precision, steps, warmup, device) -> dict[str, float]:
    """Median seconds per training step of each model. Steps alternate between the models, so load from other
    processes on the machine slows both alike and the ratio stays meaningful."""
    x, text, mask = batch
    # Fused AdamW for both: our trainer uses it, and it is the peer's fastest optimizer too.
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True) for name, model in models.items()}
    for name, model in models.items():
        for _ in range(warmup):  # includes compilation when the model is compiled
            train_step(model, optimizers[name], x, text, mask, precision)
    times = {name: [] for name in models}
    for _ in range(steps):
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_step(model, optimizers[name], x, text, mask, precision)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def step_flops(model, batch) -> int:
    x, text, mask = batch
    with FlopCounterMode(display=False) as counter:
        model(x, torch.rand(x.shape[0], device=x.device), text, mask).float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def mixed_bucket_rows(preset, batch_size: int, precision: str, steps: int, warmup: int, device) -> list[str]:
    """Our DiT on the sampler's mixed-bucket step sequence against the default bucket alone, steps interleaved.

    Every bucket holds the same number of items, so the sampler draws buckets ∝ their table weights."""
    vae = VideoVAE(preset.vae)
    shapes = {b.name: vae.latent_shape(b.frames, b.height, b.width) for b in preset.buckets}
    default = preset.default_bucket.name
    names = [default, *(name for name in shapes if name != default)]  # the sampler's budget is its first group's
    weights = {b.name: b.weight for b in preset.buckets}
    groups = [BatchGroup(name, 100_000, shapes[name][1] * shapes[name][2] * shapes[name][3], weights[name]) for name in names]
    sampler = BucketBatchSampler(groups, batch_size, seed=0)
    torch.manual_seed(0)
    model = SpacetimeDiT(preset.dit).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batches = {g.name: random_batch(n, shapes[g.name], preset.dit.text_dim, device) for g, n in sampler.groups}

    def timed(name: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(model, optimizer, *batches[name], precision)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in batches:  # every shape once, so no first-call cost lands in a timed step
        for _ in range(warmup):
            timed(name)
    seconds, tokens, drawn = {"single": [], "mixed": []}, {"single": [], "mixed": []}, []
    for k in range(steps):
        mixed = sampler.batch(k)[0][0]
        drawn.append(mixed)
        for kind, name in (("single", default), ("mixed", mixed)):
            seconds[kind].append(timed(name))
            tokens[kind].append(len(batches[name][0]) * patch_tokens(shapes[name], preset.dit.patch_size))
    rate = {kind: sum(tokens[kind]) / sum(seconds[kind]) for kind in seconds}
    mix = ", ".join(f"{name} ×{drawn.count(name)}" for name in names if name in drawn)
    return [
        f"| {default} alone (batch {batch_size}) | {precision} | {steps} | {sum(seconds['single']) / steps:.3f} | {rate['single']:,.0f} |",
        f"| mixed buckets ({mix}) | {precision} | {steps} | {sum(seconds['mixed']) / steps:.3f} | {rate['mixed']:,.0f} |",
        f"| **ratio mixed / single** | {precision} | | | **{rate['mixed'] / rate['single']:.2f}x** |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=["tiny", "demo", "base"])
    parser.add_argument("--batch", type=int, default=None, help="default: the preset's DiT batch size")
    parser.add_argument("--precision", nargs="+", default=None, choices=["fp32", "bf16"],
                        help="default: bf16 on CUDA, fp32 and bf16 on CPU")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-flops", type=float, default=989e12, help="bf16 peak for MFU (H100 SXM: 989e12)")
    parser.add_argument("--mixed-buckets", action="store_true",
                        help="also time our DiT on the bucket sampler's mixed-bucket steps against the default bucket alone")  # fmt: skip
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = load_preset(args.preset)
    cfg = preset.dit
    latent_shape = VideoVAE(preset.vae).latent_shape(preset.frames, preset.height, preset.width)
    batch_size = args.batch or preset.dit_train.batch_size
    precisions = args.precision or (["bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    torch.manual_seed(0)
    batch = random_batch(batch_size, latent_shape, cfg.text_dim, device)
    tokens = patch_tokens(latent_shape, cfg.patch_size)
    builders = {
        "ours (SpacetimeDiT)": lambda: SpacetimeDiT(cfg),
        "diffusers Latte": lambda: LatteVelocity(
            cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.patch_size[1], latent_shape, cfg.text_dim
        ),
    }
    print(f"device {device}, preset {args.preset}: width {cfg.hidden_size}, {cfg.depth} blocks, {cfg.num_heads} heads, "
          f"patch {cfg.patch_size}, latents {latent_shape}, {tokens} tokens/sample, batch {batch_size}")  # fmt: skip
    rows = []
    for precision in precisions:
        for compiled in [False, True] if args.compile else [False]:
            models, stats = {}, {}
            for name, build in builders.items():
                torch.manual_seed(0)
                model = build().to(device).train()
                stats[name] = (sum(p.numel() for p in model.parameters()), step_flops(model, batch) * 1.0)
                models[name] = torch.compile(model) if compiled else model
            times = measure(models, batch, precision, args.steps, args.warmup, device)
            for name, seconds in times.items():
                params, flops = stats[name]
                mfu = f"{flops / seconds / args.peak_flops:.1%}" if device.type == "cuda" else "-"
                rows.append((name, precision, "yes" if compiled else "no", params, flops, seconds, mfu))
            ours, latte = times.values()
            rows.append(("ratio ours / Latte", precision, "yes" if compiled else "no", None, None, latte / ours, None))
    print("\n| model | precision | compiled | params | GFLOP/step | step s | tokens/s | samples/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, precision, compiled, params, flops, seconds, mfu in rows:
        if params is None:
            print(f"| **{name}** | {precision} | {compiled} | | | | **{seconds:.2f}x** | | |")
        else:
            print(f"| {name} | {precision} | {compiled} | {params / 1e6:.2f}M | {flops / 1e9:.2f} | {seconds:.3f} | "
                  f"{batch_size * tokens / seconds:,.0f} | {batch_size / seconds:.1f} | {mfu} |")  # fmt: skip
    if args.mixed_buckets:
        print("\n| steps of our DiT | precision | steps | s / step | tokens/s |")
        print("|---|---|---|---|---|")
        for precision in precisions:
            print("\n".join(mixed_bucket_rows(preset, batch_size, precision, args.steps, args.warmup, device)))


if __name__ == "__main__":
    main()
