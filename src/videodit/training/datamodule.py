"""Lightning data modules: clips for the VAE, cached latents + caption embeddings for the DiT.

Training reads an endless, deterministic stream of batches. Batch k of the stream is a pure function of
(seed, k): data epoch k // batches_per_epoch, shuffled with a permutation seeded by (seed, epoch). The data
module saves k in the checkpoint (`state_dict`), and a resumed run starts the stream at exactly that batch
instead of silently replaying the start of the epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import lightning as L
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, Sampler

from videodit.data.shards import ClipShards
from videodit.models.vae import to_video_tensor
from videodit.training.latents import verified_latents


class ResumableBatchSampler(Sampler):
    """Endless stream of batches of `(item index, as_image, item seed)`; this rank's share of each global batch.

    `as_image` marks joint image+video training: a fraction `image_fraction` of batches uses single frames.
    """

    def __init__(
        self, n_items: int, batch_size: int, seed: int, image_fraction: float = 0.0,
        rank: int = 0, world_size: int = 1, start_batch: int = 0,
    ):  # fmt: skip
        self.global_batch = batch_size * world_size
        if n_items < self.global_batch:
            raise ValueError(f"{n_items} training items cannot fill one batch of {batch_size} x {world_size} ranks")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.image_fraction, self.rank, self.start_batch = image_fraction, rank, start_batch
        self.batches_per_epoch = n_items // self.global_batch  # the remainder of each epoch is dropped

    def batch(self, k: int) -> list[tuple[int, bool, int]]:
        epoch, offset = divmod(k, self.batches_per_epoch)
        order = torch.randperm(self.n_items, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        start = offset * self.global_batch + self.rank * self.batch_size
        rng = np.random.default_rng([self.seed, k])  # the same on every rank: all ranks agree on image vs video
        as_image = bool(rng.random() < self.image_fraction)
        item_seeds = rng.integers(0, 2**31, size=self.global_batch)[self.rank * self.batch_size :][: self.batch_size]
        indices = order[start : start + self.batch_size].tolist()
        return [(i, as_image, int(s)) for i, s in zip(indices, item_seeds)]

    def __iter__(self):
        k = self.start_batch
        while True:
            yield self.batch(k)
            k += 1


class ResumableDataModule(L.LightningDataModule):
    """Shared by both data modules: the resumable train stream and a plain sequential validation loader.

    Subclasses build `self.train_data` and `self.val_data` in `setup()`.
    """

    train_data: Dataset
    val_data: Dataset | None

    def __init__(self, batch_size: int, seed: int, image_fraction: float, num_workers: int):
        super().__init__()
        self.batch_size, self.seed = batch_size, seed
        self.image_fraction, self.num_workers = image_fraction, num_workers
        self.start_batch = 0

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = ResumableBatchSampler(
            len(self.train_data), self.batch_size, self.seed, self.image_fraction, rank, world, self.start_batch
        )
        return DataLoader(self.train_data, batch_sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_data is None or len(self.val_data) == 0:
            return []
        return DataLoader(self.val_data, batch_size=self.batch_size, num_workers=self.num_workers)

    def state_dict(self) -> dict:
        # Every optimiser step consumed accumulate_grad_batches batches of the stream; checkpoints fall on steps.
        consumed = self.trainer.global_step * self.trainer.accumulate_grad_batches if self.trainer else 0
        return {"batches_consumed": consumed, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"checkpoint was trained with data seed {state['seed']}, this run uses {self.seed}")
        self.start_batch = state["batches_consumed"]


class ClipDataset(Dataset):
    """Curated clips as VAE inputs, optionally cut to random windows/crops (fully convolutional: any size trains)."""

    def __init__(self, shards: ClipShards, split: str, clip_frames: int = 0, crop_size: int = 0):
        self.shards, self.rows = shards, shards.split(split)
        self.clip_frames, self.crop_size = clip_frames, crop_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> dict:
        index, as_image, seed = key if isinstance(key, tuple) else (key, False, 0)
        row = self.rows.iloc[index]
        frames = self.shards.frames(row["shard"], int(row["row"]))
        rng = np.random.default_rng(seed)
        length = 1 if as_image else min(self.clip_frames or len(frames), len(frames))
        if isinstance(key, tuple):  # training: random window and crop; validation: the whole clip
            start = rng.integers(0, len(frames) - length + 1)
            frames = frames[start : start + length]
            if self.crop_size:
                top = rng.integers(0, frames.shape[1] - self.crop_size + 1)
                left = rng.integers(0, frames.shape[2] - self.crop_size + 1)
                frames = frames[:, top : top + self.crop_size, left : left + self.crop_size]
        return {"video": to_video_tensor(frames), "index": index}


class ClipDataModule(ResumableDataModule):
    """Train/val clips of a shard folder (split from its index) for the VAE."""

    def __init__(
        self, shards_root: Path, batch_size: int, seed: int = 0, image_fraction: float = 0.0,
        clip_frames: int = 0, crop_size: int = 0, num_workers: int = 0,
    ):  # fmt: skip
        super().__init__(batch_size, seed, image_fraction, num_workers)
        self.shards_root, self.clip_frames, self.crop_size = Path(shards_root), clip_frames, crop_size

    def setup(self, stage: str | None = None) -> None:
        shards = ClipShards(self.shards_root)
        shards.verify()  # here, not first in a loader worker, which would re-raise the error without its file
        self.train_data = ClipDataset(shards, "train", self.clip_frames, self.crop_size)
        self.val_data = ClipDataset(shards, "val")


class LatentDataset(Dataset):
    """One split written by `encode_latents`: normalised latents, caption embeddings and the empty-caption embedding.

    With probability `caption_dropout` an item's caption is swapped for the empty caption, which teaches the DiT
    the unconditional velocity that classifier-free guidance needs.
    """

    def __init__(self, path: Path, caption_dropout: float = 0.0):
        path = verified_latents(path)
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        self.latent_shift, self.latent_scale = float(meta["latent_shift"]), float(meta["latent_scale"])
        self.captions = json.loads(meta["captions"])
        self.latents = (tensors["latents"] - self.latent_shift) * self.latent_scale
        self.text, self.text_mask = tensors["text"], tensors["text_mask"]
        self.null_text, self.null_mask = tensors["null_text"][0], tensors["null_mask"][0]
        self.caption_dropout = caption_dropout

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, key) -> dict:
        index, as_image, seed = key if isinstance(key, tuple) else (key, False, 0)
        # The VAE is causal, so latent frame 0 is exactly the latent of the first frame as an image.
        latents = self.latents[index, :, :1] if as_image else self.latents[index]
        dropped = isinstance(key, tuple) and np.random.default_rng(seed).random() < self.caption_dropout
        text, mask = (self.null_text, self.null_mask) if dropped else (self.text[index], self.text_mask[index])
        return {"latents": latents, "text": text, "text_mask": mask, "index": index}


def first_latents(latents_dir: Path, n: int) -> tuple[list[str], np.ndarray]:
    """The first `n` validation latents (train latents when there is no val split) as the DiT sees them
    (normalised), with their captions: real inputs for the export's parity check."""
    root = Path(latents_dir)
    split = LatentDataset(root / "val.safetensors" if (root / "val.safetensors").is_file() else root / "train.safetensors")
    return split.captions[:n], split.latents[:n].numpy()


class LatentDataModule(ResumableDataModule):
    """Train/val latents from a folder written by `videodit.training.latents.encode_latents`."""

    def __init__(
        self, latents_dir: Path, batch_size: int, seed: int = 0, image_fraction: float = 0.0,
        caption_dropout: float = 0.1, num_workers: int = 0,
    ):  # fmt: skip
        super().__init__(batch_size, seed, image_fraction, num_workers)
        self.latents_dir, self.caption_dropout = Path(latents_dir), caption_dropout

    def setup(self, stage: str | None = None) -> None:
        self.train_data = LatentDataset(self.latents_dir / "train.safetensors", self.caption_dropout)
        val_path = self.latents_dir / "val.safetensors"
        self.val_data = LatentDataset(val_path) if val_path.is_file() else None
