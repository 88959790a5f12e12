"""Training layer: resumable data stream, VAE and DiT Lightning runs, latent cache, checkpoints, resume, DDP."""

import dataclasses
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import lightning as L
import torch
from safetensors.torch import load_file

from videodit.data.config import SyntheticConfig
from videodit.data.shards import BUCKETS_FILE, ShardWriter, read_checksums
from videodit.data.synthetic import COLOURS, DIRECTIONS, SHAPES, caption_for, render_clip
from videodit.evaluation.image_quality import psnr
from videodit.models.rectified_flow import rectified_flow_loss
from videodit.models.vae import VideoVAE
from videodit.sampling import SamplerConfig, to_uint8_videos
from videodit.config import VAETrainConfig, load_preset
from videodit.training.datamodule import BatchGroup, BucketBatchSampler, ClipDataModule, LatentDataModule
from videodit.training import trainer as trainer_module
from videodit.training.dit_module import PRECISION_FILE, DiTModule, train_dit
from videodit.training.ema import update_ema
from videodit.training.latents import encode_latents
from videodit.training.trainer import PROBE_STEPS, PROBE_WARMUP_STEPS, resolve_precision, warmup_cosine_adamw
from videodit.training.vae_module import VAEModule, reconstruction_loss, train_vae


@pytest.fixture(scope="module")
def shards_root(tmp_path_factory):
    """16 train + 4 val clips of moving shapes, 8 frames of 32x32 (the tiny preset's geometry)."""
    root = tmp_path_factory.mktemp("shards")
    config = SyntheticConfig(n_frames=8, height=32, width=32)
    writer = ShardWriter(root, clips_per_shard=8)
    combos = itertools.islice(itertools.cycle(itertools.product(SHAPES, COLOURS, ["large"], DIRECTIONS)), 20)
    for i, (shape, colour, size, direction) in enumerate(combos):
        rng = np.random.default_rng(i)
        frames = render_clip(shape, colour, size, direction, config, rng)
        writer.add(frames, {
            "clip_id": f"clip{i:03d}", "caption": caption_for(shape, colour, size, direction, rng),
            "split": "val" if i >= 16 else "train", "sha256": "", "path": "", "attributes": "{}",
        })  # fmt: skip
    writer.close()
    return root


@pytest.fixture(scope="module")
def latents_dir(shards_root, tmp_path_factory):
    torch.manual_seed(0)
    return encode_latents(shards_root, VideoVAE(load_preset("tiny").vae), tmp_path_factory.mktemp("latents"))


# Clips per clip bucket of the tiny table (train, val); 5x24x48 and 5x48x24 have none, as curation may leave them.
BUCKET_CLIPS = {"9x32x32": (8, 2), "5x32x32": (4, 0), "9x24x48": (4, 1), "9x48x24": (3, 0)}


@pytest.fixture(scope="module")
def bucketed_shards(tmp_path_factory):
    """Shards of several buckets of the tiny table, with the `buckets.json` curation writes (default 9x32x32)."""
    root = tmp_path_factory.mktemp("bucketed_shards")
    writer, i = ShardWriter(root, clips_per_shard=4), 0
    combos = itertools.cycle(itertools.product(SHAPES, COLOURS, DIRECTIONS))
    for name, (n_train, n_val) in BUCKET_CLIPS.items():
        frames, height, width = map(int, name.split("x"))
        config = SyntheticConfig(n_frames=frames, height=height, width=width)
        for split, (shape, colour, direction) in zip(["train"] * n_train + ["val"] * n_val, combos):
            rng = np.random.default_rng(i)
            writer.add(render_clip(shape, colour, "large", direction, config, rng), {
                "clip_id": f"clip{i:03d}", "caption": caption_for(shape, colour, "large", direction, rng), "split": split,
                "bucket": name, "frames": frames, "height": height, "width": width,
            })  # fmt: skip
            i += 1
    writer.close()
    (root / BUCKETS_FILE).write_text(json.dumps({"default": "9x32x32"}))
    return root


