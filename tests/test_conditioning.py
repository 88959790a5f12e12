"""Frame conditioning (`videodit.conditioning`): training draws, the sampler keeping given latents, every mode in
torch and onnxruntime alike, extension and long videos, bad conditions."""

import json
import re

import numpy as np
import pytest
import torch

from tiny_bundle import SAMPLER, tiny_bundle
from videodit.conditioning import (
    CONTEXT_LATENT_FRAMES, FrameCondition, context_frames, extend_video, given_latents, long_video, long_video_seams,
    start_latents,
)
from videodit.evaluation.continuity import seam_continuity
from videodit.evaluation.image_quality import psnr
from videodit.generation import OnnxVideoGenerator
from videodit.models import generate_videos
from videodit.models.rectified_flow import conditioning_frames, rectified_flow_loss, sample_euler, vae_encoder
from videodit.models.vae import to_video_tensor
from videodit.sampling import initial_noise, to_uint8_videos

FRAMES, HEIGHT, WIDTH, R = 9, 32, 32, 4  # the tiny preset's clip: 3 latent frames
MIN_PSNR_DB = 40.0  # torch against onnxruntime, as tests/test_export.py


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def generator(bundle):
    return OnnxVideoGenerator(bundle.path, providers=["CPUExecutionProvider"])


def moving_square(frames: int, height: int = HEIGHT, width: int = WIDTH, colour=(220, 40, 40)) -> np.ndarray:
    video = np.zeros((frames, height, width, 3), np.uint8)
    for i in range(frames):
        video[i, 10:18, 2 + i : 10 + i] = colour
    return video


def test_training_gives_each_mode_to_its_share_of_samples_and_leaves_a_frame_noisy():
    generator = torch.Generator().manual_seed(0)
    given = conditioning_frames(4000, 5, 0.5, generator=generator)
    conditioned = given.any(dim=1)
    assert conditioned.float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert not given.all(dim=1).any()
    rows = [tuple(row.tolist()) for row in given[conditioned]]
    # first (k = 1 of first k too), first k (k = 2, 3, 4), last k (k = 1, 2, 3, 4), first + last
    assert set(rows) == {(1, 0, 0, 0, 0), (1, 1, 0, 0, 0), (1, 1, 1, 0, 0), (1, 1, 1, 1, 0), (0, 0, 0, 0, 1),
                         (0, 0, 0, 1, 1), (0, 0, 1, 1, 1), (0, 1, 1, 1, 1), (1, 0, 0, 0, 1)}  # fmt: skip
    # The masks extension gives a 5-latent-frame window (4 first, 3 last) are the most frequent of their modes:
    # half the k of those modes are the context, the other half uniform over 1..4.
    share = {pattern: rows.count(pattern) / len(rows) for pattern in set(rows)}
    assert share[(1, 1, 1, 1, 0)] == pytest.approx(0.25 * (0.5 + 0.5 / 4), abs=0.03)
    assert share[(0, 1, 1, 1, 1)] == pytest.approx(0.25 * 0.5 / 4, abs=0.02)
    assert share[(0, 0, 1, 1, 1)] == pytest.approx(0.25 * (0.5 + 0.5 / 4), abs=0.03)
    assert not conditioning_frames(100, 5, 0.0, generator=generator).any()
    assert not conditioning_frames(100, 1, 1.0, generator=generator).any()  # an image has no frame to give


