"""Training clips on disk: safetensors shards of uint8 video plus a parquet index with captions and splits.

Layout of a shard folder:
    index.parquet            one row per clip: clip_id, caption, split, shard, row, sha256, source path, attributes,
                             and (training clips) bucket, frames, height, width, crop
    shards/<name>.safetensors   tensor "frames": uint8 [N, T, H, W, 3], one clip shape (bucket) per shard
    checksums.json           sha256 of every shard file, checked (once per process) when a shard is first read
    buckets.json             (training clips) the default bucket and the clips of each bucket
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

from videodit.files import replaced_atomically, write_text_atomically

INDEX_FILE = "index.parquet"
CHECKSUMS_FILE = "checksums.json"
BUCKETS_FILE = "buckets.json"
SHARD_DIR = "shards"
MAX_SHARD_BYTES = 64 << 20  # memory while curating is about one shard, whatever the clip size


class ShardChecksumError(Exception):
    """A shard whose bytes differ from the checksum recorded when it was written; `path` is the shard."""

    def __init__(self, path: Path, recorded: str | None, actual: str):
        super().__init__(f"{path} does not match its recorded sha256 (recorded {recorded or 'none'}, read {actual}): "
                         "it was changed or damaged after it was written")  # fmt: skip
        self.path = path


# (path, size, mtime in ns, sha256) of every file verified in this process: a file is hashed once, again if it changes.
_verified: set[tuple[str, int, int, str | None]] = set()


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(root: Path) -> dict[str, str]:
    """The sha256 of each file `write_checksums` recorded in `root`, by file name."""
    path = Path(root) / CHECKSUMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the files next to it cannot be verified")
    return json.loads(path.read_text())


def write_checksums(root: Path, checksums: dict[str, str]) -> None:
    write_text_atomically(Path(root) / CHECKSUMS_FILE, json.dumps(checksums, indent=2, sort_keys=True))


def verify_file(path: Path, checksums: dict[str, str]) -> Path:
    """`path` once its sha256 is `checksums[path.name]`, else ShardChecksumError naming it."""
    stat = path.stat()
    recorded = checksums.get(path.name)
    key = (str(path.absolute()), stat.st_size, stat.st_mtime_ns, recorded)
    if key not in _verified:
        actual = file_sha256(path)
        if actual != recorded:
            raise ShardChecksumError(path, recorded, actual)
        _verified.add(key)
    return path


class ShardWriter:
    """Buffers clips by shape and writes a shard of one shape every `clips_per_shard` clips; `close()` writes the index."""

    def __init__(self, root: Path, clips_per_shard: int, max_shard_bytes: int = MAX_SHARD_BYTES):
        self.root = Path(root)
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.clips_per_shard, self.max_shard_bytes = clips_per_shard, max_shard_bytes
        # Per clip shape, one preallocated shard and its rows: clips are copied in once, never stacked.
        self._buffers: dict[tuple, tuple[np.ndarray, list[dict]]] = {}
        self._index: list[dict] = []
        self._checksums: dict[str, str] = {}

    def add(self, frames: np.ndarray, row: dict) -> None:
        if frames.shape not in self._buffers:
            per_shard = min(self.clips_per_shard, max(1, self.max_shard_bytes // frames.nbytes))
            self._buffers[frames.shape] = (np.empty((per_shard, *frames.shape), dtype=frames.dtype), [])
        buffer, rows = self._buffers[frames.shape]
        buffer[len(rows)] = frames
        rows.append(row)
        if len(rows) == len(buffer):
            self._flush(frames.shape)

    def _flush(self, shape: tuple) -> None:
        buffer, rows = self._buffers[shape]
        if not rows:
            return
        name = f"{len(self._checksums):05d}.safetensors"
        path = self.root / SHARD_DIR / name
        save_file({"frames": buffer[: len(rows)]}, str(path))
        self._checksums[name] = file_sha256(path)
        self._index += [{**row, "shard": name, "row": i} for i, row in enumerate(rows)]
        rows.clear()

    def close(self) -> pd.DataFrame:
        for shape in self._buffers:
            self._flush(shape)
        index = pd.DataFrame(self._index)
        with replaced_atomically(self.root / INDEX_FILE) as tmp:
            index.to_parquet(tmp, index=False)
        write_checksums(self.root, self._checksums)
        return index


@dataclass
class ClipShards:
    """Read side of a shard folder. `frames(shard, row)` returns one clip as uint8 [T, H, W, 3].

    `split(name)` holds the default bucket's clips where the folder records one (`buckets.json`): the one shape
    evaluation reads; `split(name, bucket)` another bucket's, and `bucket_splits(name)` every bucket's (training).

    Every shard is checked against its recorded sha256 before its first read: a changed byte is a
    ShardChecksumError naming the shard, never a clip trained on or an unnamed safetensors error.
    """

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)
        index_path = self.root / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"no training clips at {self.root}: {INDEX_FILE} is missing")
        self.index = pd.read_parquet(index_path)
        self.checksums = read_checksums(self.root)
        buckets = self.root / BUCKETS_FILE
        self.default_bucket = json.loads(buckets.read_text())["default"] if buckets.is_file() else None

    def shard_path(self, shard: str) -> Path:
        return verify_file(self.root / SHARD_DIR / shard, self.checksums)

    def verify(self) -> None:
        """Raise ShardChecksumError naming the first shard whose sha256 is not the recorded one."""
        for name in self.checksums:
            self.shard_path(name)

    def split(self, name: str, bucket: str | None = None) -> pd.DataFrame:
        rows = self.index["split"] == name
        if bucket or self.default_bucket:
            rows &= self.index["bucket"] == (bucket or self.default_bucket)
        return self.index[rows].reset_index(drop=True)

    def bucket_splits(self, name: str) -> dict[str | None, pd.DataFrame]:
        """Every bucket's clips of split `name`, the default bucket first; one entry, None, without buckets."""
        if self.default_bucket is None:
            return {None: self.split(name)}
        rows = self.index[self.index["split"] == name]
        names = sorted(set(rows["bucket"]), key=lambda b: (b != self.default_bucket, b))
        return {b: rows[rows["bucket"] == b].reset_index(drop=True) for b in names}

    def frames(self, shard: str, row: int) -> np.ndarray:
        # Slicing reads one clip from disk, so memory does not grow with the shard size.
        with safe_open(str(self.shard_path(shard)), framework="np") as f:
            return f.get_slice("frames")[row]
