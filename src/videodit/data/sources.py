"""Where clips come from: a folder of the user's videos plus a captions file (CSV or JSONL).

Nothing is dropped here: a caption row whose file is missing, leaves the source root, is a symlink, a
device, a FIFO or a folder, is too large or repeats an earlier row, and a video without a caption (unless
a captioner will write one: `SourceConfig.captions_required`), all become manifest entries carrying a
`problem`, so validation quarantines them with that reason and accepted + quarantined always equals
ingested. Only regular files inside the root, with a caption row or a captioner to caption them, are ever
read or copied.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from videodit.data.config import SourceConfig
from videodit.files import write_text_atomically

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".mpg", ".mpeg", ".ts"})
MANIFEST_FILE = "manifest.jsonl"
REQUIRED_FIELDS = ("path", "caption")
COPY_CHUNK = 1 << 20
# csv's default field limit (128 KiB) would stop the whole ingest on one long caption; validation
# quarantines such a row for its caption length instead.
CSV_FIELD_LIMIT = 2**31 - 1


class SourceError(Exception):
    """The source as a whole cannot be read (no captions file, unreadable captions); names the file."""


@dataclass(frozen=True)
class SourceClip:
    path: str  # as written in the captions file, relative to the source root (`#rowN` on a repeated row)
    caption: str | None
    attributes: dict = field(default_factory=dict)
    problem: str | None = None  # why the clip cannot be ingested; None when it was copied


def _decode(captions_file: Path) -> str:
    raw = captions_file.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{captions_file} is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); re-save it as UTF-8"
        ) from None


def _jsonl_rows(captions_file: Path, text: str) -> list:
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise SourceError(f"{captions_file}:{line_no}: not valid JSON ({exc.msg})") from None
    if rows and not any(isinstance(r, dict) and "caption" in r for r in rows):
        raise SourceError(f"{captions_file.name} has no `caption` field in any row ({captions_file})")
    return rows


def _csv_rows(captions_file: Path, text: str) -> list:
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    for name in REQUIRED_FIELDS:
        if name not in columns:
            raise SourceError(
                f"{captions_file.name} has no `{name}` column (columns: {', '.join(columns) or 'none'}) ({captions_file})"
            )
    return list(reader)


def read_captions(captions_file: Path) -> list[dict]:
    """Rows of a CSV (header with `path` and `caption`) or JSONL file; other columns are kept.

    The header is checked before anything is copied: a file without the columns is a SourceError."""
    captions_file = Path(captions_file)
    if not captions_file.is_file():
        raise SourceError(f"captions file not found: {captions_file}")
    text = _decode(captions_file)
    is_jsonl = captions_file.suffix.lower() in {".jsonl", ".ndjson"}
    rows = _jsonl_rows(captions_file, text) if is_jsonl else _csv_rows(captions_file, text)
    for row_no, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or "path" not in row:
            raise SourceError(f"{captions_file}: row {row_no} has no 'path' field")
    return rows


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a plain file"


def inspect_entry(root: Path, rel: str, config: SourceConfig) -> str | None:
    """Why `rel` (relative to the real path `root`) may not be read, or None for a regular file inside it.

    Nothing is opened: only path resolution and stat."""
    if PurePosixPath(rel).is_absolute() or Path(rel).is_absolute():
        return f"path escapes the source root {root}"
    lexical = Path(os.path.normpath(root / rel))
    if not lexical.is_relative_to(root):
        return f"path escapes the source root {root}"
    real = Path(os.path.realpath(lexical))
    if real != lexical:
        if not real.is_relative_to(root):
            return f"symlink to outside the source: {lexical} -> {real}"
        if not config.follow_symlinks:
            return f"symlink inside the source, not followed (set follow_symlinks to follow it): {lexical} -> {real}"
    try:
        info = os.stat(real)
    except FileNotFoundError:
        return f"file not found in the source: {lexical}"
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file ({_kind(info.st_mode)}): {lexical}"
    if info.st_size > config.max_file_bytes:
        return f"file of {info.st_size} bytes is over max_file_bytes={config.max_file_bytes}, not read: {lexical}"
    return None


def _video_entries(root: Path) -> list[str]:
    """Every entry under `root` with a video extension (files, symlinks, folders, FIFOs), never following links."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append((Path(folder) / name).relative_to(root).as_posix())
    return sorted(found)