@pytest.fixture(scope="module")
def bucketed_latents(bucketed_shards, tmp_path_factory):
    torch.manual_seed(0)
    return encode_latents(bucketed_shards, VideoVAE(load_preset("tiny").vae), tmp_path_factory.mktemp("bucketed_latents"))


def tiny(**dit_train_overrides):
    preset = load_preset("tiny")
    preset.dit_train = dataclasses.replace(preset.dit_train, **dit_train_overrides)
    return preset


class RecordBatches(L.Callback):
    """Remembers the item indices of every training batch, in order."""

    def __init__(self):
        self.indices = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.indices.append((tuple(batch["latents"].shape), batch["index"].tolist()))


def test_batch_stream_is_a_deterministic_resumable_permutation():
    sampler = BucketBatchSampler([BatchGroup(None, size=10, tokens=1)], batch_size=3, seed=1)
    stream = list(itertools.islice(iter(sampler), 6))
    epoch0 = [i for batch in stream[:3] for _, i, _ in batch]
    assert len(set(epoch0)) == 9  # one epoch: every item at most once, the 10th dropped
    assert [b[0][1] for b in stream[3:]] != [b[0][1] for b in stream[:3]]  # epoch 1 reshuffles
    resumed = BucketBatchSampler([BatchGroup(None, size=10, tokens=1)], batch_size=3, seed=1, start_batch=4)
    assert list(itertools.islice(iter(resumed), 2)) == stream[4:6]


GROUPS = [BatchGroup("video", size=40, tokens=48, weight=4.0), BatchGroup("short", size=20, tokens=16),
          BatchGroup("image", size=60, tokens=16), BatchGroup("rare", size=1, tokens=48)]  # fmt: skip


def test_buckets_fill_the_token_budget_in_proportion_to_their_data_and_weight():
    sampler = BucketBatchSampler(GROUPS, batch_size=4, seed=0)
    stream = list(itertools.islice(iter(sampler), 3000))
    assert all(len({name for name, _, _ in batch}) == 1 for batch in stream)  # one bucket per batch
    sizes = {batch[0][0]: len(batch) for batch in stream}
    assert sizes == {"video": 4, "short": 12, "image": 12, "rare": 1}  # 4 x 48 tokens, or all a bucket has
    shares = np.array([40 * 4.0, 20, 60, 1]) / 241
    drawn = np.array([sum(batch[0][0] == g.name for batch in stream) for g in GROUPS]) / len(stream)
    np.testing.assert_allclose(drawn, shares, atol=0.03)
    plan = sampler.plan()
    assert plan["data/padding_fraction"] == 0 and plan["data/short/budget_fill"] == 1 and plan["data/rare/batch_size"] == 1
    with pytest.raises(ValueError, match="40 training items cannot fill one batch of 30 x 2 ranks"):
        BucketBatchSampler(GROUPS, batch_size=30, seed=0, world_size=2)


def test_ranks_draw_the_same_bucket_and_disjoint_items_at_every_step():
    ranks = [list(itertools.islice(iter(BucketBatchSampler(GROUPS, 4, 1, rank, 2)), 200)) for rank in (0, 1)]
    assert {len(batch) for batch in ranks[0]} == {4, 10, 12}  # "short" fills 10 per rank; "rare" (1 item) waits
    for a, b in zip(*ranks):
        assert a[0][0] == b[0][0]  # the same bucket, so the same shape on every rank
        assert not {i for _, i, _ in a} & {i for _, i, _ in b}  # and disjoint items


