"""Lightning data modules: clips for the VAE, cached latents + caption embeddings for the DiT, in every bucket.

Training reads an endless, deterministic stream of batches, each from one bucket of the table (one shape, so no
padding). Batch k of the stream is a pure function of (seed, k) (`BucketBatchSampler`). The data module saves k in
the checkpoint (`state_dict`), and a resumed run starts the stream at exactly that batch instead of silently
replaying the start of the epoch. Validation reads the default bucket, the size evaluation and export use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import lightning as L
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, Sampler

from videodit.data.config import Bucket
from videodit.data.shards import ClipShards
from videodit.models.vae import to_video_tensor
from videodit.training.latents import latent_files, verified_latents


@dataclass(frozen=True)
class BatchGroup:
    """One bucket as the sampler sees it: `size` items of `tokens` each (what an item costs a step), and its table weight."""

    name: str | None
    size: int
    tokens: int
    weight: float = 1.0


class BucketBatchSampler(Sampler):
    """Endless stream of batches of `(bucket, item index, item seed)`, each from one bucket; this rank's share of it.

    The token budget of a step is `batch_size` items of the first group (the default bucket): every bucket's batch
    holds as many items as fit in it (at least one, at most what its data fills), so steps cost about the same.
    Batch k draws its bucket with probability ∝ items × weight from a generator seeded with (seed, k), the same on
    every rank, so all ranks run the same shape at each step. Bucket b's batch at step k is slot k mod E_b of its
    permutation for epoch k // E_b (E_b = its batches per epoch): no item twice within E_b steps, every item equally
    often in the long run, and nothing that depends on earlier steps, so a resumed stream is the uninterrupted one.
    """

    def __init__(
        self, groups: list[BatchGroup], batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start_batch: int = 0,
    ):  # fmt: skip
        default = groups[0]
        if default.size < batch_size * world_size:
            raise ValueError(f"{default.size} training items cannot fill one batch of {batch_size} x {world_size} ranks")
        budget = batch_size * default.tokens
        sizes = [min(max(1, budget // g.tokens), g.size // world_size) for g in groups]
        self.groups = [(g, n) for g, n in zip(groups, sizes) if n > 0]  # a bucket with fewer items than ranks waits
        shares = np.array([g.size * g.weight for g, _ in self.groups])
        self.probabilities = shares / shares.sum()
        self.budget, self.seed, self.rank, self.world_size, self.start_batch = budget, seed, rank, world_size, start_batch

    def plan(self) -> dict[str, float]:
        """Per bucket: its probability, batch size and the share of the token budget a batch fills; and the padding."""
        metrics = {"data/padding_fraction": 0.0}  # one bucket, one shape per batch: nothing is padded
        for (group, n), p in zip(self.groups, self.probabilities):
            name = group.name or "default"
            metrics |= {f"data/{name}/probability": float(p), f"data/{name}/batch_size": n,
                        f"data/{name}/budget_fill": n * group.tokens / self.budget}  # fmt: skip
        return metrics

    def batch(self, k: int) -> list[tuple[str | None, int, int]]:
        rng = np.random.default_rng([self.seed, k])
        g = int(rng.choice(len(self.groups), p=self.probabilities))
        group, n = self.groups[g]
        global_batch = n * self.world_size
        epoch, slot = divmod(k, group.size // global_batch)  # the remainder of each epoch is dropped
        order = np.random.default_rng([self.seed, g, epoch]).permutation(group.size)
        start = slot * global_batch + self.rank * n
        item_seeds = rng.integers(0, 2**31, size=global_batch)[self.rank * n :][:n]
        return [(group.name, int(i), int(s)) for i, s in zip(order[start : start + n], item_seeds)]

    def __iter__(self):
        k = self.start_batch
        while True:
            yield self.batch(k)
            k += 1


class BucketDataset(Dataset):
    """A split's buckets, each a dataset of one item shape, the default bucket first: training keys are
    (bucket, index, seed), validation keys plain indices into the default bucket."""

    def __init__(self, buckets: dict[str | None, Dataset], table: tuple[Bucket, ...]):
        self.buckets, self.default = buckets, next(iter(buckets.values()))
        weights = {b.name: b.weight for b in table}
        self.groups = [BatchGroup(name, len(d), d.tokens, weights.get(name, 1.0)) for name, d in buckets.items()]

    def __len__(self) -> int:
        return len(self.default)

    def __getitem__(self, key) -> dict:
        if isinstance(key, tuple):
            name, index, seed = key
            return self.buckets[name][index, seed]
        return self.default[key]


def with_image_buckets(videos: dict[str | None, Dataset], table: tuple[Bucket, ...], images: Callable) -> dict:
    """`videos` (clip buckets by name) and each image bucket (T=1) of `table` that has clips of its size: `images` of
    those clip buckets' datasets. Curation renders no T=1 clips; an image is a frame of a clip of the same size."""
    sizes = {b.name: (b.height, b.width) for b in table}
    buckets = dict(videos)
    for bucket in table:
        same_size = [d for name, d in videos.items() if sizes.get(name) == (bucket.height, bucket.width)]
        if bucket.frames == 1 and same_size:
            buckets[bucket.name] = images(same_size)
    return buckets


