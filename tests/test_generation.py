"""The torch-free generator, its input checks, the files a run writes and the `videodit generate` CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.export import Dim

from tiny_bundle import SAMPLER, tiny_bundle
from videodit.cli import main
from videodit.evaluation.image_quality import psnr
from videodit.export.onnx_export import TextEncoderGraph, _export
from videodit.generation import OnnxVideoGenerator
from videodit.generation.inputs import read_video
from videodit.generation.onnx_generator import physical_cores
from videodit.models import generate_videos
from videodit.sampling import SamplerConfig, timestep_schedule

NON_ASCII_PROMPT = "un cercle rouge se déplace à gauche 🚀"
LONG_PROMPT = "a red circle moves left " * 40
FRAMES, HEIGHT, WIDTH = 9, 32, 32


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def bundle_dir(bundle):
    return bundle.path


@pytest.fixture(scope="module")
def generator(bundle_dir):
    return OnnxVideoGenerator(bundle_dir)


def test_generates_one_uint8_clip_per_prompt_reproducibly(generator):
    videos = generator.generate(["a red circle moves left", "a blue square moves up"], [7, 8], steps=2)
    assert [v.shape for v in videos] == [(FRAMES, HEIGHT, WIDTH, 3)] * 2
    assert all(v.dtype == np.uint8 for v in videos)
    again = generator.generate(["a blue square moves up"], [8], steps=2)
    np.testing.assert_allclose(again[0], videos[1], atol=1)  # a seed gives its clip whatever the batch (test_export)


def test_sessions_run_with_the_recorded_settings(bundle_dir):
    generator = OnnxVideoGenerator(bundle_dir, threads=1)
    options = generator.dit.get_session_options()
    assert options.intra_op_num_threads == generator.settings["intra_op_num_threads"] == 1
    assert options.graph_optimization_level.name == generator.settings["graph_optimization_level"]
    assert options.enable_mem_pattern and options.enable_cpu_mem_arena
    for session in (generator.text_encoder, generator.condition, generator.dit, generator.vae_decoder, generator.vae_encoder):
        config = session.get_session_options().get_session_config_entry
        # Each graph's threads spin while it runs and stop when it returns.
        assert config("session.intra_op.allow_spinning") == config("session.force_spinning_stop") == "1"


@pytest.mark.parametrize(("frames", "height", "width"), [(9, 32, 32), (5, 24, 48), (9, 48, 24), (1, 32, 32)])
def test_trained_buckets_generate_without_a_warning(generator, frames, height, width):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (video,) = generator.generate(["a green triangle moves down"], [0], steps=1, frames=frames, height=height,
                                      width=width)  # fmt: skip
    assert video.shape == (frames, height, width, 3)


def test_other_sizes_within_the_bundle_limits_warn_that_they_were_not_trained(generator):
    with pytest.warns(UserWarning, match=r"24x16 × 13 frames was not trained \(trained: 32x32 × 9 frames, 32x32 × 5"):
        (video,) = generator.generate(["a green triangle moves down"], [0], steps=1, frames=13, height=16, width=24)
    assert video.shape == (13, 16, 24, 3)


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_refused(generator, prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        generator.generate([prompt], [0], steps=1)


def test_long_prompt_is_truncated_with_a_warning(generator):
    with pytest.warns(UserWarning, match="prompt truncated to 32 tokens"):
        (video,) = generator.generate([LONG_PROMPT], [0], steps=1)
    assert video.shape == (FRAMES, HEIGHT, WIDTH, 3)


def test_captions_are_padded_to_the_longest_prompt_with_the_same_values(generator, bundle):
    prompts = ["a red circle moves left", "a large blue square moves up slowly", ""]
    tokens, mask = generator.encode_text(prompts)
    lengths = mask.sum(1)
    assert mask.shape[1] == lengths.max() < 32 and lengths.min() == 2
    full_tokens, full_mask = bundle.text_encoder.encode(prompts)  # padded to max_tokens
    np.testing.assert_array_equal(full_mask[:, : mask.shape[1]].numpy(), mask)
    np.testing.assert_allclose(tokens[mask], full_tokens.numpy()[:, : mask.shape[1]][mask], atol=1e-5)


def test_bundle_with_a_fixed_caption_length_still_generates(bundle, bundle_dir, tmp_path):
    """Bundles exported before captions became variable-length take exactly max_tokens."""
    old = tmp_path / "bundle"
    shutil.copytree(bundle_dir, old)
    text_encoder = bundle.text_encoder
    ids = torch.zeros(2, text_encoder.max_tokens, dtype=torch.int64)
    batch = {0: Dim("batch", min=1, max=8)}
    _export(TextEncoderGraph(text_encoder), (ids, torch.ones_like(ids)), old / "text_encoder.onnx",
            {"inputs": ["input_ids", "attention_mask"], "outputs": ["tokens"]},
            {"input_ids": batch, "attention_mask": batch})  # fmt: skip
    generator = OnnxVideoGenerator(old)
    assert generator.encode_text(["a red circle moves left"])[1].shape == (1, 32)
    (video,) = generator.generate(["a red circle moves left"], [0], steps=1)
    assert video.shape == (FRAMES, HEIGHT, WIDTH, 3)


def test_non_ascii_prompt_generates(generator):
    (video,) = generator.generate([NON_ASCII_PROMPT], [0], steps=1)
    assert video.shape == (FRAMES, HEIGHT, WIDTH, 3)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ({"height": 30}, "height=30 is not supported by this model: use a multiple of 8 from 8 to 192"),
        ({"width": 256}, "width=256 is not supported by this model: use a multiple of 8 from 8 to 192"),
        ({"frames": 3}, r"frames=3 is not supported by this model: use one of 1, 5, 9, ... 45 \(steps of 4\)"),
        ({"frames": 49}, "frames=49 is not supported"),  # past 4 × the longest bucket's latent frames
    ],
)
def test_bad_sizes_name_the_allowed_values(generator, size, message):
    with pytest.raises(ValueError, match=message):
        generator.generate(["a red circle"], [0], steps=1, **size)


def test_seeds_must_match_prompts(generator):
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generator.generate(["a", "b"], [0])


def test_an_int_seed_gives_prompt_i_seed_plus_i(generator):
    prompts = ["a red circle moves left", "a blue square moves up"]
    np.testing.assert_array_equal(generator.generate(prompts, 5, steps=1), generator.generate(prompts, [5, 6], steps=1))


def edited_bundle(bundle_dir, tmp_path, edit) -> OnnxVideoGenerator:
    """A generator over a copy of the tiny bundle whose bundle.json went through `edit(spec)`."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    spec = json.loads((copy / "bundle.json").read_text())
    edit(spec)
    (copy / "bundle.json").write_text(json.dumps(spec))
    return OnnxVideoGenerator(copy)


