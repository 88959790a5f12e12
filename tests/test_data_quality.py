"""Bad input gets a clear reason and loses nothing; cuts and static clips are caught."""

import colorsys
import json

import av
import numpy as np
import pandas as pd
import pytest
from conftest import moving_square, write_video

from videodit.data.config import CurationConfig, ProbeConfig, ValidationConfig
from videodit.data.curation import center_crop, cover_size, curate, resample, split_of
from videodit.data.probe import DECODED_CLIPS_DIR, METADATA_FILE, probe_rows, rgb_to_hsv, write_metadata
from videodit.data.shards import ClipShards
from videodit.data.sources import SourceError, collect_source, read_captions, read_manifest, stage_source
from videodit.data.validation import validate_metadata
from videodit.data.video_io import DecodedFrame

CURATION = CurationConfig(fps=8, n_frames=16, height=32, width=32, val_fraction=0.2)


@pytest.fixture
def messy_source(tmp_path):
    """A user folder with good clips and every kind of bad input the issue lists."""
    src = tmp_path / "source"
    good = moving_square(24)
    write_video(src / "good.mp4", good)
    write_video(src / "good_with_audio.mp4", moving_square(24, colour=(0, 255, 0)), audio=True)
    write_video(src / "wide.webm", moving_square(24, height=48, width=96), codec="libvpx-vp9", fmt="webm")
    write_video(src / "high_fps.mov", moving_square(72, step=1), fps=24, fmt="mov")
    whole = (src / "good.mp4").read_bytes()
    write_video(src / "nested/deep.mkv", moving_square(24, colour=(255, 255, 0)), codec="mpeg4", fmt="matroska")
    (src / "corrupt.mp4").write_bytes(whole[: len(whole) // 2])
    (src / "empty.mp4").write_bytes(b"")
    (src / "notes.mp4").write_text("this is a text file, not a video")
    write_video(src / "short.mp4", moving_square(5))
    static = np.repeat(moving_square(1), 24, axis=0)
    write_video(src / "static.mp4", static)
    cut = np.concatenate([moving_square(12), np.full((12, 64, 64, 3), 200, np.uint8)])
    write_video(src / "cut.mp4", cut)
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
        ("high_fps.mov", "a red square crawls to the right"),
        ("nested/deep.mkv", "a yellow square in a subfolder"),
        ("corrupt.mp4", "half of a file"),
        ("empty.mp4", "nothing at all"),
        ("notes.mp4", "text pretending to be video"),
        ("short.mp4", "far too short a clip"),
        ("static.mp4", "a square that never moves"),
        ("cut.mp4", "a square then a grey screen"),
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

    assert accepted == {"good.mp4", "good_with_audio.mp4", "wide.webm", "high_fps.mov", "nested/deep.mkv"}
    assert len(accepted) + len(reasons) == len(metadata) == 17  # 16 caption rows + 1 uncaptioned file
    assert "not a readable video container" in reasons["corrupt.mp4"]
    assert "file is empty (0 bytes)" in reasons["empty.mp4"]
    assert "not a readable video container" in reasons["notes.mp4"]
    assert "16-frame clip" in reasons["short.mp4"] and "duration_s=0.625" in reasons["short.mp4"]
    assert "not static" in reasons["static.mp4"] and "motion_score=0" in reasons["static.mp4"]
    assert "no scene cuts: got n_cuts=1" == reasons["cut.mp4"]
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

    row = metadata.set_index("path").loc["cut.mp4"]
    assert list(row["cut_times_s"]) == [1.5]  # frame 12 at 8 fps
    assert metadata.set_index("path").loc["good_with_audio.mp4", "has_audio"]
    assert metadata.set_index("path").loc["high_fps.mov", "fps"] == pytest.approx(24.0)
    docs = outcome.data_docs_index
    assert docs.is_file() and "video_clips" in docs.read_text()
    suite = json.loads((tmp_path / "great_expectations" / "expectations" / "video_clips.json").read_text())
    assert len(suite["expectations"]) == 20


def test_accepted_clips_curate_to_exact_shapes_and_a_hash_split(messy_source, tmp_path):
    data_dir, _, outcome = _run(messy_source, tmp_path)
    index = curate(outcome.accepted, tmp_path / "video_metadata" / DECODED_CLIPS_DIR, tmp_path / "shards", CURATION, progress=False)
    shards = ClipShards(tmp_path / "shards")
    shards.verify()
    assert len(index) == 5
    for row in index.itertuples():
        frames = shards.frames(row.shard, row.row)
        assert frames.shape == (16, 32, 32, 3) and frames.dtype == np.uint8
        assert row.split == split_of(row.sha256, CURATION.val_fraction) or row.split == "val"
    # 24 fps resampled to 8 fps takes every third source frame.
    high = index.set_index("path").loc["high_fps.mov"]
    assert list(high["frame_times_s"])[:4] == pytest.approx([0.0, 0.125, 0.25, 0.375], abs=1 / 48)
    assert (index["split"] == "val").sum() >= 1


def test_the_single_decode_keeps_the_training_clip_a_second_decode_would_make(messy_source, tmp_path):
    # A wide, non-square crop at a frame rate that needs resampling, against PyAV's plain per-frame path.
    curation = CurationConfig(fps=6, n_frames=8, height=40, width=72)
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
        "cut.mp4", "good_copy.mp4", "good_again.mp4",
    }  # fmt: skip
    for row in decoded.index.itertuples():
        with av.open(str(data_dir / row.path)) as container:
            stream = container.streams.video[0]
            size = cover_size(stream.width, stream.height, curation.width, curation.height)
            frames = [DecodedFrame(float(f.time), f.to_ndarray(format="rgb24", width=size[0], height=size[1]))
                      for f in container.decode(stream)]  # fmt: skip
        picked = resample(iter(frames), curation.fps, curation.n_frames)
        expected = np.stack([center_crop(f.rgb, curation.height, curation.width) for f in picked])
        assert np.array_equal(decoded.frames(row.shard, row.row), expected), row.path
        assert list(row.frame_times_s) == [round(f.time_s, 6) for f in picked]
    # Curating for another clip shape than the one decoded is refused, not silently mixed.
    with pytest.raises(ValueError, match="materialize video_metadata again"):
        curate(pd.DataFrame(), out / DECODED_CLIPS_DIR, tmp_path / "shards", CURATION, progress=False)


def test_hsv_matches_colorsys_on_opencv_scale():
    rgb = np.random.default_rng(0).integers(0, 256, (2000, 3), dtype=np.uint8)
    rgb[:4] = [(0, 0, 0), (255, 255, 255), (7, 7, 7), (255, 0, 1)]  # black, white, grey, hue just below 360°
    expected = [colorsys.rgb_to_hsv(*(c / 255 for c in px)) for px in rgb.tolist()]
    expected = np.array([(h * 180 % 180, s * 255, v * 255) for h, s, v in expected])
    np.testing.assert_allclose(rgb_to_hsv(rgb), expected, atol=1e-3)
    dark = rgb_to_hsv(np.array([[20, 0, 10], [30, 0, 10]], np.uint8), dark_floor=24)
    assert dark[0].tolist() == [0, 0, 20] and dark[1, 1] == 255


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
    stricter = validate_metadata(metadata, gx_root, ValidationConfig(min_width=40), demo.curation)
    rules = [e["meta"]["rule"] for e in json.loads((gx_root / "expectations" / "video_clips.json").read_text())["expectations"]]
    assert stricter.suite_changed and "width ≥ 40px" in rules