def test_the_loss_ignores_given_frames_and_without_conditioning_is_the_plain_loss(bundle):
    dit = bundle.dit
    latents, text = torch.randn(4, 4, 3, 4, 4), torch.randn(4, 5, 384)
    mask = torch.ones(4, 5, dtype=torch.bool)

    def loss(**kwargs):
        return rectified_flow_loss(dit, latents, text, mask, generator=torch.Generator().manual_seed(1), **kwargs).item()

    assert loss(condition_fraction=0.0) == pytest.approx(loss(), rel=1e-6)
    conditioned = loss(condition_fraction=1.0)
    # The given frames sit clean in x_t, so their data enters the model; but their own error is not counted:
    # make the model's output on given frames wildly wrong and the loss stays the same.

    class WrongOnGivenFrames(torch.nn.Module):
        def forward(self, x, t, text, text_mask):
            velocity = dit(x, t, text, text_mask)
            return torch.where((t == 0)[:, None, :, None, None], velocity + 1e3, velocity)

    wrong = rectified_flow_loss(WrongOnGivenFrames(), latents, text, mask, generator=torch.Generator().manual_seed(1),
                                condition_fraction=1.0)  # fmt: skip
    assert wrong.item() == pytest.approx(conditioned, rel=1e-5)


def test_given_latent_frames_come_out_of_the_sampler_exactly(bundle):
    encode = vae_encoder(bundle.vae)
    text, mask = bundle.text_encoder.encode(["a red square moves right"])
    null_text, null_mask = bundle.text_encoder.encode([""])
    image = moving_square(1)
    for condition, given_index in ((FrameCondition(first=image), [0]), (FrameCondition(last=image), [2]),
                                   (FrameCondition(first=moving_square(5)), [0, 1])):  # fmt: skip
        latents, given = given_latents([condition], (4, 3, 4, 4), R, (HEIGHT, WIDTH), encode)
        assert given[0].nonzero()[0].tolist() == given_index
        start = torch.from_numpy(start_latents(initial_noise([0], (4, 3, 4, 4)), latents, given))
        out = sample_euler(bundle.dit, start, text, mask, null_text, null_mask, SAMPLER.timesteps(), SAMPLER.guidance,
                           torch.from_numpy(latents), torch.from_numpy(given))  # fmt: skip
        torch.testing.assert_close(out[:, :, given[0]], torch.from_numpy(latents)[:, :, given[0]], rtol=0, atol=0)
        assert not torch.allclose(out[:, :, ~given[0]], start[:, :, ~given[0]])


def test_an_animated_image_starts_with_the_image_through_the_vae(bundle):
    image = moving_square(1)
    (video,) = generate_videos(bundle.vae, bundle.dit, bundle.text_encoder, ["a red square moves right"], [0],
                               SAMPLER.timesteps(), SAMPLER.guidance, (FRAMES, HEIGHT, WIDTH),
                               conditions=[FrameCondition(first=image)])  # fmt: skip
    with torch.no_grad():  # the image alone through the VAE: the causal decoder's frame 0 sees latent frame 0 only
        round_trip = bundle.vae.decode(bundle.vae.encode(to_video_tensor(image)[None]).mean).clamp(-1, 1)
    np.testing.assert_array_equal(video[0], to_uint8_videos(round_trip.numpy())[0, 0])


@pytest.mark.parametrize("mode", ["image", "extend", "end_image", "interpolate"])
def test_torch_and_onnxruntime_make_the_same_conditioned_video(bundle, generator, mode):
    image, clip = moving_square(1), moving_square(5)
    condition = {"image": FrameCondition(first=image), "extend": FrameCondition(first=clip),
                 "end_image": FrameCondition(last=image[:, :, ::-1].copy()),
                 "interpolate": FrameCondition(first=image, last=image[:, :, ::-1].copy())}[mode]  # fmt: skip
    prompts = ["a red square moves right", "a large blue circle moves up"]
    in_onnx = generator.generate(prompts, [3, 4], conditions=[condition, None])
    in_torch = generate_videos(bundle.vae, bundle.dit, bundle.text_encoder, prompts, [3, 4], SAMPLER.timesteps(),
                               SAMPLER.guidance, (FRAMES, HEIGHT, WIDTH), 0.25, 2.0, [condition, None])  # fmt: skip
    assert min(psnr(a, b) for a, b in zip(in_torch, in_onnx)) >= MIN_PSNR_DB
    # The unconditioned prompt of the batch gets the video it gets alone (up to batch-size-dependent rounding).
    alone = generator.generate(prompts[1:], [4])[0]
    assert np.abs(in_onnx[1].astype(np.int16) - alone).max() <= 1
    assert not np.array_equal(in_onnx[0], generator.generate(prompts[:1], [3])[0])