def test_clip_datamodule_trains_on_every_bucket_and_frames_of_clips_as_images(bucketed_shards):
    data = ClipDataModule(bucketed_shards, batch_size=2, seed=0, buckets=load_preset("tiny").buckets, clip_frames=5, crop_size=16)
    data.setup()
    shapes = {tuple(b["video"].shape) for b in itertools.islice(data.train_dataloader(), 60)}
    # 9x32x32 and 5x32x32 are cut to the same 5x16x16 windows; 2 x 5 frames of 16x16 is the budget of every batch
    assert shapes == {(2, 3, 5, 16, 16), (10, 3, 1, 16, 16)}
    assert data.plan["data/1x32x32/batch_size"] == 10 and data.plan["data/padding_fraction"] == 0
    images = data.train_data.buckets["1x32x32"]
    assert len(images) == 12  # the train clips of both 32x32 buckets
    val = next(iter(data.val_dataloader()))["video"]
    assert val.shape == (2, 3, 9, 32, 32) and -1 <= val.min() and val.max() <= 1  # the default bucket, whole


def test_clip_datamodule_without_buckets_reads_every_clip_at_the_batch_size(shards_root):
    data = ClipDataModule(shards_root, batch_size=2, seed=0, clip_frames=5, crop_size=16)
    data.setup()
    shapes = {tuple(b["video"].shape) for b in itertools.islice(data.train_dataloader(), 12)}
    assert shapes == {(2, 3, 5, 16, 16)}
    val = next(iter(data.val_dataloader()))["video"]
    assert val.shape == (2, 3, 8, 32, 32)


def test_vae_training_raises_reconstruction_psnr(shards_root, tmp_path, one_torch_thread):
    preset = load_preset("tiny")
    preset.vae_train = dataclasses.replace(preset.vae_train, max_steps=30, val_every_steps=30)
    data = ClipDataModule(shards_root, batch_size=4)
    data.setup()
    video = next(iter(data.val_dataloader()))["video"]

    def val_psnr(vae):
        with torch.no_grad():
            recon = to_uint8_videos(vae.eval()(video, sample=False)[0].numpy())
            return float(np.mean([psnr(a, b) for a, b in zip(to_uint8_videos(video.numpy()), recon)]))

    torch.manual_seed(0)
    before = val_psnr(VAEModule(preset.vae, preset.vae_train).vae)
    module = train_vae(shards_root, preset, tmp_path)
    after = val_psnr(module.vae)
    assert after > before + 3.0, (before, after)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_reconstruction_loss_weights_pixels_that_stand_out_from_the_clip():
    video = -torch.ones(1, 3, 2, 8, 8)
    video[:, 0, :, 2:4, 2:4] = 1.0  # a red 2x2 square on black: 8 of 128 pixel positions
    recon = video.clone()
    recon[:, 0, :, 2:4, 2:4] = 0.0  # off by 1 on the square only
    recon[:, 1, :, 6, 6] = -0.5  # off by 0.5 on one background pixel per frame
    config = VAETrainConfig(l1_weight=1.0, mse_weight=2.0, foreground_weight=5.0)
    terms = reconstruction_loss(recon, video, config)
    elements = 3 * 2 * 8 * 8
    assert terms["l1"].item() == pytest.approx((8 * 1.0 * 6 + 2 * 0.5) / elements)
    assert terms["mse"].item() == pytest.approx((8 * 1.0 * 6 + 2 * 0.25) / elements)
    assert terms["reconstruction"].item() == pytest.approx(terms["l1"].item() + 2 * terms["mse"].item())


def test_encode_latents_writes_normalisable_latents_and_captions(latents_dir):
    train = load_file(str(latents_dir / "train.safetensors"))
    assert train["latents"].shape == (16, 4, 3, 4, 4)  # 8 frames -> 1 + ceil(7/4) = 3 latent frames, 32/8 = 4
    assert train["text"].shape == (16, 32, 384) and train["text_mask"].dtype == torch.bool
    assert train["null_mask"].sum() == 2
    data = LatentDataModule(latents_dir, batch_size=4)
    data.setup()
    normalised = data.train_data.default.latents
    assert normalised.mean().abs() < 1e-4 and normalised.std().item() == pytest.approx(1.0, abs=1e-3)
    assert len(data.val_data) == 4