def test_the_generator_samples_along_the_timesteps_stored_in_the_bundle(bundle, bundle_dir, generator, tmp_path):
    shifted = SamplerConfig(SAMPLER.steps, shift=3.0).timesteps()
    # Only the list changes: the stored shift stays 1, so a generator deriving the schedule again would not see it.
    edited = edited_bundle(bundle_dir, tmp_path, lambda spec: spec["sampler"].update(timesteps=shifted.tolist()))
    prompt = ["a red circle moves left"]
    (video,) = edited.generate(prompt, [0])
    assert not np.array_equal(video, generator.generate(prompt, [0])[0])
    (expected,) = generate_videos(bundle.vae, bundle.dit, bundle.text_encoder, prompt, [0], shifted, SAMPLER.guidance,
                                  (FRAMES, HEIGHT, WIDTH), 0.25, 2.0)  # fmt: skip
    assert psnr(video, expected) >= 40.0


def test_another_step_count_gets_its_schedule_at_the_bundles_shift(bundle_dir, tmp_path):
    edited = edited_bundle(bundle_dir, tmp_path, lambda spec: spec["sampler"].update(shift=3.0))
    sampler = edited.sampler(steps=5)
    assert sampler == SamplerConfig(5, SAMPLER.guidance, 3.0)
    np.testing.assert_array_equal(edited.timesteps(sampler), timestep_schedule(5, 3.0))


def test_a_bundle_of_an_older_format_is_refused_with_what_to_do(bundle_dir, tmp_path):
    with pytest.raises(ValueError, match="format_version 1, this videodit reads 5: export the bundle again"):
        edited_bundle(bundle_dir, tmp_path, lambda spec: spec.update(format_version=1))


def test_stored_timesteps_must_fit_the_step_count(bundle_dir, tmp_path):
    with pytest.raises(ValueError, match="2 timesteps for 3 steps"):
        edited_bundle(bundle_dir, tmp_path, lambda spec: spec["sampler"].update(timesteps=[1.0, 0.0]))