def test_onnx_encoder_matches_torch_on_given_frames(bundle, generator):
    clip = moving_square(5)
    np.testing.assert_allclose(generator.encode_frames(clip), vae_encoder(bundle.vae, 0.25, 2.0)(clip), atol=1e-4)


def test_a_long_video_starts_with_the_plain_clip_and_continues_window_by_window(generator):
    prompt = "a red square moves right"
    video = generator.generate_long(prompt, 5, 20)
    assert video.shape == (20, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(video[:FRAMES], generator.generate([prompt], [5])[0])
    assert generator.generate_long(prompt, 5, 7).shape[0] == 7


@pytest.mark.parametrize("backward", [False, True])
def test_extension_keeps_the_clip_and_adds_the_frames_asked_for(generator, backward):
    clip = moving_square(7)
    out = generator.extend("a red square moves right", 0, clip, 6, backward=backward)
    assert out.shape == (13, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(out[6:] if backward else out[:7], clip)


def test_extension_conditions_each_window_on_the_frames_before_it():
    calls = []

    def generate(frames, condition, index):
        condition = condition or FrameCondition()
        calls.append((frames, None if condition.first is None else len(condition.first),
                      None if condition.last is None else len(condition.last), index))  # fmt: skip
        return np.full((frames, 8, 8, 3), index, np.uint8)

    # A window of 3 latent frames continues from 2 of them (5 frames), fewer than CONTEXT_LATENT_FRAMES: one is left.
    out = extend_video(generate, np.full((9, 8, 8, 3), 200, np.uint8), 12, 9, R)
    assert calls == [(9, 5, None, 1), (9, 5, None, 2), (9, 5, None, 3)]
    assert out.shape[0] == 21 and (out[:9] == 200).all() and (out[9:13] == 1).all() and (out[13:17] == 2).all()
    calls.clear()  # 4 latent frames backward: 2 given (the context's first frame is not), 1 + 2R frames
    back = extend_video(generate, np.full((9, 8, 8, 3), 200, np.uint8), 3, 13, R, backward=True)
    assert calls == [(13, None, 9, 1)] and back.shape[0] == 12 and (back[3:] == 200).all()
    calls.clear()  # a window of 3 latent frames leaves room for one given latent frame going backward
    extend_video(generate, np.full((9, 8, 8, 3), 200, np.uint8), 4, 9, R, backward=True)
    assert calls == [(9, None, 1 + R, 1)]
    assert long_video(generate, 5, 9, R).shape[0] == 5
    # The demo's window (17 frames, 2 per latent frame) continues from CONTEXT_LATENT_FRAMES latent frames: 11 frames,
    # 6 new ones per window, so 64 frames take 9 windows.
    assert CONTEXT_LATENT_FRAMES == 6 and context_frames(17, 2) == 11
    assert long_video_seams(64, 17, 2) == [17, 23, 29, 35, 41, 47, 53, 59]


def test_windows_that_continue_the_given_motion_join_without_a_seam():
    # A window that carries on the given frames' motion exactly: stitching that repeated or dropped a frame at the
    # seam would show as a jump of 0 or 2 steps there.
    width = 96

    def generate(frames, condition, index):  # frame i of moving_square has the square's left edge at column 2 + i
        start = 0 if condition is None else int(np.argmax(condition.first[-1, 12].any(axis=-1))) - 2 - (len(condition.first) - 1)
        return moving_square(start + frames, width=width)[start:]

    video = long_video(generate, 45, FRAMES, R)
    np.testing.assert_array_equal(video, moving_square(45, width=width))
    seams = long_video_seams(45, FRAMES, R)
    assert seams == list(range(FRAMES, 45, FRAMES - context_frames(FRAMES, R)))
    for seam in seams:
        continuity = seam_continuity(video, seam)
        assert continuity.jump_px == pytest.approx(1.0) and continuity.jump_ratio == pytest.approx(1.0) and continuity.passes


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (FrameCondition(first=np.zeros((3, HEIGHT, WIDTH, 3), np.uint8)), re.escape("3 frames; give 1 (an image) or 1 + 4·k")),
        (FrameCondition(first=np.zeros((1, 16, 16, 3), np.uint8)), "first frames are 16x16, the clip is 32x32"),
        (FrameCondition(first=np.zeros((9, HEIGHT, WIDTH, 3), np.uint8)), "nothing to generate"),
        (FrameCondition(first=np.zeros((5, HEIGHT, WIDTH, 3), np.uint8), last=np.zeros((9, HEIGHT, WIDTH, 3), np.uint8)),
         "do not fit"),
        (FrameCondition(first=np.zeros((1, HEIGHT, WIDTH, 3), np.float32)), "must be uint8"),
    ],
)
def test_bad_conditions_are_refused_naming_the_fault(generator, condition, message):
    with pytest.raises(ValueError, match=message):
        generator.generate(["a red square moves right"], 0, conditions=[condition])


