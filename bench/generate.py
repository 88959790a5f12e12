"""Seconds per video: onnxruntime (the exported bundle, fp32 and int8) against PyTorch, same sampler, steps, seeds
and batch; plus the latency of the REST endpoint for one prompt, answered as arrays and as MP4.

    python bench/generate.py [--preset demo] [--steps 10] [--batch 2 8] [--repeats 3] [--rest-requests 10]
                             [--long-frames 64]

Then the conditioned modes (issue #16), one video each: image to video (the first frame given) and a long video
of --long-frames frames, window by window; PyTorch through `generate_videos(..., conditions=)` and
`videodit.conditioning.long_video` over a torch window, the same three modes.

Models are random-init at the preset's sizes (speed does not depend on the weights). PyTorch runs eager fp32,
eager under bf16 autocast and torch.compile'd (the DiT's step and the VAE's decode); each is timed after one
warm-up call, best of --repeats rounds, the runtimes interleaved within each round. Peak memory is the largest
rise of this process's RSS over its value before the call, sampled every millisecond during the runtime's timed
calls.
"""

from __future__ import annotations

import argparse
import copy
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import torch

from videodit.conditioning import FrameCondition, long_video, window_seed
from videodit.export import bundle_psnr, export_bundle, quantize_bundle, random_models
from videodit.generation import OnnxVideoGenerator
from videodit.generation.mlflow_model import BUNDLE_ARTIFACT, ENCODINGS, SIGNATURE, OnnxBundleModel
from videodit.generation.rest import invoke, serving
from videodit.models import MiniLMTextEncoder, SpacetimeDiT, VideoVAE, generate_videos
from videodit.config import load_preset

PROMPTS = ["a red circle moves left", "a large blue square moves up", "a small green triangle moves down"]
WEIGHT_STD = 0.02  # adaLN-Zero would otherwise make the DiT output zeros, which some kernels shortcut
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def peak_rss_rise(run: Callable[[], object]) -> tuple[float, int]:
    """(seconds, peak RSS rise in bytes) of one call."""
    before, peak, done = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return seconds, max(peak[0], rss_bytes()) - before