def test_encode_latents_writes_one_file_per_split_and_bucket_and_images_are_first_latent_frames(bucketed_latents):
    assert set(read_checksums(bucketed_latents)) == {
        "train.safetensors", "val.safetensors", "train-5x32x32.safetensors", "train-9x24x48.safetensors",
        "val-9x24x48.safetensors", "train-9x48x24.safetensors"}  # fmt: skip
    assert load_file(str(bucketed_latents / "train-9x24x48.safetensors"))["latents"].shape == (4, 4, 3, 3, 6)
    data = LatentDataModule(bucketed_latents, batch_size=4, buckets=load_preset("tiny").buckets)
    data.setup()
    buckets = data.train_data.buckets
    assert list(buckets) == ["9x32x32", "5x32x32", "9x24x48", "9x48x24", "1x32x32"]
    first_frames = torch.cat([buckets[b].latents[:, :, :1] for b in ("9x32x32", "5x32x32")])
    torch.testing.assert_close(buckets["1x32x32"].latents, first_frames, atol=0, rtol=0)
    normalised = torch.cat([buckets[b].latents.flatten() for b in BUCKET_CLIPS if b in buckets])
    assert normalised.mean().abs() < 1e-4 and normalised.std().item() == pytest.approx(1.0, abs=1e-3)  # one shift/scale
    assert len(data.val_data) == 2  # the default bucket's
    shapes = {tuple(b["latents"].shape) for b in itertools.islice(data.train_dataloader(), 60)}
    assert shapes == {(4, 4, 3, 4, 4), (4, 4, 2, 4, 4), (3, 4, 3, 3, 6), (3, 4, 3, 6, 3), (12, 4, 1, 4, 4)}


DIT_STEPS = 30
# Rectified-flow loss on the training latents at fixed noise and t, zero-init DiT vs after DIT_STEPS steps: about
# 1.99 -> 1.71 (x1.16) on the tiny preset. An optimiser that never steps leaves it at exactly 1.99; a wrong
# velocity target raises it.
DIT_LOSS_FALLS_BY = 1.1


@torch.no_grad()
def fixed_noise_loss(dit, latents_dir, draws: int = 8) -> float:
    """The rectified-flow loss over every training clip, averaged over `draws` seeded noise and timestep draws, so
    two models are compared on the same points of the same paths (a single batch's loss is too noisy to compare)."""
    data = LatentDataModule(latents_dir, batch_size=4)
    data.setup()
    train, generator = data.train_data.default, torch.Generator().manual_seed(0)
    losses = [rectified_flow_loss(dit, train.latents, train.text, train.text_mask, generator=generator).item()
              for _ in range(draws)]  # fmt: skip
    return float(np.mean(losses))


def test_dit_trains_generates_and_reloads_from_checkpoint(latents_dir, tmp_path, one_torch_thread):
    vae = VideoVAE(load_preset("tiny").vae)
    preset = tiny(max_steps=DIT_STEPS)
    module = train_dit(latents_dir, vae, preset, tmp_path)
    assert module.trainer.global_step == DIT_STEPS and "val/loss" in module.trainer.callback_metrics
    untrained = DiTModule(preset.dit, preset.dit_train, vae.config).dit
    before, after = fixed_noise_loss(untrained, latents_dir), fixed_noise_loss(module.dit.eval(), latents_dir)
    assert np.isfinite(after) and after < before / DIT_LOSS_FALLS_BY, (before, after)
    prompts = ["a large red circle moves left", "a large blue square moves up"]
    assert module.sampler == preset.sampler  # the preset's: the default of previews, recorded in the checkpoint
    sampler = SamplerConfig(steps=3, guidance=4.0)
    videos = module.generate(prompts, 3, sampler)
    assert videos.dtype == np.uint8 and videos.shape == (2, preset.frames, 32, 32, 3)
    torch.testing.assert_close(videos, module.generate(prompts, [3, 4], sampler), atol=0, rtol=0)  # s -> s, s + 1
    alone = module.generate(prompts[1:], 4, sampler)  # a prompt's noise comes from its own seed, not its batch
    assert np.abs(alone[0].astype(np.int16) - videos[1]).max() <= 1
    image = module.generate(["a red circle"], 3, SamplerConfig(steps=2), frames=1, height=32, width=64)
    assert image.shape == (1, 1, 32, 64, 3)

    reloaded = DiTModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert (reloaded.latent_scale, reloaded.sampler) == (module.latent_scale, module.sampler)
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, atol=0, rtol=0, msg=name)
    torch.testing.assert_close(reloaded.generate(prompts, 3, sampler), videos, atol=0, rtol=0)


