"""Training never trusts a broken input: shards are verified on read, a checkpoint that does not load is moved
aside, and a registered checkpoint downloads on the first try."""

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import lightning as L
import torch
from mlflow import MlflowClient

import videodit.data.shards as shards_module
from videodit.data.config import SyntheticConfig
from videodit.data.shards import SHARD_DIR, ClipShards, ShardChecksumError, ShardWriter, read_checksums
from videodit.data.synthetic import render_clip
from videodit.models.vae import VideoVAE
from videodit.config import load_preset
from videodit.training.datamodule import ClipDataModule, LatentDataModule
from videodit.training.latents import encode_latents, latent_stats
from videodit.training.runs import CHECKPOINT_ARTIFACT_DIR, FINAL_CHECKPOINT, registered_checkpoint
from videodit.training.trainer import resumable_checkpoint
from videodit.training.vae_module import train_vae

HEADER_BYTE = 10  # inside the safetensors JSON header: `{"frames"` read as `{"grames"`
TRAINER_LOG = "videodit.training.trainer"


@pytest.fixture
def shards_root(tmp_path):
    """Two shards of 4 clips each (3 train + 1 val), 8 frames of 32x32: the tiny preset's geometry."""
    root, geometry = tmp_path / "training_clips", SyntheticConfig(n_frames=8, height=32, width=32)
    writer = ShardWriter(root, clips_per_shard=4)
    for i in range(8):
        frames = render_clip("circle", "red", "large", "left", geometry, np.random.default_rng(i))
        writer.add(frames, {"clip_id": f"clip{i}", "caption": "a large red circle moves left", "split": "val" if i % 4 == 3 else "train"})
    writer.close()
    return root


def flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_changed_byte_in_a_shard_is_an_error_naming_it_not_a_clip(shards_root):
    shard = shards_root / SHARD_DIR / "00001.safetensors"
    flip_byte(shard, shard.stat().st_size - 1)  # the last pixel of the last clip: a read today returns it
    shards = ClipShards(shards_root)
    assert shards.frames("00000.safetensors", 0).shape == (8, 32, 32, 3)  # the intact shard still reads
    with pytest.raises(ShardChecksumError, match=f"{shard} does not match its recorded sha256") as error:
        shards.frames("00001.safetensors", 0)
    assert error.value.path == shard
    with pytest.raises(ShardChecksumError, match="00001.safetensors"):
        shards.verify()


def test_a_changed_header_byte_names_the_shard_instead_of_a_safetensors_error(shards_root):
    shard = shards_root / SHARD_DIR / "00000.safetensors"
    flip_byte(shard, HEADER_BYTE)  # today: SafetensorError "File does not contain tensor frames", no file named
    data = ClipDataModule(shards_root, batch_size=2)
    with pytest.raises(ShardChecksumError, match=f"{shard} does not match"):
        data.setup()


def test_each_shard_is_hashed_once_per_process_and_again_when_it_changes(shards_root, monkeypatch):
    hashed = []
    real_sha256 = shards_module.file_sha256
    monkeypatch.setattr(shards_module, "file_sha256", lambda path: hashed.append(path.name) or real_sha256(path))
    shards = ClipShards(shards_root)
    for row in range(3):
        shards.frames("00000.safetensors", row)
    ClipShards(shards_root).frames("00000.safetensors", 3)
    assert hashed == ["00000.safetensors"]
    flip_byte(shards_root / SHARD_DIR / "00000.safetensors", HEADER_BYTE)
    with pytest.raises(ShardChecksumError):
        shards.frames("00000.safetensors", 0)
    assert hashed == ["00000.safetensors", "00000.safetensors"]


def test_latents_record_their_checksums_and_are_verified_on_read(shards_root, tmp_path):
    torch.manual_seed(0)
    latents_dir = encode_latents(shards_root, VideoVAE(load_preset("tiny").vae), tmp_path / "video_latents")
    assert set(read_checksums(latents_dir)) == {"train.safetensors", "val.safetensors"}
    shift, scale = latent_stats(latents_dir)
    assert np.isfinite(shift) and scale > 0
    train = latents_dir / "train.safetensors"
    flip_byte(train, train.stat().st_size - 1)  # the last value of the last tensor, which today trains as is
    with pytest.raises(ShardChecksumError, match=f"{train} does not match its recorded sha256"):
        latent_stats(latents_dir)
    with pytest.raises(ShardChecksumError, match=f"{train} does not match"):
        LatentDataModule(latents_dir, batch_size=2).setup()


