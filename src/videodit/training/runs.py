"""Which training run a registered model comes from: the version with its fingerprint is reused, a killed run resumes,
a forced new version trains in a folder of its own.

A model's folder is `<root>/<fingerprint>`: its checkpoints (`checkpoints/`: every N steps and last.ckpt) let a killed
run resume where it stopped, and `final.ckpt` is the trained model, also logged to the run's MLflow artifacts
(`checkpoint/final.ckpt`) so that a project without the folder can fetch it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import mlflow
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from videodit.tracking.registry import find_version
from videodit.training.trainer import resumable_checkpoint

FINAL_CHECKPOINT = "final.ckpt"
CHECKPOINT_ARTIFACT_DIR = "checkpoint"  # where the final checkpoint lies among a training run's MLflow artifacts

_log = logging.getLogger(__name__)

# Trains into a folder, resuming from a checkpoint (or None: from step 0); returns the trained module.
Train = Callable[[Path, Path | None], L.LightningModule]


@dataclass(frozen=True)
class TrainedModel:
    checkpoint: Path  # the final checkpoint
    version: ModelVersion | None  # the registered version reused, or None: trained now, to be registered
    trained_steps: int  # optimiser steps this run took: 0 when reused, the rest of max_steps after a resume


def registered_checkpoint(version: ModelVersion, out_dir: Path, tracking_uri: str | None = None) -> Path:
    """The final checkpoint of an already registered version: local if present, else from its MLflow run."""
    local = out_dir / FINAL_CHECKPOINT
    if not local.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        # A local artifact store downloads to <dst>/final.ckpt, a server to <dst>/checkpoint/final.ckpt: take the
        # path MLflow returns, from a scratch folder inside out_dir, so nothing is left behind but the checkpoint.
        with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
            downloaded = mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=f"{CHECKPOINT_ARTIFACT_DIR}/{FINAL_CHECKPOINT}",
                dst_path=scratch, tracking_uri=tracking_uri,
            )  # fmt: skip
            Path(downloaded).rename(local)
    return local


def _checkpoint_step(path: Path | None) -> int:
    return 0 if path is None else torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"]


def train_or_reuse(
    train: Train, client: MlflowClient, name: str, print_: str, root: Path, run_id: str,
    tracking_uri: str | None = None, new_version_key: str | None = None, log: logging.Logger = _log,
) -> TrainedModel:  # fmt: skip
    """The model `name` with fingerprint `print_`: its registered version when there is one (checkpoint fetched
    into `root/print_`), else `train`ed in `root/print_`, resuming a killed run there, the final checkpoint logged to
    the MLflow run `run_id`.

    `new_version_key` (to force a new version: the id of the run that forces it) skips the registry and trains in a
    folder of its own, `root/<print_>-<key>`, from step 0 (`root/print_` holds the finished run's last.ckpt, which
    would resume into zero steps); that run's retries resume in it.
    """
    if new_version_key is None and (existing := find_version(client, name, print_)) is not None:
        log.info(f"{name} v{existing.version} already holds this data, code and config: reusing it")
        return TrainedModel(registered_checkpoint(existing, root / print_, tracking_uri), existing, 0)
    out_dir = root / (print_ if new_version_key is None else f"{print_}-{new_version_key}")
    resume = resumable_checkpoint(out_dir, log)
    start = _checkpoint_step(resume)  # now: training overwrites last.ckpt
    if resume is not None:
        log.info(f"resuming from {resume} (step {start})")
    module = train(out_dir, resume)
    final = out_dir / FINAL_CHECKPOINT
    module.trainer.save_checkpoint(final)
    client.log_artifact(run_id, str(final), CHECKPOINT_ARTIFACT_DIR)
    return TrainedModel(final, None, module.trainer.global_step - start)