def test_validation_draws_from_the_training_timesteps_and_leaves_the_global_rng_alone(latents_dir, monkeypatch):
    preset = tiny(timestep_mean=1.5, timestep_std=0.5)
    module = DiTModule(preset.dit, preset.dit_train, preset.vae)
    with torch.no_grad():  # off adaLN-Zero's zero velocity, whose loss would not depend on t
        for parameter in module.ema.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    data = LatentDataModule(latents_dir, batch_size=4)
    data.setup()
    val = data.val_data
    batch = {"latents": val.latents, "text": val.text, "text_mask": val.text_mask}
    logged, cuda_seeds = [], []
    monkeypatch.setattr(module, "log", lambda name, value, **kwargs: logged.append((name, value.item())))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeds.append)  # what torch.manual_seed reseeds CUDA with
    before = torch.get_rng_state()
    with torch.no_grad():
        for batch_idx in (3, 3, 4):
            module.validation_step(batch, batch_idx)
    assert torch.equal(torch.get_rng_state(), before) and cuda_seeds == []
    (_, at_3), (_, again), (_, at_4) = logged
    assert logged[0][0] == "val/loss" and at_3 == again != at_4  # fixed draws per batch index

    def loss_at(mean: float, std: float) -> float:
        with torch.no_grad():
            return rectified_flow_loss(module.ema, *batch.values(), mean, std, torch.Generator().manual_seed(3)).item()

    assert at_3 == pytest.approx(loss_at(1.5, 0.5), rel=1e-6) and at_3 != pytest.approx(loss_at(0.0, 1.0), rel=1e-3)


def test_ema_moves_every_parameter_toward_the_model():
    ema, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, decay=0.75)
    for averaged, old, current in zip(ema.parameters(), before, model.parameters()):
        torch.testing.assert_close(averaged, 0.75 * old + 0.25 * current)
    with pytest.raises(ValueError, match="EMA has 2 parameters but the model 1"):
        update_ema(ema, torch.nn.Linear(3, 2, bias=False), decay=0.75)


def test_adamw_is_fused_unless_lightning_must_clip_under_mixed_precision():
    params = torch.nn.Linear(3, 2).parameters
    fp32 = warmup_cosine_adamw(params(), tiny(precision="32-true").dit_train)["optimizer"]
    mixed = warmup_cosine_adamw(params(), tiny(precision="bf16-mixed").dit_train)["optimizer"]
    assert fp32.defaults["fused"] and not mixed.defaults["fused"]