def test_generator_runs_where_torch_cannot_be_imported(bundle_dir, tmp_path):
    script = textwrap.dedent(f"""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")

        sys.meta_path.insert(0, NoTorch())
        from videodit.generation import GeneratedClip, OnnxVideoGenerator, write_outputs

        (video,) = OnnxVideoGenerator({str(bundle_dir)!r}).generate(["a red circle"], [0], steps=1)
        write_outputs(__import__("pathlib").Path({str(tmp_path)!r}), [GeneratedClip("clip", "a red circle", 0, video)],
                      8, {{}})
        assert "torch" not in sys.modules
        print(video.shape)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "(9, 32, 32, 3)" in result.stdout
    assert (tmp_path / "clip.mp4").is_file()


def test_cli_writes_video_gif_sheet_and_manifest(bundle_dir, tmp_path):
    out = tmp_path / "out.mp4"
    code = main(["generate", "a red circle moves left", "-o", str(out), "--model", str(bundle_dir), "--steps", "2",
                 "--seed", "3", "--size", "48x24", "--frames", "5"])  # fmt: skip
    assert code == 0
    assert out.stat().st_size > 0 and (tmp_path / "out.gif").is_file() and (tmp_path / "contact_sheet.png").is_file()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["videos"] == [{"prompt": "a red circle moves left", "seed": 3, "mp4": "out.mp4", "gif": "out.gif"}]
    assert (manifest["steps"], manifest["frames"], manifest["height"], manifest["width"]) == (2, 5, 24, 48)
    assert (manifest["guidance"], manifest["shift"]) == (SAMPLER.guidance, SAMPLER.shift)
    assert manifest["model_versions"] == {"model_version": "tiny-test"}
    assert manifest["precision"] == "fp32"
    # The sessions' tuning: one intra-op thread per physical core, full graph optimisation.
    assert manifest["session_settings"]["intra_op_num_threads"] == physical_cores() >= 1
    assert manifest["session_settings"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert manifest["timings"]["seconds_per_video"] > 0


def test_cli_writes_an_image_bucket_as_a_one_frame_mp4_and_gif(bundle_dir, generator, tmp_path):
    out = tmp_path / "image.mp4"
    assert main(["generate", "a red circle", "-o", str(out), "--model", str(bundle_dir), "--steps", "1", "--frames", "1"]) == 0
    assert json.loads((tmp_path / "manifest.json").read_text())["frames"] == 1
    assert read_video(out, HEIGHT, WIDTH, generator.spec.fps).shape == (1, HEIGHT, WIDTH, 3)  # a valid MP4 of one frame
    assert Image.open(tmp_path / "image.gif").n_frames == 1


def test_cli_batch_file_writes_one_clip_per_line(bundle_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"a red circle moves left\n\n{NON_ASCII_PROMPT}\n", encoding="utf-8")
    out = tmp_path / "batch"
    assert main(["generate", "--batch", str(prompts), "-o", str(out), "--model", str(bundle_dir), "--steps", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    expected = [("a red circle moves left", 0), (NON_ASCII_PROMPT, 1)]
    assert [(v["prompt"], v["seed"]) for v in manifest["videos"]] == expected
    assert (out / "001.mp4").is_file() and (out / "001.gif").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/nonexistent/bundle"], "model folder not found: /nonexistent/bundle"),
        (["--size", "30x32"], "width=30 is not supported"),
        (["--frames", "6"], "frames=6 is not supported by this model: use one of 1, 5, 9, ... 45 (steps of 4)"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(bundle_dir, tmp_path, capsys, args, message):
    argv = ["generate", "a red circle", "-o", str(tmp_path / "x.mp4"), "--model", str(bundle_dir), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_defaults_to_the_bundles_size_and_warns_of_an_untrained_one(bundle_dir, tmp_path, capsys):
    assert main(["generate", "a red circle", "-o", str(tmp_path / "a.mp4"), "--model", str(bundle_dir), "--steps", "1"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["frames"], manifest["height"], manifest["width"]) == (FRAMES, HEIGHT, WIDTH)
    assert main(["generate", "a red circle", "-o", str(tmp_path / "b" / "b.mp4"), "--model", str(bundle_dir),
                 "--steps", "1", "--size", "40x32"]) == 0  # fmt: skip
    assert "videodit: warning: 40x32 × 9 frames was not trained" in capsys.readouterr().err  # one line: tests/test_cli.py


def test_cli_refuses_an_empty_prompt(bundle_dir, capsys):
    assert main(["generate", "", "--model", str(bundle_dir)]) == 2
    assert "prompt is empty" in capsys.readouterr().err


def test_cli_names_the_uri_and_store_of_an_unknown_model(tmp_path, monkeypatch, capsys):
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=store, registry_uri=store).search_registered_models()  # creates the store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert main(["generate", "a red circle", "--model", "models:/videodit-onnx@champion"]) == 2
    err = capsys.readouterr().err
    assert "cannot resolve models:/videodit-onnx@champion in tracking store " + store in err


def test_cli_names_a_missing_tracking_store(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("VIDEODIT_PROJECT_DIR", str(tmp_path))
    assert main(["generate", "a red circle"]) == 2
    assert f"tracking store sqlite:///{tmp_path / 'mlflow.db'} does not exist" in capsys.readouterr().err


def test_the_shapes_prompt_rewriter_expands_short_prompts_into_the_caption_template():
    from videodit.generation.prompt_rewriter import expand_shapes_prompt

    assert expand_shapes_prompt("red square right") == "a red square moves right"
    assert expand_shapes_prompt("Tiny crimson disc, upwards!") == "a small red circle moves up"  # synonyms to trained words
    assert expand_shapes_prompt("green, going left") == "a green shape moves left"
    assert expand_shapes_prompt("something else entirely") == "something else entirely"
