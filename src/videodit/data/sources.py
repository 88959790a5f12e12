"""Where clips come from: a folder of the user's videos plus a captions file (CSV or JSONL).

Nothing is dropped here: a caption row whose file is missing or whose path leaves the source root,
and a video without a caption row, all become manifest entries carrying a `problem`, so validation
quarantines them with that reason and accepted + quarantined always equals ingested.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".mpg", ".mpeg", ".ts"})
MANIFEST_FILE = "manifest.jsonl"


class SourceError(Exception):
    """The source as a whole cannot be read (no captions file, unreadable captions); names the file."""


@dataclass(frozen=True)
class SourceClip:
    path: str  # as written in the captions file, relative to the source root
    caption: str | None
    attributes: dict = field(default_factory=dict)
    problem: str | None = None  # why the clip cannot be ingested; None when it was copied


def read_captions(captions_file: Path) -> list[dict]:
    """Rows of a CSV (header with `path` and `caption`) or JSONL file; other columns are kept."""
    captions_file = Path(captions_file)
    if not captions_file.is_file():
        raise SourceError(f"captions file not found: {captions_file}")
    raw = captions_file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{captions_file} is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-save it as UTF-8"
        ) from None
    if captions_file.suffix.lower() in {".jsonl", ".ndjson"}:
        rows = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SourceError(f"{captions_file}:{line_no}: not valid JSON ({exc.msg})") from None
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    for line_no, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or "path" not in row:
            raise SourceError(f"{captions_file}: row {line_no} has no 'path' field")
    return rows


def resolve_inside(root: Path, rel: str) -> Path | None:
    """The file `rel` names inside `root`, or None when it is absolute or resolves outside the root."""
    if PurePosixPath(rel).is_absolute() or Path(rel).is_absolute():
        return None
    target = (root / rel).resolve()
    return target if target.is_relative_to(root.resolve()) else None


def collect_source(root: Path, captions_file: Path) -> list[SourceClip]:
    """Every caption row plus every video file under `root` that no row names, in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"source folder not found: {root}")
    clips, named = [], set()
    for row in read_captions(captions_file):
        rel = str(row["path"]).strip()
        caption = row.get("caption")
        caption = str(caption).strip() if caption is not None else None
        attributes = {k: v for k, v in row.items() if k not in {"path", "caption"}}
        target = resolve_inside(root, rel)
        if target is None:
            problem = f"path escapes the source root {root}"
        elif not target.is_file():
            problem = f"file not found in the source: {root / rel}"
        else:
            problem = None
            named.add(target)
        clips.append(SourceClip(rel, caption or None, attributes, problem))
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS):
        if path.resolve() not in named:
            clips.append(SourceClip(path.relative_to(root).as_posix(), None))
    return sorted(clips, key=lambda c: c.path)


def stage_source(clips: list[SourceClip], root: Path, data_dir: Path) -> Path:
    """Copy the ingestible clips of `root` into `data_dir` and write its manifest; returns the manifest."""
    root, data_dir = Path(root).resolve(), Path(data_dir).resolve()
    for clip in clips:
        if clip.problem is None and root != data_dir:
            dest = data_dir / clip.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / clip.path, dest)
    manifest = data_dir / MANIFEST_FILE
    with manifest.open("w", encoding="utf-8") as f:
        for clip in clips:
            f.write(json.dumps(asdict(clip), sort_keys=True, ensure_ascii=False) + "\n")
    return manifest


def read_manifest(data_dir: Path) -> list[SourceClip]:
    manifest = Path(data_dir) / MANIFEST_FILE
    if not manifest.is_file():
        raise SourceError(f"no manifest at {manifest}: materialize raw_videos first")
    with manifest.open(encoding="utf-8") as f:
        return [SourceClip(**json.loads(line)) for line in f if line.strip()]
