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
MAX_SHARD_BYTES = 64 << 20  # memory while curating is about one shard, whatever the clip size


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

    def __init__(self, root: Path, clips_per_shard: int, max_shard_bytes: int = MAX_SHARD_BYTES):
        self.root = Path(root)
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.clips_per_shard, self.max_shard_bytes = clips_per_shard, max_shard_bytes
        self._buffer: np.ndarray | None = None  # one preallocated shard: clips are copied in once, never stacked
        self._rows: list[dict] = []
        self._index: list[dict] = []
        self._checksums: dict[str, str] = {}

    def add(self, frames: np.ndarray, row: dict) -> None:
        if self._buffer is None:
            per_shard = min(self.clips_per_shard, max(1, self.max_shard_bytes // frames.nbytes))
            self._buffer = np.empty((per_shard, *frames.shape), dtype=frames.dtype)
        if frames.shape != self._buffer.shape[1:]:
            raise ValueError(f"clip {row.get('path', '?')} has shape {frames.shape}, the shard holds {self._buffer.shape[1:]}")
        self._buffer[len(self._rows)] = frames
        self._rows.append(row)
        if len(self._rows) == len(self._buffer):
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        name = f"{len(self._checksums):05d}.safetensors"
        path = self.root / SHARD_DIR / name
        save_file({"frames": self._buffer[: len(self._rows)]}, str(path))
        self._checksums[name] = file_sha256(path)
        self._index += [{**row, "shard": name, "row": i} for i, row in enumerate(self._rows)]
        self._rows = []

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
