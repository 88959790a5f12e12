"""What a person watches: training progress in the Dagster run log, and sample videos as pictures."""

import time
from pathlib import Path

import numpy as np
import lightning as L
from dagster import AssetExecutionContext, MetadataValue

from dagster_project.defs.resources import TrackedRun
from videodit.evaluation.contact_sheet import contact_sheet, png_data_uri, save_gif

LOG_EVERY_FRACTION = 0.1


class DagsterProgress(L.Callback):
    """Logs step, loss and rate to the Dagster run every tenth of the run (a console bar is invisible in the UI)."""

    def __init__(self, context: AssetExecutionContext, total_steps: int):
        self.context, self.total = context, total_steps
        self.every = max(1, int(total_steps * LOG_EVERY_FRACTION))
        self.started = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every and step != self.total:
            return
        loss = trainer.callback_metrics.get("train/loss")
        rate = step / max(time.monotonic() - self.started, 1e-6)
        loss_text = f", loss {float(loss):.4f}" if loss is not None else ""
        self.context.log.info(f"step {step}/{self.total} ({100 * step / self.total:.0f}%){loss_text}, {rate:.1f} steps/s")


def log_video_samples(run: TrackedRun, videos: list[np.ndarray], captions: list[str], name: str, fps: float, out_dir: Path,
                      given_frames: list[list[int]] | None = None) -> MetadataValue:  # fmt: skip
    """A contact sheet and GIFs into MLflow; the sheet also inline for the Dagster UI. `given_frames` per video:
    the frames it was conditioned on, outlined in the sheet."""
    sheet = contact_sheet(videos, captions, given_frames=given_frames)
    sheet_path = out_dir / f"{name}.png"
    sheet.save(sheet_path)
    run.client.log_artifact(run.run_id, str(sheet_path), "samples")
    for i, video in enumerate(videos):
        run.client.log_artifact(run.run_id, str(save_gif(video, out_dir / f"{name}_{i}.gif", fps)), "samples")
    return MetadataValue.md(f"![{name}]({png_data_uri(sheet, max_width=900)})")