class ResumableDataModule(L.LightningDataModule):
    """Shared by both data modules: the resumable bucketed train stream and a plain sequential validation loader.

    Subclasses build `self.train_data` (a BucketDataset) and `self.val_data` in `setup()`; `buckets` is the table
    (weights, image buckets); without one every bucket of the data weighs the same.
    """

    train_data: BucketDataset
    val_data: Dataset | None

    def __init__(self, batch_size: int, seed: int, buckets: tuple[Bucket, ...], num_workers: int):
        super().__init__()
        self.batch_size, self.seed, self.buckets, self.num_workers = batch_size, seed, tuple(buckets), num_workers
        self.start_batch = 0

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = BucketBatchSampler(self.train_data.groups, self.batch_size, self.seed, rank, world, self.start_batch)
        self.plan = sampler.plan()
        for logger in self.trainer.loggers if self.trainer else ():
            logger.log_metrics(self.plan, step=0)
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
    """Curated clips of one bucket as VAE inputs; in training (key (index, seed)) cut to a random window and crop
    (fully convolutional: any size trains), or a random single frame when `as_image`; in validation whole clips."""

    def __init__(self, shards: ClipShards, rows: pd.DataFrame, as_image: bool = False, clip_frames: int = 0, crop_size: int = 0):
        self.shards, self.rows, self.as_image = shards, rows, as_image
        self.clip_frames, self.crop_size = clip_frames, crop_size

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def tokens(self) -> int:
        """Pixels of a training item: what it costs a VAE step."""
        return int(np.prod(self[0, 0]["video"].shape[1:]))

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        row = self.rows.iloc[index]
        frames = self.shards.frames(row["shard"], int(row["row"]))
        if seed is not None:  # training: random window and crop; validation: the whole clip
            rng = np.random.default_rng(seed)
            length = 1 if self.as_image else min(self.clip_frames or len(frames), len(frames))
            start = rng.integers(0, len(frames) - length + 1)
            frames = frames[start : start + length]
            if self.crop_size:  # a bucket narrower than the crop keeps its side
                h, w = min(self.crop_size, frames.shape[1]), min(self.crop_size, frames.shape[2])
                top, left = rng.integers(0, frames.shape[1] - h + 1), rng.integers(0, frames.shape[2] - w + 1)
                frames = frames[:, top : top + h, left : left + w]
        return {"video": to_video_tensor(frames), "index": index}


class ClipDataModule(ResumableDataModule):
    """Train/val clips of a shard folder (split from its index) for the VAE, every bucket of `buckets` in training."""

    def __init__(
        self, shards_root: Path, batch_size: int, seed: int = 0, buckets: tuple[Bucket, ...] = (),
        clip_frames: int = 0, crop_size: int = 0, num_workers: int = 0,
    ):  # fmt: skip
        super().__init__(batch_size, seed, buckets, num_workers)
        self.shards_root, self.clip_frames, self.crop_size = Path(shards_root), clip_frames, crop_size

    def setup(self, stage: str | None = None) -> None:
        shards = ClipShards(self.shards_root)
        shards.verify()  # here, not first in a loader worker, which would re-raise the error without its file

        def clips(rows: pd.DataFrame, as_image: bool = False) -> ClipDataset:
            return ClipDataset(shards, rows, as_image, self.clip_frames, self.crop_size)

        def images(same_size: list[ClipDataset]) -> ClipDataset:
            return clips(pd.concat([d.rows for d in same_size], ignore_index=True), as_image=True)

        videos = {name: clips(rows) for name, rows in shards.bucket_splits("train").items()}
        self.train_data = BucketDataset(with_image_buckets(videos, self.buckets, images), self.buckets)
        self.val_data = ClipDataset(shards, shards.split("val"))