def test_marked_frames_of_each_mode():
    assert FrameCondition(first=moving_square(1)).given_video_frames(9) == [0]
    assert FrameCondition(first=moving_square(5)).given_video_frames(9) == [0, 1, 2, 3, 4]
    assert FrameCondition(last=moving_square(1)).given_video_frames(9) == [8]
    assert FrameCondition(last=moving_square(5)).given_video_frames(9) == [5, 6, 7, 8]


@pytest.fixture
def files(tmp_path):
    from PIL import Image

    from videodit.data.video_io import write_mp4

    Image.fromarray(moving_square(1, 40, 40)[0]).save(tmp_path / "start.png")
    Image.fromarray(moving_square(1)[0][:, ::-1].copy()).save(tmp_path / "end.png")
    write_mp4(moving_square(9), tmp_path / "clip.mp4", 8)
    write_mp4(moving_square(3), tmp_path / "short.mp4", 8)
    (tmp_path / "notes.png").write_text("not an image")
    return tmp_path


def run_cli(bundle, out, *args):
    from videodit.cli import main

    code = main(["generate", "a red square moves right", "-o", str(out), "--model", str(bundle.path), "--steps", "2",
                 *map(str, args)])  # fmt: skip
    manifest = json.loads((out.parent / "manifest.json").read_text()) if code == 0 else None
    return code, manifest


def test_cli_animates_an_image_fitted_to_the_size_with_a_warning(bundle, files, capsys):
    code, manifest = run_cli(bundle, files / "a" / "out.mp4", "--image", files / "start.png")
    err = capsys.readouterr().err
    assert code == 0 and "videodit: warning: " in err and "start.png is 40x40: resized to 32x32" in err, err
    assert manifest["conditioning"] == {"mode": "image_to_video", "sources": [str(files / "start.png")], "given_frames": [0]}
    assert (manifest["frames"], manifest["height"], manifest["width"]) == (FRAMES, HEIGHT, WIDTH)
    code, manifest = run_cli(bundle, files / "b" / "out.mp4", "--image", files / "end.png", "--last-image", files / "end.png")
    assert code == 0 and manifest["conditioning"]["mode"] == "interpolate"
    assert manifest["conditioning"]["given_frames"] == [0, FRAMES - 1]


