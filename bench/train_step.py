"""Training throughput of SpacetimeDiT against diffusers' LatteTransformer3DModel at equal size, same run.

Both models get the same width, heads, patching, token count, caption tokens and the same number of transformer
blocks (a Latte "layer" is a spatial + a temporal block, so Latte gets num_layers = depth / 2), and the same
training step: rectified-flow loss, backward, fused AdamW. Steps alternate between the two models and each model's
time is the median of its steps, so other load on the machine hits both alike. Prints tokens/s, samples/s, the
ratio ours/Latte, and MFU on CUDA (model FLOPs per step, counted by torch's FlopCounterMode, / step time /
--peak-flops).

    python bench/train_step.py --preset demo --precision fp32 bf16 --compile
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
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = load_preset(args.preset)
    cfg = preset.dit
    latent_shape = VideoVAE(preset.vae).latent_shape(preset.frames, preset.height, preset.width)
    batch_size = args.batch or preset.dit_train.batch_size
    precisions = args.precision or (["bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    torch.manual_seed(0)
    mask = torch.ones(batch_size, 32, dtype=torch.bool, device=device)
    mask[:, 12:] = False  # realistic padded captions
    batch = (
        torch.randn(batch_size, *latent_shape, device=device),
        torch.randn(batch_size, 32, cfg.text_dim, device=device),
        mask,
    )
    pt, ph, pw = cfg.patch_size
    tokens = latent_shape[1] // pt * (latent_shape[2] // ph) * (latent_shape[3] // pw)
    builders = {
        "ours (SpacetimeDiT)": lambda: SpacetimeDiT(cfg),
        "diffusers Latte": lambda: LatteVelocity(
            cfg.hidden_size, cfg.depth, cfg.num_heads, ph, latent_shape, cfg.text_dim
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


if __name__ == "__main__":
    main()