class LatentDataset(Dataset):
    """One bucket of a split written by `encode_latents`: normalised latents, caption embeddings and the
    empty-caption embedding.

    With probability `caption_dropout` a training item's caption is swapped for the empty caption, which teaches
    the DiT the unconditional velocity that classifier-free guidance needs.
    """

    def __init__(self, latents, text, text_mask, null_text, null_mask, captions: list[str], caption_dropout: float = 0.0):
        self.latents, self.text, self.text_mask, self.captions = latents, text, text_mask, captions
        self.null_text, self.null_mask, self.caption_dropout = null_text, null_mask, caption_dropout

    @classmethod
    def load(cls, path: Path, caption_dropout: float = 0.0) -> LatentDataset:
        path = verified_latents(path)
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        latents = (tensors["latents"] - float(meta["latent_shift"])) * float(meta["latent_scale"])
        return cls(latents, tensors["text"], tensors["text_mask"], tensors["null_text"][0], tensors["null_mask"][0],
                   json.loads(meta["captions"]), caption_dropout)  # fmt: skip

    @classmethod
    def images(cls, same_size: list[LatentDataset]) -> LatentDataset:
        """The image bucket of these clip buckets' size: the VAE is causal, so latent frame 0 is exactly the latent
        of a clip's first frame as an image."""
        first = same_size[0]
        return cls(
            torch.cat([d.latents[:, :, :1] for d in same_size]), torch.cat([d.text for d in same_size]),
            torch.cat([d.text_mask for d in same_size]), first.null_text, first.null_mask,
            [c for d in same_size for c in d.captions], first.caption_dropout,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def tokens(self) -> int:
        """Latent positions of an item: the DiT's sequence length up to its (fixed) patch size."""
        return self.latents[0, 0].numel()

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        dropped = seed is not None and np.random.default_rng(seed).random() < self.caption_dropout
        text, mask = (self.null_text, self.null_mask) if dropped else (self.text[index], self.text_mask[index])
        return {"latents": self.latents[index], "text": text, "text_mask": mask, "index": index}


def first_latents(latents_dir: Path, n: int) -> tuple[list[str], np.ndarray]:
    """The first `n` validation latents of the default bucket (train latents when there is no val split) as the
    DiT sees them (normalised), with their captions: real inputs for the export's parity check."""
    root = Path(latents_dir)
    split = LatentDataset.load(root / "val.safetensors" if (root / "val.safetensors").is_file() else root / "train.safetensors")
    return split.captions[:n], split.latents[:n].numpy()


class LatentDataModule(ResumableDataModule):
    """Train/val latents from a folder written by `videodit.training.latents.encode_latents`, every bucket of
    `buckets` in training."""

    def __init__(
        self, latents_dir: Path, batch_size: int, seed: int = 0, buckets: tuple[Bucket, ...] = (),
        caption_dropout: float = 0.1, num_workers: int = 0,
    ):  # fmt: skip
        super().__init__(batch_size, seed, buckets, num_workers)
        self.latents_dir, self.caption_dropout = Path(latents_dir), caption_dropout

    def setup(self, stage: str | None = None) -> None:
        videos = {}
        for path in latent_files(self.latents_dir, "train"):
            with safe_open(str(verified_latents(path)), framework="pt") as f:
                bucket = f.metadata().get("bucket") or None
            videos[bucket] = LatentDataset.load(path, self.caption_dropout)
        self.train_data = BucketDataset(with_image_buckets(videos, self.buckets, LatentDataset.images), self.buckets)
        val_path = self.latents_dir / "val.safetensors"
        self.val_data = LatentDataset.load(val_path) if val_path.is_file() else None