def test_cli_extends_a_video_and_makes_long_videos(bundle, files):
    code, manifest = run_cli(bundle, files / "e" / "out.mp4", "--extend", files / "clip.mp4", "--frames", 6)
    assert code == 0 and manifest["frames"] == 15
    assert manifest["conditioning"] == {"mode": "extend", "source": str(files / "clip.mp4"), "given_frames": list(range(9))}
    code, manifest = run_cli(bundle, files / "f" / "out.mp4", "--extend", files / "clip.mp4", "--extend-backward",
                             "--frames", 4)  # fmt: skip
    assert code == 0 and manifest["frames"] == 13 and manifest["conditioning"]["given_frames"] == list(range(4, 13))
    code, manifest = run_cli(bundle, files / "g" / "out.mp4", "--frames", 20)
    assert code == 0 and manifest["frames"] == 20 and manifest["conditioning"]["mode"] == "long_text_to_video"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "missing.png"], "missing.png: file not found"),
        (["--image", "notes.png"], "notes.png: not a readable image"),
        (["--extend", "notes.png"], "notes.png: its video stream has no frame size"),
        (["--extend", "short.mp4"], "short.mp4: 3 frames at 8 fps, shorter than one latent frame"),
        (["--image", "start.png", "--extend", "clip.mp4"], "--extend continues a video: it cannot be combined"),
        (["--extend-backward"], "--extend-backward needs --extend VIDEO"),
        (["--last-image", "end.png", "--frames", "20"], "--last-image ends one window: --frames must be at most 9"),
    ],
)
def test_cli_bad_conditioning_is_one_line_with_exit_code_2(bundle, files, capsys, monkeypatch, args, message):
    monkeypatch.chdir(files)
    code, _ = run_cli(bundle, files / "x" / "out.mp4", *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_a_very_large_image_is_resized_with_a_warning_and_an_oversized_one_refused(files, monkeypatch):
    from PIL import Image

    from videodit.generation import inputs

    Image.new("RGB", (3000, 2000), (200, 30, 30)).save(files / "large.jpg")
    with pytest.warns(UserWarning, match="large.jpg is 3000x2000: resized to 32x32"):
        image = inputs.read_image(files / "large.jpg", 32, 32)
    assert image.shape == (1, 32, 32, 3) and abs(int(image[0, 16, 16, 0]) - 200) <= 3
    monkeypatch.setattr(inputs, "MAX_IMAGE_PIXELS", 1_000_000)
    with pytest.raises(inputs.InputError, match="large.jpg: 3000x2000 pixels, over the limit of 1,000,000"):
        inputs.read_image(files / "large.jpg", 32, 32)


def test_the_mlflow_model_takes_an_image_or_a_video_to_extend_as_base64_params(bundle, files, tmp_path):
    import base64

    import mlflow

    from videodit.generation.mlflow_model import BUNDLE_ARTIFACT, SIGNATURE, OnnxBundleModel

    mlflow.pyfunc.save_model(tmp_path / "model", python_model=OnnxBundleModel(), signature=SIGNATURE,
                             artifacts={BUNDLE_ARTIFACT: str(bundle.path)})  # fmt: skip
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    image = base64.b64encode((files / "end.png").read_bytes()).decode()
    prompt = ["a red square moves right"]
    videos = model.predict(prompt, params={"image": image, "steps": 2, "seed": 7})
    generator = OnnxVideoGenerator(bundle.path, providers=["CPUExecutionProvider"])
    from PIL import Image

    start = np.asarray(Image.open(files / "end.png"))[None]
    expected = generator.generate(prompt, [7], steps=2, conditions=[FrameCondition(first=start)])[0]
    assert np.abs(videos[0].astype(np.int16) - expected).max() <= 1
    clip = base64.b64encode((files / "clip.mp4").read_bytes()).decode()
    assert model.predict(prompt, params={"video": clip, "frames": 4, "steps": 1}).shape == (1, 13, HEIGHT, WIDTH, 3)
    with pytest.raises(ValueError, match="param 'image' is not base64-encoded file bytes"):
        model.predict(prompt, params={"image": "not base64!"})
