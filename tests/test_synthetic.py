import csv
import itertools
from collections import Counter

import numpy as np
import pytest

from videodit.data.config import Bucket, SyntheticConfig
from videodit.data.synthetic import (
    CAPTION_TEMPLATES, COLOURS, DIRECTIONS, MANIFEST_COLUMNS, SHAPES, SHAPES_DOMAIN, SIZES, TRAINED_SYNONYMS,
    generate_shapes_dataset, render_clip,
)  # fmt: skip
from videodit.data.video_io import RGBConverter, decode_video, mp4_bytes, open_video
from videodit.domain import ATTRIBUTES
from videodit.evaluation.attributes import read_attributes
from videodit.evaluation.prompt_adherence import attributes_from_caption


def _rgb_frames(container, path) -> list[np.ndarray]:
    to_rgb = RGBConverter(path)
    return [to_rgb(frame) for frame in decode_video(container, path)]


def _centroids(frames):
    mask = frames.max(axis=-1) > 0
    ys, xs = [], []
    for m in mask:
        y, x = np.nonzero(m)
        ys.append(y.mean())
        xs.append(x.mean())
    return np.array(xs), np.array(ys)


def test_every_clip_moves_its_direction_far_enough_and_stays_inside():
    config = SyntheticConfig(n_frames=16, height=64, width=48)
    for shape, colour, size, direction in itertools.product(SHAPES, COLOURS, SIZES, DIRECTIONS):
        frames = render_clip(shape, colour, size, direction, config, np.random.default_rng(0))
        assert frames.shape == (16, 64, 48, 3)
        # Fully inside: nothing touches the border, and the only colours are black and the shape's.
        assert not frames[:, 0].any() and not frames[:, -1].any()
        assert not frames[:, :, 0].any() and not frames[:, :, -1].any()
        assert {tuple(c) for c in frames.reshape(-1, 3)} == {(0, 0, 0), COLOURS[colour]}
        xs, ys = _centroids(frames)
        dx, dy = xs[-1] - xs[0], ys[-1] - ys[0]
        along, side = (dx, 48) if DIRECTIONS[direction][0] else (dy, 64)
        expected_sign = sum(DIRECTIONS[direction])
        assert np.sign(along) == expected_sign, (shape, direction)
        assert abs(along) >= 0.4 * side - 1.5  # ≥ 40% of the frame side, within rasterisation
        area = (frames[0].max(axis=-1) > 0).sum()
        assert area > 0


def test_position_jitter_narrows_the_paths():
    def paths(jitter):
        config = SyntheticConfig(n_frames=8, height=64, width=64, position_jitter=jitter)
        clips = [render_clip("square", "red", "large", "right", config, np.random.default_rng(seed)) for seed in range(6)]
        return np.array([np.stack(_centroids(frames)) for frames in clips])  # [clip, x/y, frame]

    fixed, narrow, full = paths(0.0), paths(0.2), paths(1.0)
    assert np.ptp(fixed, axis=0).max() == 0  # one path for every seed
    assert 0 < np.ptp(narrow, axis=0).max() < 0.3 * np.ptp(full, axis=0).max()
    with pytest.raises(ValueError, match="position_jitter"):
        SyntheticConfig(position_jitter=1.5)


