"""Bad input gets a clear reason and loses nothing; cuts and static clips are caught."""

import json

import av
import numpy as np
import pandas as pd
import pytest
from conftest import moving_square, write_video

from videodit.data.config import Bucket, CurationConfig, ProbeConfig, ValidationConfig
from videodit.data.curation import center_crop, cover_size, curate, resample, split_of
from videodit.data.probe import DECODED_CLIPS_DIR, METADATA_FILE, probe_rows, write_metadata
from videodit.data.shards import ClipShards
from videodit.data.sources import SourceError, collect_source, read_captions, read_manifest, stage_source
from videodit.data.validation import validate_metadata
from videodit.data.video_io import DecodedFrame

# Square, 2:1 landscape and 1:2 portrait, each at 9 and 17 frames; the default is 17×32×32.
SIZES = ((32, 32), (32, 64), (64, 32))
BUCKETS = tuple(Bucket(h, w, t) for h, w in SIZES for t in (17, 9))
CURATION = CurationConfig(fps=8, n_frames=17, height=32, width=32, buckets=BUCKETS, val_fraction=0.2)


@pytest.fixture
def messy_source(tmp_path):
    """A user folder with good clips and every kind of bad input the issue lists."""
    src = tmp_path / "source"
    good = moving_square(24)
    write_video(src / "good.mp4", good)
    write_video(src / "good_with_audio.mp4", moving_square(24, colour=(0, 255, 0)), audio=True)
    write_video(src / "wide.webm", moving_square(24, height=48, width=96), codec="libvpx-vp9", fmt="webm")
    write_video(src / "portrait.mp4", moving_square(72, height=96, width=48, step=1), fps=30)  # a phone held upright
    write_video(src / "strip.mp4", moving_square(24, height=32, width=320))  # 10:1, wider than any bucket allows
    write_video(src / "high_fps.mov", moving_square(72, step=1), fps=24, fmt="mov")
    whole = (src / "good.mp4").read_bytes()
    write_video(src / "nested/deep.mkv", moving_square(24, colour=(255, 255, 0)), codec="mpeg4", fmt="matroska")
    (src / "corrupt.mp4").write_bytes(whole[: len(whole) // 2])
    (src / "empty.mp4").write_bytes(b"")
    (src / "notes.mp4").write_text("this is a text file, not a video")
    write_video(src / "short.mp4", moving_square(5))
    static = np.repeat(moving_square(1), 24, axis=0)
    write_video(src / "static.mp4", static)
    # Three cuts at 8 fps: 1.5 s of a red square, 3 frames of grey (too short a shot), a green square, then white.
    cut = [moving_square(12), np.full((3, 64, 64, 3), 200, np.uint8), moving_square(12, colour=(0, 255, 0)), 255 - moving_square(12)]
    write_video(src / "cut.mp4", np.concatenate(cut))
    write_video(src / "long.mp4", moving_square(64, width=96, step=1))  # 8 s: a window every 2 s
    (src / "good_copy.mp4").write_bytes(whole)  # same bytes as good.mp4
    # The same content encoded again, the way an encoder that is not bit-exact (or a second export) makes it.
    retouched = good.copy()
    retouched[3, 30:34, 30:34] += 6
    write_video(src / "good_again.mp4", retouched)
    assert (src / "good_again.mp4").read_bytes() != whole
    write_video(src / "uncaptioned.mp4", moving_square(24, colour=(0, 0, 255)))
    (tmp_path / "outside.mp4").write_bytes(whole)
    rows = [
        ("good.mp4", "a red square moves right"),
        ("good_with_audio.mp4", "a green square moves right with a hum"),
        ("wide.webm", "a wide video of a red square"),
        ("portrait.mp4", "a portrait video of a red square"),
        ("strip.mp4", "a very wide strip of a red square"),
        ("high_fps.mov", "a red square crawls to the right"),
        ("nested/deep.mkv", "a yellow square in a subfolder"),
        ("corrupt.mp4", "half of a file"),
        ("empty.mp4", "nothing at all"),
        ("notes.mp4", "text pretending to be video"),
        ("short.mp4", "far too short a clip"),
        ("static.mp4", "a square that never moves"),
        ("cut.mp4", "a square, a grey flash, two more squares"),
        ("long.mp4", "a red square slowly crosses a wide frame"),
        ("good_copy.mp4", "the same clip again"),
        ("good_again.mp4", "the same clip encoded again"),
        ("missing_caption.mp4", ""),
        ("gone.mp4", "this file does not exist"),
        ("../outside.mp4", "trying to escape the root"),
    ]
    # The clip with an empty caption exists on disk.
    write_video(src / "missing_caption.mp4", moving_square(24, colour=(255, 0, 255)))
    pd.DataFrame(rows, columns=["path", "caption"]).to_csv(src / "captions.csv", index=False)
    return src


def _run(src, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    clips = collect_source(src, src / "captions.csv")
    stage_source(clips, src, data_dir)
    out = tmp_path / "video_metadata"
    write_metadata(probe_rows(data_dir, read_manifest(data_dir), ProbeConfig(), CURATION, progress=False), out, CURATION)
    metadata = pd.read_parquet(out / METADATA_FILE)
    outcome = validate_metadata(metadata, tmp_path / "great_expectations", ValidationConfig(), CURATION)
    return data_dir, metadata, outcome


def test_every_bad_input_is_quarantined_with_its_reason(messy_source, tmp_path):
    data_dir, metadata, outcome = _run(messy_source, tmp_path)
    reasons = {row.path: " | ".join(row.reasons) for row in outcome.quarantine.itertuples()}
    accepted = set(outcome.accepted["path"])

    assert accepted == {"good.mp4", "good_with_audio.mp4", "wide.webm", "portrait.mp4", "high_fps.mov", "nested/deep.mkv",
                        "cut.mp4", "long.mp4"}  # fmt: skip
    assert len(accepted) + len(reasons) == len(metadata) == 20  # 19 caption rows + 1 uncaptioned file
    assert "not a readable video container" in reasons["corrupt.mp4"]
    assert "file is empty (0 bytes)" in reasons["empty.mp4"]
    assert "not a readable video container" in reasons["notes.mp4"]
    assert "9-frame clip" in reasons["short.mp4"] and "duration_s=0.625" in reasons["short.mp4"]
    assert reasons["strip.mp4"] == "aspect ratio (width/height) 0.333-3: the buckets' within a ×1.5 crop: got aspect_ratio=10"
    # Each clip goes to the bucket nearest its aspect ratio, at the longest duration it fills.
    bucket = outcome.decisions.set_index("path")["bucket"]
    assert (bucket["portrait.mp4"], bucket["wide.webm"], bucket["good.mp4"]) == ("17x64x32", "17x32x64", "17x32x32")
    assert "not static" in reasons["static.mp4"] and "motion_score=0" in reasons["static.mp4"]
    assert reasons["good_copy.mp4"].startswith("duplicate of good.mp4")  # and not also a near-duplicate
    assert reasons["good_again.mp4"].startswith("near-duplicate of good.mp4 (re-encoded or converted: 0.00%")
    assert "has a caption" in reasons["missing_caption.mp4"]
    assert "has a caption" in reasons["uncaptioned.mp4"]
    assert "file not found in the source" in reasons["gone.mp4"]
    assert "path escapes the source root" in reasons["../outside.mp4"]
    assert not (data_dir.parent / "outside.mp4").exists() or "outside.mp4" not in {p.name for p in data_dir.rglob("*")}
    # Every error names the file it is about.
    for path in ("corrupt.mp4", "empty.mp4", "notes.mp4"):
        assert path in reasons[path]

    # A video with cuts is split into shots at its cuts; the 3-frame shot is quarantined with its seconds.
    cut = outcome.decisions.set_index("path").loc["cut.mp4"]
    assert list(cut["cut_times_s"]) == [1.5, 1.875, 3.375]  # frames 12, 15 and 27 at 8 fps
    assert [list(s) for s in cut["shot_times_s"]] == [[0.0, 1.5], [1.5, 1.875], [1.875, 3.375], [3.375, 4.875]]
    assert list(cut["quarantined_shots"]) == ["shot 1 (1.500-1.875s) is shorter than 1.06s"]
    assert [(w["shot"], w["start_s"], w["end_s"], w["bucket"]) for w in cut["windows"]] == [
        (0, 0.0, 1.125, "9x32x32"), (2, 1.875, 3.0, "9x32x32"), (3, 3.375, 4.5, "9x32x32")]
    # A long shot gives a window every window_stride_s (2 s), each in the longest bucket.
    long = outcome.decisions.set_index("path").loc["long.mp4"]
    assert [(w["window"], w["start_s"], w["end_s"], w["bucket"]) for w in long["windows"]] == [
        (0, 0.0, 2.125, "17x32x64"), (1, 2.0, 4.125, "17x32x64"), (2, 4.0, 6.125, "17x32x64")]
    assert metadata.set_index("path").loc["good_with_audio.mp4", "has_audio"]
    assert metadata.set_index("path").loc["high_fps.mov", "fps"] == pytest.approx(24.0)
    docs = outcome.data_docs_index
    assert docs.is_file() and "video_clips" in docs.read_text()
    suite = json.loads((tmp_path / "great_expectations" / "expectations" / "video_clips.json").read_text())
    assert len(suite["expectations"]) == 22


def test_accepted_clips_curate_to_exact_shapes_and_a_hash_split(messy_source, tmp_path):
    data_dir, _, outcome = _run(messy_source, tmp_path)
    index = curate(outcome.accepted, tmp_path / "video_metadata" / DECODED_CLIPS_DIR, tmp_path / "shards", CURATION, progress=False)
    shards = ClipShards(tmp_path / "shards")
    shards.verify()
    assert len(index) == 6 + 3 + 3  # one window per clip, three for cut.mp4's long-enough shots and long.mp4
    for row in index.itertuples():
        frames = shards.frames(row.shard, row.row)
        assert frames.shape == (row.frames, row.height, row.width, 3) and frames.dtype == np.uint8
        assert row.bucket == f"{row.frames}x{row.height}x{row.width}"
        assert row.split == split_of(row.sha256, CURATION.val_fraction) or row.split == "val"
    # Shards hold one bucket each; without a bucket named, a split is the default bucket's (what training reads).
    assert (index.groupby("shard")["bucket"].nunique() == 1).all()
    assert set(shards.split("train")["bucket"]) | set(shards.split("val")["bucket"]) == {"17x32x32"}
    # The portrait phone clip (48×96 at 30 fps) is scaled whole into its bucket: nothing is cropped.
    portrait = index.set_index("path").loc["portrait.mp4"]
    assert (portrait["bucket"], list(portrait["crop"])) == ("17x64x32", [0, 0, 48, 96])
    assert list(index.set_index("path").loc["wide.webm", "crop"]) == [0, 0, 96, 48]
    # 24 fps resampled to 8 fps takes every third source frame.
    high = index.set_index("path").loc["high_fps.mov"]
    assert list(high["frame_times_s"])[:4] == pytest.approx([0.0, 0.125, 0.25, 0.375], abs=1 / 48)
    assert (index["split"] == "val").sum() >= 1
    # Each window is traceable to its source seconds, and a second run makes the same windows.
    long = index[index["path"] == "long.mp4"]
    assert list(long["start_s"]) == [0.0, 2.0, 4.0] and list(long["shot"]) == [0, 0, 0]
    assert list(long["frame_times_s"].iloc[1])[:2] == pytest.approx([2.0, 2.125])
    again = curate(outcome.accepted, tmp_path / "video_metadata" / DECODED_CLIPS_DIR, tmp_path / "again", CURATION, progress=False)
    columns = ["path", "window", "shot", "start_s", "end_s", "bucket", "clip_id"]
    assert again[columns].equals(index[columns])


def test_the_single_decode_keeps_the_training_clip_a_second_decode_would_make(messy_source, tmp_path):
    # A wide, non-square crop at a frame rate that needs resampling, against PyAV's plain per-frame path.
    curation = CurationConfig(fps=6, n_frames=9, height=40, width=72, buckets=(Bucket(40, 72, 9),))
    data_dir = tmp_path / "data"
    stage_source(collect_source(messy_source, messy_source / "captions.csv"), messy_source, data_dir)
    out = tmp_path / "video_metadata"
    write_metadata(probe_rows(data_dir, read_manifest(data_dir), ProbeConfig(), curation, progress=False), out, curation)
    decoded = ClipShards(out / DECODED_CLIPS_DIR)
    decoded.verify()
    # Every copied clip that decodes to enough frames is kept, whatever validation will decide about it;
    # clips without a caption were never copied.
    assert set(decoded.index["path"]) == {
        "good.mp4", "good_with_audio.mp4", "wide.webm", "high_fps.mov", "nested/deep.mkv", "static.mp4",
        "cut.mp4", "good_copy.mp4", "good_again.mp4", "portrait.mp4", "strip.mp4", "long.mp4",
    }  # fmt: skip
    for row in decoded.index[decoded.index["window"] == 0].itertuples():  # each clip's first window starts it
        with av.open(str(data_dir / row.path)) as container:
            stream = container.streams.video[0]
            size = cover_size(stream.width, stream.height, curation.width, curation.height)
            frames = [DecodedFrame(float(f.time), f.to_ndarray(format="rgb24", width=size[0], height=size[1]))
                      for f in container.decode(stream)]  # fmt: skip
        picked = resample(iter(frames), curation.fps, 9)
        expected = np.stack([center_crop(f.rgb, curation.height, curation.width) for f in picked])
        assert np.array_equal(decoded.frames(row.shard, row.row), expected), row.path
        assert list(row.frame_times_s) == [round(f.time_s, 6) for f in picked]
    # Curating for another clip shape than the one decoded is refused, not silently mixed.
    with pytest.raises(ValueError, match="materialize video_metadata again"):
        curate(pd.DataFrame(), out / DECODED_CLIPS_DIR, tmp_path / "shards", CURATION, progress=False)


def test_non_utf8_captions_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "captions.csv"
    bad.write_bytes("path,caption\nclip.mp4,caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(SourceError, match=r"captions\.csv is not UTF-8 \(byte 0xe9"):
        read_captions(bad)


def test_jsonl_captions_keep_extra_columns(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"path": "a.mp4", "caption": "a red circle", "shape": "circle"}\n\n')
    assert read_captions(tmp_path / "c.jsonl") == [{"path": "a.mp4", "caption": "a red circle", "shape": "circle"}]
    with pytest.raises(SourceError, match=r"c\.jsonl:1: not valid JSON"):
        (tmp_path / "c.jsonl").write_text("{nope\n")
        read_captions(tmp_path / "c.jsonl")


def test_resample_handles_variable_frame_rate():
    # Irregular timestamps (a VFR phone clip): each target time takes the nearest frame.
    times = [0.0, 0.05, 0.21, 0.26, 0.49, 0.61, 0.77, 1.0]
    frames = [DecodedFrame(t, np.full((2, 2, 3), i, np.uint8)) for i, t in enumerate(times)]
    picked = resample(iter(frames), fps=4, n_frames=4)
    assert [f.time_s for f in picked] == [0.0, 0.26, 0.49, 0.77]
    assert len(resample(iter(frames), fps=4, n_frames=6)) == 5  # 1.25 s is past the last frame


def test_a_measure_the_probe_left_missing_is_quarantined_not_passed(messy_source, tmp_path):
    # Column-map expectations skip nulls: without the not-null rules a NaN fps would pass every fps bound.
    _, metadata, _ = _run(messy_source, tmp_path)
    metadata.loc[metadata["path"] == "good.mp4", "fps"] = float("nan")
    metadata.loc[metadata["path"] == "wide.webm", "duration_s"] = None
    outcome = validate_metadata(metadata, tmp_path / "great_expectations", ValidationConfig(), CURATION)
    reasons = {row.path: " | ".join(row.reasons) for row in outcome.quarantine.itertuples()}
    assert reasons["good.mp4"] == "fps was measured: got fps=missing"
    assert reasons["wide.webm"] == "duration_s was measured: got duration_s=missing"
    # Clips that did not decode are quarantined for that alone, not also for every measure they lack.
    assert reasons["empty.mp4"].count("|") == 0


def test_the_tracked_gx_project_is_rewritten_only_when_the_suite_changes(messy_source, tmp_path):
    """`make demo` leaves `git status` clean: the committed suite is the demo preset's, and reruns write nothing."""
    import shutil
    from pathlib import Path

    from videodit.config import load_preset

    repo_gx = Path(__file__).resolve().parents[1] / "great_expectations"
    gx_root = tmp_path / "gx"
    shutil.copytree(repo_gx, gx_root, ignore=shutil.ignore_patterns("uncommitted"))
    tracked = {p.relative_to(gx_root): p.read_bytes() for p in gx_root.rglob("*") if p.is_file()}
    _, metadata, _ = _run(messy_source, tmp_path)
    demo = load_preset("demo")
    outcome = validate_metadata(metadata, gx_root, demo.validation, demo.curation)
    assert not outcome.suite_changed
    now = {p.relative_to(gx_root): p.read_bytes() for p in gx_root.rglob("*") if p.is_file() and "uncommitted" not in p.parts}
    assert now == tracked
    stricter = validate_metadata(metadata, gx_root, ValidationConfig(min_fps=6.0), demo.curation)
    rules = [e["meta"]["rule"] for e in json.loads((gx_root / "expectations" / "video_clips.json").read_text())["expectations"]]
    assert stricter.suite_changed and "6.0 ≤ fps ≤ 120.0" in rules
