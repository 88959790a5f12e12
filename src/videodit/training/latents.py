"""Encode curated clips to VAE latents and captions to token embeddings once, so DiT training never runs the VAE.

Output folder: one file per split and clip bucket, `train.safetensors` / `val.safetensors` for the default bucket
(what evaluation and export read) and `train-<bucket>.safetensors` / `val-<bucket>.safetensors` for the others (a
split without clips has no file), each with tensors
    latents   float [N, C, t, h, w]   posterior means (unnormalised)
    text      float [N, L, D]         caption token embeddings;  text_mask bool [N, L]
    null_text float [1, L, D]         the empty caption (classifier-free guidance);  null_mask bool [1, L]
and metadata bucket, clip_ids, captions (JSON lists) and latent_shift / latent_scale: the mean and 1/std of every
bucket's train latents, which map latents to roughly unit variance, the scale the rectified-flow noise assumes;
`checksums.json` holds the sha256 of every file, checked when it is read. Image buckets (T=1) have no file: the
DiT reads them as latent frame 0 of the clips of their size (`datamodule.py`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from videodit.data.shards import ClipShards, file_sha256, read_checksums, verify_file, write_checksums
from videodit.models.text_encoder import TextEncoder, default_text_encoder
from videodit.models.vae import VideoVAE, to_video_tensor


@torch.no_grad()
def encode_latents(
    shards_root: Path,
    vae: VideoVAE,
    out_dir: Path,
    text_encoder: TextEncoder | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> Path:
    """Write latents and caption embeddings of every train/val clip of every bucket under `out_dir`; returns `out_dir`.

    The VAE encodes on `device` (default: CUDA when available, else the CPU), on a copy so the caller's VAE stays
    where it is; the latents are stored from the CPU either way.
    """
    shards, out_dir = ClipShards(shards_root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.safetensors"):  # not an earlier run's split or bucket
        stale.unlink()
    text_encoder = text_encoder or default_text_encoder()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    vae = copy.deepcopy(vae).to(device).eval()
    null_text, null_mask = text_encoder.encode([""])
    encoded = {}
    for split in ("train", "val"):
        for bucket, rows in shards.bucket_splits(split).items():
            if rows.empty:  # a dataset too small for a validation split still trains
                continue
            latents = []
            for start in range(0, len(rows), batch_size):  # one bucket: one clip shape per batch
                chunk = rows.iloc[start : start + batch_size]
                frames = [shards.frames(r.shard, int(r.row)) for r in chunk.itertuples()]
                video = torch.stack([to_video_tensor(f) for f in frames]).to(device)
                latents.append(vae.encode(video).mean.float().cpu())
            text, mask = text_encoder.encode(rows["caption"].tolist())
            name = split if bucket == shards.default_bucket else f"{split}-{bucket}"
            encoded[name] = (bucket, rows, torch.cat(latents), text.cpu(), mask.cpu())
    train = torch.cat([latents.flatten() for name, (_, _, latents, _, _) in encoded.items() if name.startswith("train")])
    shift, scale = train.mean().item(), 1.0 / train.std().item()
    checksums = {}
    for name, (bucket, rows, latents, text, mask) in encoded.items():
        path = out_dir / f"{name}.safetensors"
        save_file(
            {"latents": latents.contiguous(), "text": text.contiguous(), "text_mask": mask.contiguous(),
             "null_text": null_text.cpu().contiguous(), "null_mask": null_mask.cpu().contiguous()},
            str(path),
            metadata={"bucket": bucket or "", "clip_ids": json.dumps(rows["clip_id"].tolist()),
                      "captions": json.dumps(rows["caption"].tolist()), "latent_shift": repr(shift), "latent_scale": repr(scale)},
        )  # fmt: skip
        checksums[path.name] = file_sha256(path)
    write_checksums(out_dir, checksums)
    return out_dir


def latent_files(latents_dir: Path, split: str) -> list[Path]:
    """The files of `split`, one per bucket, the default bucket's first."""
    root = Path(latents_dir)
    return [p for p in (root / f"{split}.safetensors", *sorted(root.glob(f"{split}-*.safetensors"))) if p.is_file()]


def verified_latents(path: Path) -> Path:
    """A file written by `encode_latents`, once it matches the sha256 recorded next to it (else ShardChecksumError)."""
    path = Path(path)
    return verify_file(path, read_checksums(path.parent))


def latent_stats(latents_dir: Path) -> tuple[float, float]:
    """(latent_shift, latent_scale) recorded by encode_latents."""
    with safe_open(str(verified_latents(Path(latents_dir) / "train.safetensors")), framework="pt") as f:
        meta = f.metadata()
    return float(meta["latent_shift"]), float(meta["latent_scale"])
