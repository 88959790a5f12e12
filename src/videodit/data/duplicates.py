"""Near-duplicates: the same content re-encoded, exported twice or converted, which sha256 cannot see.

A clip's content signature is SIGNATURE_FRAMES frames, evenly spaced over the clip, each shrunk to
SIGNATURE_SIDE² RGB cells (block means of the probe's analysis frames). A re-encode
changes a cell by a few levels; other content — even the same shape on a path a pixel away — changes
some cells by far more. Two clips are near-duplicates when at most a small fraction of their cells differ
by more than a delta (both in `ValidationConfig`): measured on the built-in shapes, faithful re-encodes
(x264, VP9) change 0% of cells, clips of the same shape, colour and direction on other paths ≥ 1.2%.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIGNATURE_FRAMES = 8
SIGNATURE_SIDE = 16


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """uint8 [SIDE, SIDE, 3]: block means of an RGB frame [H, W, 3]."""
    value = rgb.astype(np.float32)
    height, width = value.shape[:2]
    rows = np.minimum(np.arange(SIGNATURE_SIDE) * height // SIGNATURE_SIDE, height - 1)
    cols = np.minimum(np.arange(SIGNATURE_SIDE) * width // SIGNATURE_SIDE, width - 1)
    sums = np.add.reduceat(np.add.reduceat(value, rows, axis=0), cols, axis=1)
    counts = (np.diff(np.append(rows, height))[:, None] * np.diff(np.append(cols, width))[None, :])[..., None]
    return np.round(sums / np.maximum(counts, 1)).astype(np.uint8)


def content_signature(thumbnails: list[np.ndarray]) -> bytes:
    """SIGNATURE_FRAMES thumbnails evenly spaced over the clip, as bytes (a parquet binary cell)."""
    picks = np.linspace(0, len(thumbnails) - 1, SIGNATURE_FRAMES).round().astype(int)
    return np.stack([thumbnails[i] for i in picks]).tobytes()


def changed_fraction(a: np.ndarray, b: np.ndarray, pixel_delta: int) -> np.ndarray:
    """Fraction of cells of signature `a` [D] that differ by more than `pixel_delta` in each row of `b` [N, D]."""
    return (np.abs(b.astype(np.int16, copy=False) - a.astype(np.int16, copy=False)) > pixel_delta).mean(axis=1)


def find_near_duplicates(metadata: pd.DataFrame, pixel_delta: int, max_changed: float) -> pd.DataFrame:
    """Per path: the earlier clip (by path) it nearly duplicates and the fraction of cells that differ.

    Clips without a signature (not decoded) and exact sha256 copies (caught by their own rule) are left out.
    Every clip is compared with every earlier one, O(n²) in numpy: about a second for the demo's 336 clips on 2 cores.
    Returns columns path, near_duplicate_of (None when unique), near_duplicate_changed.
    """
    out = pd.DataFrame({"path": metadata["path"], "near_duplicate_of": None, "near_duplicate_changed": np.nan})
    candidates = metadata.dropna(subset=["signature"]).sort_values("path").drop_duplicates("sha256")
    if candidates.empty:
        return out
    signatures = np.stack([np.frombuffer(s, np.uint8) for s in candidates["signature"]]).astype(np.int16)
    paths = candidates["path"].tolist()
    # A clip that duplicates an earlier one is matched to that one's original, never to another copy.
    is_original = np.ones(len(paths), bool)
    found = {}
    for i in range(1, len(paths)):
        changed = changed_fraction(signatures[i], signatures[:i], pixel_delta)
        changed[~is_original[:i]] = np.inf
        best = int(np.argmin(changed))
        if changed[best] <= max_changed:
            is_original[i] = False
            found[paths[i]] = (paths[best], float(changed[best]))
    out["near_duplicate_of"] = [found[p][0] if p in found else None for p in out["path"]]
    out["near_duplicate_changed"] = [found[p][1] if p in found else np.nan for p in out["path"]]
    return out
