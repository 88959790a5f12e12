"""Ingestion never reads what it must not, never loses data/ on an error, and versions the same bytes again."""

import hashlib
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import moving_square, write_video
from dagster import DagsterInstance, Failure, materialize

from dagster_project.defs.ingestion import raw_videos
from dagster_project.defs.resources import DVCResource, Workspace
from videodit.data import synthetic
from videodit.data.config import SourceConfig
from videodit.data.sources import SourceError, collect_source, read_captions, stage_source


def _tree(folder):
    """Every file under `folder` with its sha256: what a swap must leave exactly as it was."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _ingest(root, remote, source=None, **config):
    if source is not None:
        config["source_dir"] = str(source)
    return materialize(
        [raw_videos],
        instance=DagsterInstance.ephemeral(),
        resources={"workspace": Workspace(project_dir=str(root), preset="tiny"), "dvc": DVCResource(remote_url=str(remote))},
        run_config={"ops": {"raw_videos": {"config": config}}},
    )


def _metadata(result):
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture
def hostile_source(tmp_path):
    """A source folder with links out of it, special files and a folder that looks like a video."""
    src, outside = tmp_path / "source", tmp_path / "outside"
    write_video(src / "good.mp4", moving_square(24))
    write_video(src / "real/other.mp4", moving_square(24, colour=(0, 255, 0)))
    write_video(outside / "secret_video.mp4", moving_square(24, colour=(0, 0, 255)))
    write_video(src / "big.mp4", moving_square(96, step=0))
    os.symlink("/etc/hostname", src / "sneaky.mp4")  # listed
    os.symlink("/etc/passwd", src / "sneaky2.mp4")  # not listed
    os.symlink("../outside/secret_video.mp4", src / "outside_video_link.mp4")
    os.symlink("/dev/zero", src / "zero.mp4")
    os.symlink("../outside", src / "linkdir")
    os.symlink("real/other.mp4", src / "inside_link.mp4")
    os.mkfifo(src / "fifo.mp4")
    (src / "folder.mp4").mkdir()
    rows = [
        ("good.mp4", "a red square moves right"),
        ("big.mp4", "a clip over the size limit"),
        ("sneaky.mp4", "a link to a system file"),
        ("zero.mp4", "a link to an endless device"),
        ("fifo.mp4", "a named pipe"),
        ("folder.mp4", "a folder named like a video"),
        ("linkdir/secret_video.mp4", "through a symlinked folder"),
        ("inside_link.mp4", "a link that stays inside"),
    ]
    pd.DataFrame(rows, columns=["path", "caption"]).to_csv(src / "captions.csv", index=False)
    return src


def test_links_special_files_and_uncaptioned_files_are_quarantined_unread(hostile_source, tmp_path):
    small = max((hostile_source / name).stat().st_size for name in ("good.mp4", "real/other.mp4"))
    assert (hostile_source / "big.mp4").stat().st_size > small
    limits = SourceConfig(max_file_bytes=small)
    problems = {c.path: c.problem for c in collect_source(hostile_source, hostile_source / "captions.csv", limits)}
    assert problems["good.mp4"] is None
    assert problems["sneaky.mp4"].startswith("symlink to outside the source") and "/etc/hostname" in problems["sneaky.mp4"]
    assert problems["sneaky2.mp4"].startswith("symlink to outside the source") and "/etc/passwd" in problems["sneaky2.mp4"]
    assert problems["outside_video_link.mp4"].startswith("symlink to outside the source")
    assert problems["linkdir/secret_video.mp4"].startswith("symlink to outside the source")
    assert problems["zero.mp4"].startswith("symlink to outside the source")
    assert problems["fifo.mp4"].startswith("not a regular file (a FIFO)")
    assert problems["folder.mp4"].startswith("not a regular file (a directory)")
    assert problems["inside_link.mp4"].startswith("symlink inside the source, not followed")
    assert problems["big.mp4"].startswith(f"file of {(hostile_source / 'big.mp4').stat().st_size} bytes is over max_file_bytes")
    assert problems["real/other.mp4"].startswith("no row in captions.csv, not copied")

    data_dir = tmp_path / "data"
    stage_source(collect_source(hostile_source, hostile_source / "captions.csv", limits), hostile_source, data_dir, limits)
    assert sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*")) == ["good.mp4", "manifest.jsonl"]

    # Links that stay inside the root are followed when asked to, and copied as the file they point to.
    followed = SourceConfig(follow_symlinks=True)
    clips = collect_source(hostile_source, hostile_source / "captions.csv", followed)
    assert {c.path for c in clips if c.problem is None} == {"good.mp4", "big.mp4", "inside_link.mp4"}
    stage_source(clips, hostile_source, tmp_path / "followed", followed)
    copied = tmp_path / "followed" / "inside_link.mp4"
    assert not copied.is_symlink() and copied.read_bytes() == (hostile_source / "real/other.mp4").read_bytes()


def test_nothing_from_outside_the_source_reaches_data_or_the_dvc_remote(hostile_source, project):
    root, remote = project
    meta = _metadata(_ingest(root, remote, hostile_source))
    assert (meta["clips"], meta["clips_with_ingest_problems"]) == (11, 9)
    assert sorted(p.relative_to(root / "data").as_posix() for p in (root / "data").rglob("*")) == [
        "big.mp4", "good.mp4", "manifest.jsonl",
    ]  # fmt: skip
    secrets = {hashlib.md5(open(f, "rb").read()).hexdigest() for f in ("/etc/passwd", "/etc/hostname")}
    pushed = {p.parent.name + p.name for p in remote.rglob("*") if p.is_file()}
    assert not secrets & pushed  # DVC's remote names objects by md5
    assert len(pushed) == 3 + 1  # two clips, the manifest and the directory listing


def test_a_failed_ingest_leaves_data_and_its_version_exactly_as_before(project, tmp_path):
    root, remote = project
    first = _metadata(_ingest(root, remote))
    before, dvc_before = _tree(root / "data"), (root / "data.dvc").read_bytes()
    assert len(before) == first["files"] == 37  # the tiny set's 34 clips, captions.csv, manifest.jsonl, synthetic.json

    no_caption_column = tmp_path / "mine"
    write_video(no_caption_column / "a.mp4", moving_square(24))
    (no_caption_column / "captions.csv").write_text("path,text\na.mp4,a red square\n")
    with pytest.raises(Failure, match=r"captions\.csv has no `caption` column \(columns: path, text\)") as failure:
        _ingest(root, remote, no_caption_column)
    assert "and data.dvc are unchanged" in failure.value.description
    assert _tree(root / "data") == before and (root / "data.dvc").read_bytes() == dvc_before

    # DVC failing after the swap (a remote that cannot be written) rolls the swap back too.
    (no_caption_column / "captions.csv").write_text("path,caption\na.mp4,a red square moves right\n")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the remote folder should be")
    with pytest.raises(Failure, match="DVC could not version"):
        _ingest(root, blocked, no_caption_column)
    assert _tree(root / "data") == before and (root / "data.dvc").read_bytes() == dvc_before
    assert not any(p.name.startswith(".data.") for p in root.iterdir())  # no staging or backup left behind


def test_an_unchanged_builtin_set_keeps_its_version_when_the_encoder_is_not_bit_exact(project, monkeypatch):
    root, remote = project
    first = _metadata(_ingest(root, remote))
    real_write = synthetic.write_mp4

    def drifting_encoder(frames, path, fps):  # what an encoder that is not bit-exact does on a second write
        frames = frames.copy()
        frames[0, :4, :4] = np.minimum(frames[0, :4, :4].astype(int) + 9, 255)
        real_write(frames, path, fps)

    monkeypatch.setattr(synthetic, "write_mp4", drifting_encoder)
    again = _metadata(_ingest(root, remote))
    assert (again["dvc_md5"], again["pushed_objects"]) == (first["dvc_md5"], 0)
    # A changed config is generated again, by the drifting encoder: a new version.
    assert _metadata(_ingest(root, remote, synthetic={"seed": 3}))["dvc_md5"] != first["dvc_md5"]
    assert yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"] != first["dvc_md5"]


def test_repeated_rows_are_one_clip_and_the_rest_are_quarantined(tmp_path):
    src = tmp_path / "source"
    write_video(src / "clip.mp4", moving_square(24))
    rows = [("clip.mp4", "a red square moves right")] * 50 + [("./clip.mp4", "the same file spelled otherwise")]
    pd.DataFrame(rows, columns=["path", "caption"]).to_csv(src / "captions.csv", index=False)
    clips = collect_source(src, src / "captions.csv")
    assert [c.path for c in clips if c.problem is None] == ["clip.mp4"]
    repeated = [c for c in clips if c.problem]
    assert len(repeated) == 50 and len({c.path for c in clips}) == 51  # each row keeps its own identity
    assert {c.problem for c in repeated} == {"repeated row of clip.mp4 (row 1 of captions.csv)"}


def test_a_huge_caption_is_read_and_the_header_is_checked_first(tmp_path):
    huge = "a red square " * 20_000  # 260 KB, past csv's default field limit
    (tmp_path / "captions.csv").write_text(f"path,caption\nclip.mp4,{huge}\n")
    assert read_captions(tmp_path / "captions.csv")[0]["caption"] == huge
    (tmp_path / "c.jsonl").write_text('{"path": "a.mp4", "text": "no caption field"}\n')
    with pytest.raises(SourceError, match=r"c\.jsonl has no `caption` field in any row"):
        read_captions(tmp_path / "c.jsonl")


def test_a_write_that_fails_half_way_leaves_the_previous_file(tmp_path):
    from videodit.files import replaced_atomically

    target = tmp_path / "metadata.parquet"
    target.write_bytes(b"the previous, complete table")
    with pytest.raises(RuntimeError):
        with replaced_atomically(target) as tmp:
            tmp.write_bytes(b"PAR1")  # a run killed here left a 4-byte parquet before
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"the previous, complete table"
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.parquet"]