def test_default_dataset_covers_every_combination_and_is_reproducible(tmp_path):
    config = SyntheticConfig(n_frames=8, height=32, width=32)
    captions = generate_shapes_dataset(tmp_path / "a", config, progress=False)
    generate_shapes_dataset(tmp_path / "b", config, progress=False)
    rows = list(csv.DictReader(captions.open()))
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    combos = Counter((r["shape"], r["colour"], r["size"], r["direction"]) for r in rows)
    assert len(combos) == 3 * 7 * 2 * 4 - 16 == len(rows)  # every combination but the 16 held out for evaluation
    assert not set(combos) & set(SHAPES_DOMAIN.held_out_combinations)
    # At least five phrasings are in use, and each caption names its own colour and shape.
    assert len({r["caption"].split()[0] + str(len(r["caption"].split())) for r in rows}) >= 5
    assert len(CAPTION_TEMPLATES) >= 5
    # Each caption names its own shape and colour (and whatever else its template names), half the time by a trained
    # synonym ("scarlet" for red), never by a held-out one.
    for r in rows:
        named = attributes_from_caption(r["caption"], SHAPES_DOMAIN)
        assert named["shape"] == r["shape"] and named["colour"] == r["colour"], r["caption"]
        assert all(named[a] in (None, r[a]) for a in ATTRIBUTES), r["caption"]
    words = Counter(w for r in rows for w in r["caption"].split())
    assert all(words[w] for synonyms in TRAINED_SYNONYMS.values() for w in synonyms)
    assert not set(words) & set(SHAPES_DOMAIN.held_out_synonyms)
    # Same seed, same pixels. Checked on the decoded frames, within codec noise (on average, and but for a few
    # pixels; a clip of another layout differs in far more), not the bytes: the encoder is bit-exact on the CPUs
    # seen (test_an_encoded_clip_is_the_same_bytes_every_time), which need not hold for every x264 build and CPU.
    # The data version holds either way: an unchanged set is not generated again (tests/test_ingest_safety.py).
    for r in rows[:20]:
        decoded = []
        for folder in ("a", "b"):
            container, _ = open_video(tmp_path / folder / r["path"])
            with container:
                decoded.append(np.stack(_rgb_frames(container, tmp_path / folder / r["path"])).astype(int))
        diff = np.abs(decoded[0] - decoded[1])
        assert diff.mean() <= 0.5 and (diff > 8).mean() <= 0.02, r["path"]  # a fresh clone's run saw 0.57% of pixels
    container, info = open_video(tmp_path / "a" / rows[0]["path"])
    with container:
        pix_fmt = container.streams.video[0].codec_context.pix_fmt
        frames = _rgb_frames(container, tmp_path / "a" / rows[0]["path"])
    assert (info.codec, info.width, info.height, info.nominal_fps, len(frames)) == ("h264", 32, 32, 8.0, 8)
    assert pix_fmt == "yuv420p"


def test_an_encoded_clip_is_the_same_bytes_every_time():
    # x264's AVX-512 kernels gave 8 distinct files in 200 encodes of one clip on a Zen 4 EPYC; mp4_bytes keeps to its
    # AVX2 kernels on such CPUs.
    frames = render_clip("circle", "red", "large", "left", SyntheticConfig(n_frames=8, height=32, width=32), np.random.default_rng(3))
    assert len({mp4_bytes(frames, 8) for _ in range(50)}) == 1


def test_max_clips_takes_a_seeded_sample(tmp_path):
    captions = generate_shapes_dataset(tmp_path, SyntheticConfig(n_frames=8, height=32, width=32, max_clips=24), progress=False)
    rows = list(csv.DictReader(captions.open()))
    assert len(rows) == 24
    assert len({r["colour"] for r in rows}) >= 5 and len({r["shape"] for r in rows}) == 3


@pytest.mark.parametrize(("height", "width"), [(48, 24), (24, 48)])
def test_the_evaluator_reads_every_attribute_back_from_portrait_and_landscape_clips(height, width):
    config = SyntheticConfig(n_frames=9, height=height, width=width)
    for shape, size, direction in itertools.product(SHAPES, SIZES, DIRECTIONS):
        frames = render_clip(shape, "red", size, direction, config, np.random.default_rng(0))
        read = read_attributes(frames, SHAPES_DOMAIN)
        assert (read.shape, read.colour, read.size, read.direction) == (shape, "red", size, direction), (height, width)


def test_the_built_in_set_fills_every_clip_bucket(tmp_path):
    buckets = (Bucket(32, 32, 9), Bucket(32, 32, 5), Bucket(24, 48, 9), Bucket(48, 24, 5), Bucket(32, 32, 1))
    config = SyntheticConfig(n_frames=9, height=32, width=32, max_clips=3, buckets=buckets, clips_per_other_bucket=2)
    rows = list(csv.DictReader(generate_shapes_dataset(tmp_path, config, progress=False).open()))
    shapes = Counter((int(r["n_frames"]), int(r["height"]), int(r["width"])) for r in rows)
    assert shapes == {(9, 32, 32): 3, (5, 32, 32): 2, (9, 24, 48): 2, (5, 48, 24): 2}  # no 1-frame clips: images reuse clips
