import base64
import dataclasses
import io
import itertools
import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import json

import torch

from videodit.data.config import Bucket, SyntheticConfig
from videodit.data.synthetic import (
    CAPTION_TEMPLATES, COLOURS, DIRECTIONS, SHAPES, SHAPES_DOMAIN, SIZES, TOWARDS, TRAINED_SYNONYMS, render_clip,
)  # fmt: skip
from videodit.domain import Domain
from videodit.evaluation import (
    FEATURE_NAMES,
    UNKNOWN,
    attribute_features,
    attributes_from_caption,
    contact_sheet,
    frechet_distance,
    frechet_video_distance,
    png_data_uri,
    prompt_adherence,
    psnr,
    read_attributes,
    save_gif,
    ssim,
)
from videodit.evaluation.contact_sheet import CAPTION_HEIGHT, FRAME_GAP
from videodit.data.shards import BUCKETS_FILE, ShardWriter
from videodit.evaluation.confusion import confusion_matrix, confusion_sheet
from videodit.evaluation.image_quality import PSNR_CAP_DB
from videodit.evaluation.model_report import (
    BUCKET_METRICS, EvaluationConfig, bucket_metrics, bucket_table, evaluate_buckets, evaluate_pipeline, evaluation_prompts,
    wilson_interval,
)  # fmt: skip
from videodit.models.vae import VAEConfig, VideoVAE
from videodit.sampling import SamplerConfig, prompt_seeds

COMBINATIONS = list(itertools.product(SHAPES, COLOURS, SIZES, DIRECTIONS))  # 168
ATTRIBUTES = ("shape", "colour", "size", "direction")
# (n_frames, height, width): the training resolution, the smallest preset, and a non-square frame.
RESOLUTIONS = [(16, 64, 64), (8, 32, 32), (16, 48, 64)]


def every_clip(n_frames: int, height: int, width: int, seed: int = 0) -> tuple[list[np.ndarray], list[dict]]:
    config = SyntheticConfig(n_frames=n_frames, height=height, width=width)
    rng = np.random.default_rng(seed)
    videos = [render_clip(*combo, config, rng) for combo in COMBINATIONS]
    return videos, [dict(zip(ATTRIBUTES, combo, strict=True)) for combo in COMBINATIONS]


