"""Seconds per video: onnxruntime (the exported bundle) against PyTorch, same sampler, steps, seeds and batch.

    python bench/generate.py [--preset demo] [--steps 10] [--batch 2] [--repeats 5]

Models are random-init at the preset's sizes (speed does not depend on the weights). PyTorch runs eager fp32,
eager under bf16 autocast and torch.compile'd; each is timed after one warm-up call, best of --repeats rounds,
the runtimes interleaved within each round.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from videodit.export import export_bundle, random_models
from videodit.generation import OnnxVideoGenerator
from videodit.models import MiniLMTextEncoder, generate_videos
from videodit.config import load_preset

PROMPTS = ["a red circle moves left", "a large blue square moves up", "a small green triangle moves down"]
WEIGHT_STD = 0.02  # adaLN-Zero would otherwise make the DiT output zeros, which some kernels shortcut


def best_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best time of each run over `repeats` rounds; a round times every run once, so a burst of load from other
    processes on the machine hits all runtimes alike instead of one runtime's whole series."""
    working = {}
    for name, run in runs.items():
        try:
            run()  # warm-up: session/kernel initialisation and compilation are not per-video costs
            working[name] = run
        except Exception as exc:  # a torch mode this CPU or build cannot run is reported, not fatal
            print(f"{name}: failed ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    timings: dict[str, list[float]] = {name: [] for name in working}
    for _ in range(repeats):
        for name, run in working.items():
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    preset = load_preset(args.preset)
    vae, dit = random_models(preset, WEIGHT_STD)
    text_encoder = MiniLMTextEncoder()
    prompts = (PROMPTS * args.batch)[: args.batch]
    seeds = list(range(args.batch))
    video_shape = (preset.frames, preset.height, preset.width)
    sampler = replace(preset.sampler, steps=args.steps)
    guidance, timesteps = sampler.guidance, sampler.timesteps()

    clip = {"fps": preset.fps, "frames": preset.frames, "height": preset.height, "width": preset.width}
    bundle = export_bundle(vae, dit, text_encoder, tempfile.mkdtemp(prefix="videodit-bench-"), sampler, clip, {})
    generator = OnnxVideoGenerator(bundle)

    def torch_run(model: torch.nn.Module) -> Callable[[], object]:
        return lambda: generate_videos(vae, model, text_encoder, prompts, seeds, timesteps, guidance, video_shape)

    def bf16_run() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return generate_videos(vae, dit, text_encoder, prompts, seeds, timesteps, guidance, video_shape)

    runs: dict[str, Callable[[], object]] = {
        "onnxruntime (CPU EP)": lambda: generator.generate(prompts, seeds),
        "torch eager fp32": torch_run(dit),
        "torch eager bf16 autocast": bf16_run,
        "torch.compile fp32": torch_run(torch.compile(dit, dynamic=False)),
    }
    seconds = {name: value / args.batch for name, value in best_seconds(runs, args.repeats).items()}

    onnx_seconds = seconds["onnxruntime (CPU EP)"]
    print(f"\npreset {args.preset}: {preset.frames} frames {preset.width}x{preset.height}, {args.steps} steps, "
          f"CFG {guidance}, batch {args.batch}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'runtime':<28}{'s / video':>10}{'onnxruntime speed-up':>22}")
    for name, value in seconds.items():
        print(f"{name:<28}{value:>10.3f}{value / onnx_seconds:>21.2f}x")


if __name__ == "__main__":
    main()
