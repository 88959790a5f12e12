"""Prompt adherence of one trained DiT under other sampler settings: the schedule's time shift and the guidance scale,
each row the unseen split at the same seeds, in the same run. Not a test: prints one JSON line per setting, then the
unseen prompts that missed an attribute at every seed (a wording the model does not follow rather than noise), and
whether the VAE alone keeps shapes: the validation clips' shapes as read from their reconstructions.

Run after `make demo` (it reads the DiT checkpoint that `dit_model` wrote under the project's artifacts):

    python bench/sampler_sweep.py --seeds-per-prompt 4
    python bench/sampler_sweep.py --settings 1:4 3:4 1:2.5 1:6
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

from videodit.data.synthetic import SHAPES_DOMAIN
from videodit.domain import ATTRIBUTES
from videodit.evaluation.attributes import read_attributes
from videodit.evaluation.model_report import (
    ADHERENCE, EvaluationConfig, reconstruct_clips, split_adherence, validation_clips,
)  # fmt: skip
from videodit.evaluation.prompt_adherence import attributes_from_caption
from videodit.sampling import SamplerConfig
from videodit.training.dit_module import DiTModule

DEFAULT_SETTINGS = ("1:4", "2:4", "3:4", "0.5:4", "1:2.5", "1:6", "3:6")  # shift:guidance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project-dir", type=Path, default=Path("."))
    parser.add_argument("--seeds-per-prompt", type=int, default=4)
    parser.add_argument("--seed", type=int, default=100, help="first seed; the evaluation asset uses 0")
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="shift:guidance pairs")
    args = parser.parse_args()

    checkpoints = list((args.project_dir / "artifacts" / "dit_model").rglob("final.ckpt"))
    if not checkpoints:
        raise SystemExit(f"no final.ckpt under {args.project_dir / 'artifacts' / 'dit_model'}: run `make demo` first")
    checkpoint = max(checkpoints, key=lambda path: path.stat().st_mtime)  # the latest dit_model run's
    module = DiTModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {checkpoint}, "
          f"the checkpoint's sampler: {module.sampler}")  # fmt: skip
    config = EvaluationConfig(seeds_per_prompt=args.seeds_per_prompt, seed=args.seed)
    prompts = SHAPES_DOMAIN.unseen_prompts()
    always_missed: dict[str, set[str]] | None = None
    for setting in args.settings:
        shift, guidance = (float(x) for x in setting.split(":"))
        sampler = SamplerConfig(steps=module.sampler.steps, guidance=guidance, shift=shift)
        start = time.perf_counter()
        with torch.no_grad():
            scores, sample = split_adherence(module, prompts, config, sampler, SHAPES_DOMAIN)
        row = {"shift": shift, "guidance": guidance, **{name: round(scores[name], 3) for name in ADHERENCE}}
        print(json.dumps(row | {"samples": len(sample["prompts"]), "seconds": round(time.perf_counter() - start, 1)}))
        missed = defaultdict(set)  # prompt -> attributes it missed at every one of its seeds
        for attribute in ATTRIBUTES:
            for prompt in prompts:
                rows = [r for p, r in zip(sample["prompts"], sample["per_clip"]) if p == prompt]
                asked = [r for r in rows if r[f"expected_{attribute}"] is not None]
                if asked and all(r[f"expected_{attribute}"] != r[f"read_{attribute}"] for r in asked):
                    missed[prompt].add(attribute)
        always_missed = dict(missed) if always_missed is None else {
            p: a & missed.get(p, set()) for p, a in always_missed.items() if a & missed.get(p, set())
        }  # fmt: skip
    print("# missed at every seed under every setting:")
    for prompt, attributes in sorted((always_missed or {}).items()):
        print(f"#   {prompt!r}: {', '.join(sorted(attributes))}")
    real, captions = validation_clips(args.project_dir / "artifacts" / "training_clips", 64)
    recon = reconstruct_clips(module.vae.float().eval(), real)
    read_back = Counter(
        (attributes_from_caption(caption, SHAPES_DOMAIN)["shape"], read_attributes(clip, SHAPES_DOMAIN).shape)
        for caption, clip in zip(captions, recon)
    )  # fmt: skip
    print("# VAE reconstructions of the validation clips, shape asked -> read:", dict(sorted(read_back.items())))


if __name__ == "__main__":
    main()