def degrade(video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a decoder might produce: a 3×3 box blur, then Gaussian noise with σ = 10."""
    blurred = ndimage.uniform_filter(video.astype(np.float32), size=(1, 3, 3, 1))
    return np.clip(blurred + rng.normal(0, 10, video.shape), 0, 255).round().astype(np.uint8)


# --- attributes read from pixels -------------------------------------------------------------------


@pytest.mark.parametrize("n_frames,height,width", RESOLUTIONS)
def test_reads_every_attribute_combination_exactly(n_frames, height, width):
    videos, expected = every_clip(n_frames, height, width)
    report = prompt_adherence(videos, expected, SHAPES_DOMAIN)
    wrong = [row for row in report["per_clip"] if any(row[f"read_{a}"] != row[f"expected_{a}"] for a in ATTRIBUTES)]
    assert wrong == []
    assert report["overall"] == 1.0 and report["n_clips"] == 168


@pytest.mark.parametrize("n_frames,height,width", RESOLUTIONS[:2])
def test_reads_blurred_noisy_clips(n_frames, height, width):
    videos, expected = every_clip(n_frames, height, width, seed=1)
    rng = np.random.default_rng(2)
    report = prompt_adherence([degrade(video, rng) for video in videos], expected, SHAPES_DOMAIN)
    # Measured: 1.0 on every attribute at both sizes (and over seeds 0-3).
    for attribute in ATTRIBUTES:
        assert report[attribute] >= 0.95, (attribute, report[attribute])
    assert report["overall"] == 1.0


def test_reading_reports_its_measures():
    config = SyntheticConfig(n_frames=16, height=64, width=64)
    read = read_attributes(render_clip("square", "blue", "large", "right", config, np.random.default_rng(0)), SHAPES_DOMAIN)
    assert read.is_readable
    assert read.fill_ratio == 1.0 and read.row_skewness == 0.0
    assert read.side_fraction == pytest.approx(0.40, abs=1 / 64)
    assert read.foreground_fraction == pytest.approx(0.16, abs=0.01)
    dx, dy = read.displacement_px
    assert dx >= 0.4 * 64 - 1.5 and abs(dy) < 0.5


def test_dim_washed_out_colours_still_read_as_their_hue():
    config = SyntheticConfig(n_frames=8, height=32, width=32)
    clip = render_clip("circle", "magenta", "large", "down", config, np.random.default_rng(0))
    dim = (clip.astype(np.float32) * 0.6).astype(np.uint8)  # (153, 0, 153)
    assert read_attributes(dim, SHAPES_DOMAIN).colour == "magenta"


@pytest.mark.parametrize(
    "video",
    [
        np.zeros((8, 32, 32, 3), np.uint8),
        np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
        np.full((8, 32, 32, 3), (200, 0, 0), np.uint8),
    ],
    ids=["all-black", "uniform-noise", "flat-red"],
)
def test_degenerate_clips_read_as_unknown(video):
    read = read_attributes(video, SHAPES_DOMAIN)
    assert (read.colour, read.shape, read.size, read.direction) == (UNKNOWN,) * 4
    assert not read.is_readable
    features = attribute_features(video)
    assert features.shape == (len(FEATURE_NAMES),) and np.isfinite(features).all()


def test_static_shape_has_no_direction_but_the_rest_reads():
    config = SyntheticConfig(n_frames=8, height=32, width=32)
    first_frame = render_clip("triangle", "yellow", "small", "left", config, np.random.default_rng(0))[:1]
    read = read_attributes(np.repeat(first_frame, 8, axis=0), SHAPES_DOMAIN)
    assert (read.colour, read.shape, read.size, read.direction) == ("yellow", "triangle", "small", UNKNOWN)


def test_unknown_counts_as_wrong_in_adherence():
    videos, expected = every_clip(8, 32, 32)
    videos, expected = videos[:3] + [np.zeros_like(videos[0])], expected[:4]
    report = prompt_adherence(videos, expected, SHAPES_DOMAIN)
    assert report["colour"] == report["shape"] == report["direction"] == 0.75
    assert report["per_clip"][3]["read_shape"] == UNKNOWN


def test_missing_expected_size_is_left_out_of_size_accuracy():
    videos, expected = every_clip(8, 32, 32)
    wrong_size = {**expected[0], "size": "large" if expected[0]["size"] == "small" else "small"}
    report = prompt_adherence(videos[:2], [wrong_size, {**expected[1], "size": None}], SHAPES_DOMAIN)
    assert report["size"] == 0.0  # only the first clip counts
    assert report["shape"] == 1.0
    assert report["overall"] == pytest.approx(0.75)


@pytest.mark.parametrize("bad", [np.zeros((8, 32, 32, 3), np.float32), np.zeros((32, 32, 3), np.uint8)])
def test_wrong_dtype_or_shape_is_named(bad):
    with pytest.raises(ValueError, match="uint8|shape"):
        read_attributes(bad, SHAPES_DOMAIN)


def test_features_separate_different_clips():
    videos, _ = every_clip(8, 32, 32)
    features = np.stack([attribute_features(video) for video in videos])
    assert features.shape == (168, len(FEATURE_NAMES))
    assert len(np.unique(features.round(6), axis=0)) == 168


# --- captions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "caption,expected",
    [
        ("a large red circle moves left", ("red", "circle", "large", "left")),
        ("the small blue square slides up", ("blue", "square", "small", "up")),
        ("a green triangle moving to the right on a black background", ("green", "triangle", None, "right")),
        ("small cyan square travelling upwards", ("cyan", "square", "small", "up")),
        ("a large triangle, magenta, heading down", ("magenta", "triangle", "large", "down")),
        ("video of a small white circle going right across a black screen", ("white", "circle", "small", "right")),
        ("A Large YELLOW Circle Moves Downwards.", ("yellow", "circle", "large", "down")),
    ],
)
def test_caption_parser_reads_the_example_captions(caption, expected):
    colour, shape, size, direction = expected
    assert attributes_from_caption(caption, SHAPES_DOMAIN) == {"colour": colour, "shape": shape, "size": size, "direction": direction}


def test_caption_parser_reads_every_template_and_combination():
    for template, (shape, colour, size, direction) in itertools.product(CAPTION_TEMPLATES, COMBINATIONS):
        towards = TOWARDS[direction]
        caption = template.format(shape=shape, colour=colour, size=size, direction=direction, towards=towards)
        size_named = size if "{size}" in template else None
        wanted = {"colour": colour, "shape": shape, "size": size_named, "direction": direction}
        assert attributes_from_caption(caption, SHAPES_DOMAIN) == wanted, caption


def test_caption_with_two_colours_is_an_error():
    with pytest.raises(ValueError, match="colours"):
        attributes_from_caption("a red blue circle moves left", SHAPES_DOMAIN)


def test_evaluation_prompts_span_the_trained_domain_and_read_back():
    prompts = evaluation_prompts(84, SHAPES_DOMAIN)
    assert prompts[0] == "a large red square moves left"  # "a small red circle moves left" is held out
    assert evaluation_prompts(8, SHAPES_DOMAIN) == prompts[:8]
    named = [attributes_from_caption(prompt, SHAPES_DOMAIN) for prompt in prompts]
    combos = {(n["shape"], n["colour"], n["size"], n["direction"]) for n in named}
    assert len(combos) == len(prompts) > 70 and combos <= set(SHAPES_DOMAIN.trained_combinations())
    assert {n["colour"] for n in named} == set(COLOURS) and {n["direction"] for n in named} == set(DIRECTIONS)


def test_the_unseen_split_asks_for_held_out_combinations_in_words_no_training_caption_uses():
    held_out = SHAPES_DOMAIN.held_out_combinations
    assert len(held_out) == 16 and len(SHAPES_DOMAIN.trained_combinations()) == 168 - 16
    for i, attribute in enumerate(("shape", "colour", "size", "direction")):  # every value held out somewhere
        assert {c[i] for c in held_out} == set(SHAPES_DOMAIN.names()[attribute])
    prompts = SHAPES_DOMAIN.unseen_prompts()
    assert [tuple(attributes_from_caption(p, SHAPES_DOMAIN)[a] for a in ("shape", "colour", "size", "direction")) for p in prompts] == list(held_out)
    training_words = {w for t in CAPTION_TEMPLATES for w in re.findall(r"[a-z]+", t)} | {w for v in TOWARDS.values() for w in v.split()}
    training_words |= {w for synonyms in TRAINED_SYNONYMS.values() for w in synonyms}
    unseen_words = {w for p in prompts for w in re.findall(r"[a-z]+", p)} - set(SHAPES_DOMAIN.names()["colour"]) - set(SHAPES_DOMAIN.names()["shape"])
    assert set(SHAPES_DOMAIN.held_out_synonyms) <= unseen_words and not set(SHAPES_DOMAIN.held_out_synonyms) & training_words
    assert not any(t.format(size="", colour="", shape="", direction="", towards="") in p for t in CAPTION_TEMPLATES for p in prompts)


def test_holding_out_every_combination_of_a_value_is_an_error():
    every_red = tuple(c for c in SHAPES_DOMAIN.combinations() if c[1] == "red")
    with pytest.raises(ValueError, match=r"leaves colour \['red'\] untrained"):
        dataclasses.replace(SHAPES_DOMAIN, held_out_combinations=every_red)


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert all(np.isnan(wilson_interval(0, 0)))


def test_confusion_matrix_counts_what_was_drawn_for_what_was_asked():
    rows = [{"expected_shape": a, "read_shape": r} for a, r in
            [("circle", "circle"), ("circle", "square"), ("square", "square"), ("triangle", "unknown"), (None, "circle")]]  # fmt: skip
    counts = confusion_matrix(rows, "shape", ("circle", "square", "triangle"))
    assert counts.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    sheet = confusion_sheet([{**r, **{f"{k}_{a}": None for k in ("expected", "read") for a in ("colour", "size", "direction")}} for r in rows], SHAPES_DOMAIN)
    assert sheet.width > 4 * 100 and sheet.height > 60


class RecordingPipeline:
    """Stands in for a trained DiTModule: remembers what evaluation asks it for and draws black clips."""

    def __init__(self):
        self.vae, self.calls = VideoVAE(VAEConfig(channels=(8, 16, 16, 16))), []

    def generate(self, prompts, seeds, sampler):
        self.calls.append((list(prompts), prompt_seeds(seeds, len(prompts)), sampler))
        return np.zeros((len(prompts), 8, 32, 32, 3), np.uint8)


def test_evaluation_samples_with_the_sampler_it_is_given_and_prompt_i_at_seed_plus_i(tmp_path):
    writer = ShardWriter(tmp_path, clips_per_shard=4)
    rng = np.random.default_rng(0)
    for i, combo in enumerate(COMBINATIONS[:2]):
        writer.add(render_clip(*combo, SyntheticConfig(n_frames=8, height=32, width=32), rng), {
            "clip_id": f"clip{i}", "caption": "a large red circle moves left", "split": "val", "sha256": "", "path": "",
            "attributes": "{}",
        })  # fmt: skip
    writer.close()
    pipeline, sampler = RecordingPipeline(), SamplerConfig(steps=2, guidance=3.0, shift=2.0)
    metrics, _ = evaluate_pipeline(pipeline, tmp_path, EvaluationConfig(n_prompts=5, seeds_per_prompt=2, seed=10, batch_size=2), sampler, SHAPES_DOMAIN)
    assert {call[2] for call in pipeline.calls} == {sampler}
    unseen, seen = pipeline.calls[:16], pipeline.calls[16:21]  # 16 held-out prompts × 2 seeds, then 5 × 2, by twos
    for calls, prompts in ((unseen, SHAPES_DOMAIN.unseen_prompts()), (seen, evaluation_prompts(5, SHAPES_DOMAIN))):
        asked, seeds = ([v for call in calls for v in call[i]] for i in (0, 1))
        assert asked == [p for p in prompts for _ in range(2)] and seeds == list(range(10, 10 + 2 * len(prompts)))
    # Black clips read as unknown: every attribute wrong, with 95% intervals from 0 up, tighter over more samples
    # (plain names are the unseen split: 32 samples; seen: 10).
    assert metrics["overall"] == metrics["seen_overall"] == 0.0
    assert metrics["shape_ci_low"] == 0.0 and 0.0 < metrics["shape_ci_high"] < metrics["seen_shape_ci_high"]


class IdentityVAE(torch.nn.Module):
    def forward(self, x, sample=False):
        return x, None


class DrawingPipeline:
    """A perfect model: draws what each prompt asks at the size it is asked for and reconstructs exactly."""

    def __init__(self):
        self.vae, self.sizes = IdentityVAE(), []

    def generate(self, prompts, seeds, sampler, frames=9, height=32, width=32):
        self.sizes.append((frames, height, width))
        config = SyntheticConfig(n_frames=frames, height=height, width=width)
        asked = [attributes_from_caption(p, SHAPES_DOMAIN) for p in prompts]
        return np.stack([render_clip(*(a[k] for k in ATTRIBUTES), config, np.random.default_rng(seed))
                         for a, seed in zip(asked, prompt_seeds(seeds, len(prompts)))])  # fmt: skip


def test_every_video_bucket_is_scored_at_its_own_size_and_the_default_row_is_the_promoting_scores(tmp_path):
    default, landscape, portrait = Bucket(32, 32, 9), Bucket(24, 48, 9), Bucket(48, 24, 5)
    writer, rng = ShardWriter(tmp_path, clips_per_shard=4), np.random.default_rng(0)
    for i, (combo, bucket, split) in enumerate([(COMBINATIONS[0], default, "val"), (COMBINATIONS[50], default, "val"),
                                                (COMBINATIONS[9], landscape, "train"),  # landscape: no validation clip
                                                (COMBINATIONS[3], portrait, "val"), (COMBINATIONS[120], portrait, "val")]):  # fmt: skip
        config = SyntheticConfig(n_frames=bucket.frames, height=bucket.height, width=bucket.width)
        writer.add(render_clip(*combo, config, rng), {
            "clip_id": f"clip{i}", "caption": CAPTION_TEMPLATES[0].format(**dict(zip(ATTRIBUTES, combo))), "split": split,
            "sha256": "", "path": "", "attributes": "{}", "bucket": bucket.name,
        })  # fmt: skip
    writer.close()
    (tmp_path / BUCKETS_FILE).write_text(json.dumps({"default": default.name}))
    pipeline, settings, sampler = DrawingPipeline(), EvaluationConfig(seeds_per_prompt=2, prompts_per_other_bucket=3), SamplerConfig()
    scored = evaluate_pipeline(pipeline, tmp_path, settings, sampler, SHAPES_DOMAIN)
    pipeline.sizes.clear()
    table = (default, landscape, portrait, Bucket(32, 32, 1))  # the image bucket is no row
    rows = evaluate_buckets(pipeline, tmp_path, table, settings, sampler, SHAPES_DOMAIN, scored)

    assert [(r["bucket"], r["orientation"], r["prompts"], r["val_clips"]) for r in rows] == [
        ("9x32x32", "square", 32, 2), ("9x24x48", "landscape", 6, 0), ("5x48x24", "portrait", 6, 2)]
    assert {size for size in pipeline.sizes} == {(9, 24, 48), (5, 48, 24)}  # the default bucket is not sampled again
    assert {name: rows[0][name] for name in BUCKET_METRICS} == {name: scored[0][name] for name in BUCKET_METRICS}
    for row in rows:  # "moves left" read back from a portrait clip as from a square one
        assert all(row[name] == 1.0 for name in ("overall", "colour", "shape", "size", "direction")), row
    assert rows[2]["vae_psnr"] == PSNR_CAP_DB and rows[2]["frechet_distance"] >= 0.0
    assert np.isnan(rows[1]["vae_psnr"]) and np.isnan(rows[1]["frechet_distance"])
    flat = bucket_metrics(rows)
    assert len(flat) == 3 * len(BUCKET_METRICS) and flat["bucket/5x48x24/direction"] == 1.0
    markdown = bucket_table(rows).splitlines()
    assert len(markdown) == 2 + 3 and "5x48x24" in markdown[-1] and "portrait" in markdown[-1]


# --- a domain given as data -----------------------------------------------------------------------

TWO_COLOURS = Domain(
    shapes=("circle", "square"), colours={"crimson": (200, 0, 0), "navy": (0, 0, 128)},
    sizes={"tiny": 0.1, "medium": 0.25, "huge": 0.4}, directions={"east": (1, 0), "west": (-1, 0)},
    prompt_template="{size} {colour} {shape} heading {direction}", synonyms={"eastwards": "east"},
)  # fmt: skip


def test_clips_and_captions_read_against_the_domain_they_are_given():
    config = SyntheticConfig(n_frames=16, height=64, width=64)
    clip = render_clip("square", "red", "large", "right", config, np.random.default_rng(0))
    read = read_attributes(clip, TWO_COLOURS)
    assert (read.colour, read.shape, read.size, read.direction) == ("crimson", "square", "huge", "east")
    wanted = {"colour": "navy", "shape": "circle", "size": "tiny", "direction": "east"}
    assert attributes_from_caption("a tiny navy circle going eastwards", TWO_COLOURS) == wanted
    assert attributes_from_caption("a large red triangle moves right", TWO_COLOURS) == dict.fromkeys(wanted)
    assert evaluation_prompts(2, TWO_COLOURS) == ["tiny crimson circle heading east", "medium crimson square heading east"]


def test_a_domain_the_reader_cannot_measure_is_an_error():
    clip = np.zeros((8, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="hexagon"):
        read_attributes(clip, Domain(("hexagon",), {"red": (255, 0, 0)}, {"small": 0.2}, {"left": (-1, 0)}, "{shape}"))
    with pytest.raises(ValueError, match="sideways"):
        Domain(("circle",), {"red": (255, 0, 0)}, {"small": 0.2}, {"left": (-1, 0)}, "{shape}", {"aside": "sideways"})


# --- Fréchet distance ------------------------------------------------------------------------------


def test_frechet_is_zero_for_identical_sets_and_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(150, 6)) * 1.5 + 0.3
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, b) > 1.0


def test_frechet_of_a_shifted_set_is_the_squared_shift():
    a = np.random.default_rng(0).normal(size=(100, 4))
    shift = np.array([1.0, -2.0, 0.0, 0.5])
    assert frechet_distance(a, a + shift) == pytest.approx(shift @ shift, rel=1e-9)  # 5.25


def test_frechet_matches_the_one_dimensional_formula():
    # Means 1 and 5, sample variances 2 and 4: d = (1-5)² + (√2 - √4)² = 22 - 4√2.
    real, gen = np.array([[0.0], [2.0]]), np.array([[3.0], [5.0], [7.0]])
    assert frechet_distance(real, gen) == pytest.approx(22 - 4 * np.sqrt(2), rel=1e-12)


def test_frechet_handles_singular_covariances_and_rejects_bad_input():
    rng = np.random.default_rng(0)
    few = rng.normal(size=(5, 21))  # fewer samples than dimensions
    assert np.isfinite(frechet_distance(few, rng.normal(size=(7, 21))))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(few, rng.normal(size=(7, 3)))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(few[:1], few)


def test_frechet_video_distance_ranks_broken_clips_furthest():
    real, _ = every_clip(8, 32, 32, seed=0)
    other_real, _ = every_clip(8, 32, 32, seed=1)
    assert frechet_video_distance(real, real) == pytest.approx(0.0, abs=1e-9)
    rng = np.random.default_rng(0)
    candidates = {
        "fresh": other_real,
        "noisy": [degrade(video, rng) for video in other_real],
        "20 blank": [np.zeros_like(video) for video in other_real[:20]] + other_real[20:],
    }
    real_features = np.stack([attribute_features(video) for video in real])
    scores = [
        frechet_distance(real_features, np.stack([attribute_features(video) for video in videos]))
        for videos in candidates.values()
    ]
    assert scores == sorted(scores), dict(zip(candidates, scores, strict=True))


# --- PSNR / SSIM -----------------------------------------------------------------------------------


def test_psnr_known_values():
    a = np.full((2, 16, 16, 3), 100, np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 10) == pytest.approx(10 * np.log10(255**2 / 100))  # MSE 100: 28.13 dB


def test_ssim_known_values():
    a = np.full((2, 16, 16, 3), 100, np.uint8)
    b = np.full_like(a, 110)
    # Flat frames have no variance, so SSIM is the luminance term alone.
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), rel=1e-9)
    config = SyntheticConfig(n_frames=8, height=32, width=32)
    clip = render_clip("circle", "red", "large", "up", config, np.random.default_rng(0))
    assert ssim(clip, clip) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    assert 0.0 < ssim(clip, degrade(clip, rng)) < 0.9


def test_image_quality_rejects_mismatched_videos():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((2, 16, 16, 3), np.uint8), np.zeros((2, 16, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="larger than 11"):
        ssim(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8))


# --- pictures --------------------------------------------------------------------------------------


def test_contact_sheet_size_and_pixels():
    videos, expected = every_clip(8, 32, 32)
    sheet = contact_sheet(videos[:3], [str(e) for e in expected[:3]], frames_per_row=8)
    # 32 px frames scale ×3 to 96 px; each row has a caption band on top; gaps between frames and rows.
    assert sheet.size == (8 * 96 + 7 * FRAME_GAP, 3 * (CAPTION_HEIGHT + 96) + 2 * FRAME_GAP)
    pixels = np.asarray(sheet)
    first_frame_scaled = videos[0][0].repeat(3, axis=0).repeat(3, axis=1)
    np.testing.assert_array_equal(pixels[CAPTION_HEIGHT : CAPTION_HEIGHT + 96, :96], first_frame_scaled)
    last_frame_scaled = videos[0][-1].repeat(3, axis=0).repeat(3, axis=1)
    np.testing.assert_array_equal(pixels[CAPTION_HEIGHT : CAPTION_HEIGHT + 96, -96:], last_frame_scaled)
    assert pixels[:CAPTION_HEIGHT].max() > 200  # caption text was drawn

    uncaptioned = contact_sheet([np.zeros((16, 64, 64, 3), np.uint8)] * 2, None, frames_per_row=4)
    assert uncaptioned.size == (4 * 128 + 3 * FRAME_GAP, 2 * 128 + FRAME_GAP)


def test_gif_and_data_uri(tmp_path):
    videos, _ = every_clip(8, 32, 32)
    path = save_gif(videos[0], tmp_path / "clip.gif", fps=8)
    with Image.open(path) as gif:
        assert gif.n_frames == 8 and gif.size == (96, 96)
    uri = png_data_uri(contact_sheet(videos[:2], None), max_width=300)
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as png:
        assert png.format == "PNG" and png.width == 300