def best_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, int]]:
    """Best time and peak RSS rise of each run over `repeats` rounds; a round times every run once, so a burst of
    load from other processes on the machine hits all runtimes alike instead of one runtime's whole series."""
    working = {}
    for name, run in runs.items():
        try:
            run()  # warm-up: session/kernel initialisation and compilation are not per-video costs
            working[name] = run
        except Exception as exc:  # a torch mode this CPU or build cannot run is reported, not fatal
            print(f"{name}: failed ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    timings: dict[str, list[tuple[float, int]]] = {name: [] for name in working}
    for _ in range(repeats):
        for name, run in working.items():
            timings[name].append(peak_rss_rise(run))
    return {name: (min(s for s, _ in values), max(m for _, m in values)) for name, values in timings.items()}


def compiled(vae: VideoVAE, dit: SpacetimeDiT) -> tuple[VideoVAE, SpacetimeDiT]:
    """The VAE and DiT with the calls the sampler makes torch.compile'd: the DiT's per-step `conditioned_velocity`
    and the VAE's `decode` (compiling a module would compile only `forward`). Shallow copies: they share weights."""
    vae, dit = copy.copy(vae), copy.copy(dit)
    vae.decode = torch.compile(vae.decode, dynamic=False)
    dit.conditioned_velocity = torch.compile(dit.conditioned_velocity, dynamic=False)
    return vae, dit


def rest_latency(bundle: Path, requests: int) -> dict[str, tuple[float, float]]:
    """p50 and p95 seconds of POST /invocations of one prompt to `mlflow models serve` of the bundle's pyfunc, per
    answer encoding (nested arrays, base64 MP4), the two requests alternating."""
    model = Path(tempfile.mkdtemp(prefix="videodit-bench-pyfunc-")) / "model"
    mlflow.pyfunc.save_model(model, python_model=OnnxBundleModel(), artifacts={BUNDLE_ARTIFACT: str(bundle)},
                             signature=SIGNATURE)  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seconds: dict[str, list[float]] = {encoding: [] for encoding in ENCODINGS}
    with serving(str(model), port) as url:
        for encoding in ENCODINGS:
            invoke(url, PROMPTS[:1], encoding=encoding)  # warm-up
        for _ in range(requests):
            for encoding in ENCODINGS:
                start = time.perf_counter()
                invoke(url, PROMPTS[:1], encoding=encoding)
                seconds[encoding].append(time.perf_counter() - start)
    return {encoding: tuple(float(p) for p in np.percentile(s, [50, 95])) for encoding, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rest-requests", type=int, default=10, help="0 skips the REST endpoint")
    parser.add_argument("--long-frames", type=int, default=64, help="frames of the long video (several windows); 0 skips it")
    args = parser.parse_args()

    preset = load_preset(args.preset)
    vae, dit = random_models(preset, WEIGHT_STD)
    text_encoder = MiniLMTextEncoder()
    video_shape = (preset.frames, preset.height, preset.width)
    sampler = replace(preset.sampler, steps=args.steps)
    guidance, timesteps = sampler.guidance, sampler.timesteps()

    clip = {"fps": preset.fps, "frames": preset.frames, "height": preset.height, "width": preset.width}
    work = Path(tempfile.mkdtemp(prefix="videodit-bench-"))
    fp32 = export_bundle(vae, dit, text_encoder, work / "fp32", sampler, clip, {})
    int8 = quantize_bundle(fp32, work / "int8", PROMPTS, [0, 1])
    generators = {"fp32": OnnxVideoGenerator(fp32), "int8": OnnxVideoGenerator(int8)}
    vae_compiled, dit_compiled = compiled(vae, dit)
    print(f"preset {args.preset}: {preset.frames} frames {preset.width}x{preset.height}, {args.steps} steps, "
          f"CFG {guidance}, torch threads {torch.get_num_threads()}, onnxruntime {generators['fp32'].settings}")  # fmt: skip
    psnrs = bundle_psnr(fp32, int8, PROMPTS, [0, 1, 2])
    print(f"int8 against fp32 bundle, end to end: PSNR {min(psnrs):.1f}-{max(psnrs):.1f} dB")

    # Each torch path: the models it runs and whether under bf16 autocast.
    torch_paths = {"torch eager fp32": ((vae, dit), False), "torch eager bf16 autocast": ((vae, dit), True),
                   "torch.compile fp32": ((vae_compiled, dit_compiled), False),
                   "torch.compile bf16 autocast": ((vae_compiled, dit_compiled), True)}  # fmt: skip

    def torch_videos(models: tuple, bf16: bool, prompts: list[str], seeds: list[int], shape: tuple[int, int, int],
                     conditions: list[FrameCondition | None] | None = None) -> np.ndarray:  # fmt: skip
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return generate_videos(*models, text_encoder, prompts, seeds, timesteps, guidance, shape, conditions=conditions)

    rows = []
    for batch in args.batch:
        prompts, seeds = (PROMPTS * batch)[:batch], list(range(batch))
        runs: dict[str, Callable[[], object]] = {
            **{f"onnxruntime {name}": (lambda g=g: g.generate(prompts, seeds)) for name, g in generators.items()},
            **{name: (lambda m=m, b=b: torch_videos(m, b, prompts, seeds, video_shape)) for name, (m, b) in torch_paths.items()},
        }  # fmt: skip
        results = best_seconds(runs, args.repeats)
        fastest_torch = min(s for name, (s, _) in results.items() if name.startswith("torch"))
        for name, (seconds, peak) in results.items():
            rows.append((batch, name, seconds / batch, fastest_torch / seconds, peak / 2**20))

    # The conditioned modes (#16), one video of one prompt each, every runtime at the same steps and window.
    prompt, (frames, height, width) = PROMPTS[0], video_shape
    condition = FrameCondition(first=np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8))
    window, r = generators["fp32"].window_frames(height, width), generators["fp32"].spec.temporal_compression

    def torch_video(models: tuple, bf16: bool, n: int, given: FrameCondition | None, seed: int) -> np.ndarray:
        return torch_videos(models, bf16, [prompt], [seed], (n, height, width), [given])[0]

    def torch_long(models: tuple, bf16: bool) -> np.ndarray:
        # The window function OnnxVideoGenerator.generate_long builds, over torch: window i from window_seed(0, i).
        return long_video(lambda n, given, i: torch_video(models, bf16, n, given, window_seed(0, i)), args.long_frames, window, r)

    conditioned = {
        "image to video": {**{f"onnxruntime {name}": (lambda g=g: g.generate([prompt], [0], conditions=[condition]))
                              for name, g in generators.items()},
                           **{name: (lambda m=m, b=b: torch_video(m, b, frames, condition, 0))
                              for name, (m, b) in torch_paths.items()}},
    }  # fmt: skip
    if args.long_frames:
        conditioned[f"long video, {args.long_frames} frames"] = {
            **{f"onnxruntime {name}": (lambda g=g: g.generate_long(prompt, 0, args.long_frames)) for name, g in generators.items()},
            **{name: (lambda m=m, b=b: torch_long(m, b)) for name, (m, b) in torch_paths.items()},
        }  # fmt: skip
    mode_rows = []
    for mode, runs in conditioned.items():
        results = best_seconds(runs, args.repeats)
        fastest_torch = min(s for name, (s, _) in results.items() if name.startswith("torch"))
        mode_rows += [(mode, name, seconds, fastest_torch / seconds, peak / 2**20) for name, (seconds, peak) in results.items()]

    print(f"\n{'batch':>5}  {'runtime':<28}{'s / video':>10}{'fastest torch / it':>20}{'peak RSS rise MB':>18}")
    for batch, name, per_video, ratio, peak in rows:
        print(f"{batch:>5}  {name:<28}{per_video:>10.4f}{ratio:>19.2f}x{peak:>18.0f}")
    print(f"\n{'mode (one video)':<26}{'runtime':<28}{'s / video':>10}{'fastest torch / it':>20}{'peak RSS rise MB':>18}")
    for mode, name, seconds, ratio, peak in mode_rows:
        print(f"{mode:<26}{name:<28}{seconds:>10.4f}{ratio:>19.2f}x{peak:>18.0f}")
    if args.rest_requests:
        for encoding, (p50, p95) in rest_latency(fp32, args.rest_requests).items():
            print(f"REST (mlflow models serve, fp32 bundle), one prompt, {args.rest_requests} requests, {encoding} "
                  f"answer: p50 {p50:.3f} s, p95 {p95:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
