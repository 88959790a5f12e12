"""Training clips on disk: safetensors shards of uint8 video plus a parquet index with captions and splits.

Layout of a shard folder:
    index.parquet            one row per clip: clip_id, caption, split, shard, row, sha256, source path, attributes
    shards/<name>.safetensors   tensor "frames": uint8 [N, T, H, W, 3]
    checksums.json           sha256 of every shard file, checked on read
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import safe_open
from safetensors.numpy import save_file

INDEX_FILE = "index.parquet"
CHECKSUMS_FILE = "checksums.json"
SHARD_DIR = "shards"


class ShardChecksumError(Exception):
    """A shard whose bytes differ from the checksum recorded when it was written."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Buffers clips and writes a shard every `clips_per_shard` clips; `close()` writes the index."""

    def __init__(self, root: Path, clips_per_shard: int):
        self.root = Path(root)
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.clips_per_shard = clips_per_shard
        self._frames: list[np.ndarray] = []
        self._rows: list[dict] = []
        self._index: list[dict] = []
        self._checksums: dict[str, str] = {}

    def add(self, frames: np.ndarray, row: dict) -> None:
        self._frames.append(frames)
        self._rows.append(row)
        if len(self._frames) == self.clips_per_shard:
            self._flush()

    def _flush(self) -> None:
        if not self._frames:
            return
        name = f"{len(self._checksums):05d}.safetensors"
        path = self.root / SHARD_DIR / name
        save_file({"frames": np.stack(self._frames)}, str(path))
        self._checksums[name] = file_sha256(path)
        self._index += [{**row, "shard": name, "row": i} for i, row in enumerate(self._rows)]
        self._frames, self._rows = [], []

    def close(self) -> pd.DataFrame:
        self._flush()
        index = pd.DataFrame(self._index)
        index.to_parquet(self.root / INDEX_FILE, index=False)
        (self.root / CHECKSUMS_FILE).write_text(json.dumps(self._checksums, indent=2, sort_keys=True))
        return index


@dataclass
class ClipShards:
    """Read side of a shard folder. `frames(shard, row)` returns one clip as uint8 [T, H, W, 3]."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)
        index_path = self.root / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"no training clips at {self.root}: {INDEX_FILE} is missing")
        self.index = pd.read_parquet(index_path)

    def verify(self) -> None:
        """Raise ShardChecksumError naming the first shard whose sha256 is not the recorded one."""
        expected = json.loads((self.root / CHECKSUMS_FILE).read_text())
        for name, digest in expected.items():
            actual = file_sha256(self.root / SHARD_DIR / name)
            if actual != digest:
                raise ShardChecksumError(f"{self.root / SHARD_DIR / name}: sha256 {actual} != recorded {digest}")

    def split(self, name: str) -> pd.DataFrame:
        return self.index[self.index["split"] == name].reset_index(drop=True)

    def frames(self, shard: str, row: int) -> np.ndarray:
        # Slicing reads one clip from disk, so memory does not grow with the shard size.
        with safe_open(str(self.root / SHARD_DIR / shard), framework="np") as f:
            return f.get_slice("frames")[row]