class StepClock:
    """The clock `time_precisions` reads, advanced only by the steps it times: their seconds exact whatever the load
    (a sleep of 4.0 against 4.2 ms measured 1.1x apart on a busy machine)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def step_clock(monkeypatch) -> StepClock:
    clock = StepClock()
    monkeypatch.setattr(trainer_module, "time", clock)
    return clock


def _step_taking(clock: StepClock, seconds: dict[bool, float], calls: list):
    """What builds a training step that takes seconds[bf16] on `clock` and records that it ran."""

    def step(bf16: bool) -> None:
        calls.append(bf16)
        clock.now += seconds[bf16]

    return lambda: step


def test_auto_precision_on_a_native_bf16_cpu_picks_the_precision_it_measured_faster(monkeypatch, step_clock):
    monkeypatch.setattr(trainer_module, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config, calls = tiny().dit_train, []
    slower_bf16 = resolve_precision(config, _step_taking(step_clock, {False: 0.002, True: 0.004}, calls))
    assert slower_bf16.precision == "32-true" and slower_bf16.seconds_per_step["bf16-mixed"] > slower_bf16.seconds_per_step["32-true"]
    assert calls.count(True) == calls.count(False) == PROBE_WARMUP_STEPS + PROBE_STEPS
    assert resolve_precision(config, _step_taking(step_clock, {False: 0.008, True: 0.002}, [])).precision == "bf16-mixed"
    # Faster, but by less than MIN_BF16_SPEEDUP: fp32 keeps its accuracy and its fused AdamW.
    assert resolve_precision(config, _step_taking(step_clock, {False: 0.0042, True: 0.004}, [])).precision == "32-true"
    assert resolve_precision(config).precision == "bf16-mixed"  # nothing to time: native bf16 is used
    assert resolve_precision(dataclasses.replace(config, precision="32-true"), _step_taking(step_clock, {}, calls := [])).precision == "32-true" and not calls


def test_auto_precision_without_native_bf16_is_fp32_untimed(monkeypatch, step_clock):
    monkeypatch.setattr(trainer_module, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    choice = resolve_precision(tiny().dit_train, _step_taking(step_clock, {}, calls := []))
    assert (choice.precision, calls) == ("32-true", []) and "without native bf16" in choice.reason


def test_a_dit_run_keeps_the_precision_it_chose_in_its_folder(latents_dir, tmp_path, monkeypatch, one_torch_thread):
    """The timed choice is made once per run folder: a retry or resume trains (and checkpoints) in the same one."""
    monkeypatch.setattr(trainer_module, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trainer_module, "time_precisions", lambda step: {"32-true": 0.3, "bf16-mixed": 0.1})
    vae = VideoVAE(load_preset("tiny").vae)
    module = train_dit(latents_dir, vae, tiny(max_steps=1, precision="auto"), tmp_path)
    assert module.trainer.precision == "bf16-mixed" and module.train_config.precision == "bf16-mixed"
    saved = json.loads((tmp_path / PRECISION_FILE).read_text())
    assert saved["precision"] == "bf16-mixed" and saved["seconds_per_step"] == {"32-true": 0.3, "bf16-mixed": 0.1}
    monkeypatch.setattr(trainer_module, "time_precisions", lambda step: {"32-true": 0.1, "bf16-mixed": 0.3})
    assert train_dit(latents_dir, vae, tiny(max_steps=1, precision="auto"), tmp_path).trainer.precision == "bf16-mixed"


def test_dit_trains_under_bf16_mixed_with_gradient_clipping(latents_dir, tmp_path, one_torch_thread):
    vae = VideoVAE(load_preset("tiny").vae)
    module = train_dit(latents_dir, vae, tiny(max_steps=2, precision="bf16-mixed", grad_clip=0.5), tmp_path)
    assert module.trainer.global_step == 2 and torch.isfinite(module.trainer.callback_metrics["train/loss"])


def test_resume_continues_at_the_same_step_and_data_position(bucketed_latents, tmp_path, one_torch_thread):
    preset = tiny(max_steps=6, checkpoint_every_steps=3, val_every_steps=100)
    vae = VideoVAE(preset.vae)
    straight = RecordBatches()
    first = run_dit(bucketed_latents, vae, preset, tmp_path / "a", callbacks=[straight])
    assert first.global_step == 6 and len(straight.indices) == 6
    assert len({shape for shape, _ in straight.indices[3:]}) > 1  # the resumed part crosses buckets
    checkpoint = tmp_path / "a" / "checkpoints" / "step000003.ckpt"
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["global_step"] == 3 and saved["LatentDataModule"]["batches_consumed"] == 3

    class CheckRestoredState(L.Callback):
        def on_train_start(self, trainer, module):
            assert trainer.global_step == 3
            state = trainer.optimizers[0].state_dict()["state"]
            assert int(next(iter(state.values()))["step"]) == 3
            for name, tensor in module.ema.state_dict().items():
                torch.testing.assert_close(tensor, saved["state_dict"][f"ema.{name}"], atol=0, rtol=0)

    resumed = RecordBatches()
    second = run_dit(bucketed_latents, vae, preset, tmp_path / "b", [resumed, CheckRestoredState()], ckpt_path=checkpoint)
    assert second.global_step == 6
    assert resumed.indices == straight.indices[3:]  # batch for batch: bucket and items, not a restart of the data


def run_dit(latents_dir, vae, preset, out_dir, callbacks, ckpt_path=None) -> L.Trainer:
    from videodit.models.dit import DiTBlock
    from videodit.training.latents import latent_stats
    from videodit.training.trainer import build_trainer

    cfg = preset.dit_train
    L.seed_everything(cfg.seed, verbose=False)
    module = DiTModule(preset.dit, cfg, vae.config, (8, 32, 32), *latent_stats(latents_dir))
    data = LatentDataModule(latents_dir, cfg.batch_size, cfg.seed, preset.buckets, cfg.caption_dropout)
    trainer = build_trainer(cfg, out_dir, callbacks=callbacks, block_type=DiTBlock)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer


DDP_SCRIPT = """
import dataclasses
import sys
from pathlib import Path