class RecordSteps(L.Callback):
    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, *args):
        self.steps.append(trainer.global_step)


def tiny_vae_preset(max_steps: int):
    preset = load_preset("tiny")
    preset.vae_train = dataclasses.replace(preset.vae_train, max_steps=max_steps, checkpoint_every_steps=1, val_every_steps=100)
    return preset


def test_training_resumes_from_the_newest_checkpoint_that_loads(shards_root, tmp_path, caplog):
    train_vae(shards_root, tiny_vae_preset(2), tmp_path)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step000001.ckpt", "step000002.ckpt"]
    for name in ("last.ckpt", "step000002.ckpt"):  # truncated: today "PytorchStreamReader failed reading zip archive"
        (folder / name).write_bytes((folder / name).read_bytes()[:1000])

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=TRAINER_LOG):
        resume = resumable_checkpoint(tmp_path)
    assert resume == folder / "step000001.ckpt"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt.broken", "step000001.ckpt", "step000002.ckpt.broken"]
    messages = [r.getMessage() for r in caplog.records if r.name == TRAINER_LOG]
    assert [m.split(" (")[0] for m in messages] == [
        f"checkpoint {folder / 'last.ckpt'} does not load", f"checkpoint {folder / 'step000002.ckpt'} does not load"
    ]
    assert "failed reading zip archive" in messages[0] and messages[0].endswith("moved aside to last.ckpt.broken")

    steps = RecordSteps()
    module = train_vae(shards_root, tiny_vae_preset(3), tmp_path, resume_from=resume, callbacks=[steps])
    assert steps.steps == [1, 2] and module.trainer.global_step == 3


def test_when_no_checkpoint_loads_training_starts_fresh_and_says_so(tmp_path, caplog):
    assert resumable_checkpoint(tmp_path) is None  # a first run: nothing to resume, nothing to say
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    with caplog.at_level(logging.WARNING, logger=TRAINER_LOG):
        assert resumable_checkpoint(tmp_path) is None
    assert caplog.messages[-1] == f"no checkpoint in {folder} loads (last.ckpt moved aside): training starts from step 0"
    assert [p.name for p in folder.iterdir()] == ["last.ckpt.broken"]


def into_artifact_folder(download):
    """MLflow's download as an HTTP artifact store does it: the file lands under its artifact folder in dst_path."""

    def nested(dst_path: str, artifact_path: str, **kwargs) -> str:
        folder = Path(dst_path) / Path(artifact_path).parent
        folder.mkdir(parents=True)
        return download(dst_path=str(folder), artifact_path=artifact_path, **kwargs)

    return nested


@pytest.mark.parametrize("layout", ["local store: <dst>/final.ckpt", "server: <dst>/checkpoint/final.ckpt"])
def test_registered_checkpoint_downloads_on_the_first_call(tmp_path, monkeypatch, layout):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri, registry_uri=uri)  # not the process-wide registry an earlier test left
    experiment = client.create_experiment("videodit", artifact_location=str(tmp_path / "mlartifacts"))
    run = client.create_run(experiment)
    trained = tmp_path / "trained" / FINAL_CHECKPOINT
    trained.parent.mkdir()
    torch.save({"global_step": 20}, trained)
    client.log_artifact(run.info.run_id, str(trained), CHECKPOINT_ARTIFACT_DIR)  # as a training asset logs it
    client.create_registered_model("videodit-vae")
    version = client.create_model_version("videodit-vae", f"runs:/{run.info.run_id}/{CHECKPOINT_ARTIFACT_DIR}", run.info.run_id)
    if layout.startswith("server"):
        monkeypatch.setattr(mlflow.artifacts, "download_artifacts", into_artifact_folder(mlflow.artifacts.download_artifacts))

    out_dir = tmp_path / "reused"
    checkpoint = registered_checkpoint(version, out_dir, uri)
    assert checkpoint == out_dir / "final.ckpt" and [p.name for p in out_dir.iterdir()] == ["final.ckpt"]
    assert torch.load(checkpoint)["global_step"] == 20
    assert registered_checkpoint(SimpleNamespace(run_id="not needed: it is local"), out_dir) == checkpoint