def collect_source(root: Path, captions_file: Path, config: SourceConfig = SourceConfig()) -> list[SourceClip]:
    """Every caption row plus every video entry under `root` that no row names, in a stable order.

    A path listed more than once is one clip: the first row wins and the rest carry "repeated row of …"."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"source folder not found: {root}")
    real_root = root.resolve()
    rows = read_captions(captions_file)
    clips, first_row = [], {}
    for row_no, row in enumerate(rows, start=1):
        rel = str(row["path"]).strip()
        caption = row.get("caption")
        caption = str(caption).strip() if caption is not None else None
        attributes = {k: v for k, v in row.items() if k not in REQUIRED_FIELDS}
        key = os.path.normpath(rel)
        if key in first_row:
            problem = f"repeated row of {first_row[key][0]} (row {first_row[key][1]} of {Path(captions_file).name})"
            clips.append(SourceClip(f"{rel}#row{row_no}", caption or None, attributes, problem))
            continue
        first_row[key] = (rel, row_no)
        problem = inspect_entry(real_root, rel, config)
        if problem is None and not caption and config.captions_required:
            problem = f"no caption in {Path(captions_file).name}, not copied: {rel}"
        clips.append(SourceClip(rel, caption or None, attributes, problem))
    for rel in _video_entries(real_root):
        if os.path.normpath(rel) not in first_row:
            problem = inspect_entry(real_root, rel, config)
            if problem is None and config.captions_required:
                problem = f"no row in {Path(captions_file).name}, not copied: {rel}"
            clips.append(SourceClip(rel, None, {}, problem))
    return sorted(clips, key=lambda c: c.path)


def copy_regular_file(src: Path, dest: Path, max_bytes: int) -> None:
    """Copy `src` only if it is still a regular file no larger than `max_bytes` (it may have changed since it was
    inspected); never follows a final symlink, never blocks on a FIFO, never copies more than `max_bytes`."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise SourceError(f"cannot open {src} for copying: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as reader:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(f"{src} is no longer a regular file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        copied = 0
        with dest.open("wb") as writer:
            while chunk := reader.read(COPY_CHUNK):
                copied += len(chunk)
                if copied > max_bytes:
                    raise SourceError(f"{src} grew past max_file_bytes={max_bytes} while it was copied")
                writer.write(chunk)


def write_manifest(clips: list[SourceClip], data_dir: Path) -> Path:
    manifest = Path(data_dir) / MANIFEST_FILE
    lines = (json.dumps(asdict(clip), sort_keys=True, ensure_ascii=False) + "\n" for clip in clips)
    write_text_atomically(manifest, "".join(lines))
    return manifest


def stage_source(clips: list[SourceClip], root: Path, data_dir: Path, config: SourceConfig = SourceConfig()) -> Path:
    """Copy the ingestible clips of `root` into `data_dir` and write its manifest; returns the manifest."""
    root, data_dir = Path(root).resolve(), Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        if clip.problem is None and root != data_dir:
            # Inspection proved the real path is inside the root; copying it, not the link, keeps O_NOFOLLOW meaningful.
            real = Path(os.path.realpath(root / clip.path))
            copy_regular_file(real, data_dir / clip.path, config.max_file_bytes)
    return write_manifest(clips, data_dir)


def read_manifest(data_dir: Path) -> list[SourceClip]:
    manifest = Path(data_dir) / MANIFEST_FILE
    if not manifest.is_file():
        raise SourceError(f"no manifest at {manifest}: materialize raw_videos first")
    with manifest.open(encoding="utf-8") as f:
        return [SourceClip(**json.loads(line)) for line in f if line.strip()]