import lightning as L
import torch

from videodit.models.vae import VideoVAE
from videodit.config import load_preset
from videodit.training.dit_module import train_dit

latents_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(1)  # two ranks on a machine that may have two cores


class SaveRankWeights(L.Callback):
    shapes = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.shapes.append(tuple(batch["latents"].shape))

    def on_train_end(self, trainer, module):
        state = {k: v.detach().cpu() for k, v in module.dit.state_dict().items()}
        torch.save({"state": state, "step": trainer.global_step, "world_size": trainer.world_size, "shapes": self.shapes},
                   out / f"rank{trainer.global_rank}.pt")


preset = load_preset("tiny")
preset.dit_train = dataclasses.replace(preset.dit_train, max_steps=3, strategy="ddp", devices=2, accelerator="cpu",
                                       batch_size=2, checkpoint_every_steps=3, val_every_steps=100)
train_dit(latents_dir, VideoVAE(preset.vae), preset, out, callbacks=[SaveRankWeights()])
"""


def train_under_ddp(latents_dir, out_dir) -> None:
    script = out_dir / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(latents_dir), str(out_dir)], capture_output=True, text=True,
                         timeout=300, cwd=out_dir)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]


def test_ddp_two_cpu_processes_train_and_keep_identical_weights(bucketed_latents, tmp_path):
    """Real `ddp` (gloo, 2 CPU processes): Lightning re-runs the launching script for rank 1, so under pytest it
    would re-run pytest; the training runs in a script of its own. Every rank saves its DiT weights and the shapes
    of its batches after training."""
    train_under_ddp(bucketed_latents, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [(r["step"], r["world_size"]) for r in ranks] == [(3, 2), (3, 2)]
    assert ranks[0]["shapes"] == ranks[1]["shapes"] and len(set(ranks[0]["shapes"])) == 3  # same bucket per step
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 3 and saved["LatentDataModule"]["batches_consumed"] == 3
    preset = tiny()
    L.seed_everything(preset.dit_train.seed, verbose=False)  # the initialisation train_dit starts from
    initial = DiTModule(preset.dit, preset.dit_train, VideoVAE(preset.vae).config).dit.state_dict()
    changed = [k for k, v in ranks[0]["state"].items() if not torch.equal(v, initial[k])]
    assert len(changed) > len(initial) // 2, changed  # most tensors moved: it trained, not just the zero-init head
    for name, tensor in ranks[0]["state"].items():  # gradients were all-reduced: the ranks hold the same model
        torch.testing.assert_close(ranks[1]["state"][name], tensor, atol=0, rtol=0, msg=name)


def test_checkpoints_of_earlier_versions_rebuild_their_train_config():
    saved = {**dataclasses.asdict(VAETrainConfig(lr=0.5)), "image_fraction": 0.1}  # before the image buckets
    assert VAETrainConfig.from_saved(saved) == VAETrainConfig(lr=0.5)
