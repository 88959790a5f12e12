"""`captioned_clips`: every training window of the accepted clips with its user caption, its generated caption
(with the captioner's name and version) and the one that trains.

The frames come from the probe's single decode (`DECODED_CLIPS_DIR`), so captioning decodes nothing again, and a
caption is written per training window, as a long video's windows may show different things. The caption that
trains is `train_on`'s when the window has it, else the other one; `caption_source` says which. A window with
neither (no user caption, and no captioner or one that cannot describe it) is rejected with its reason, so the
captions and the rejects together account for every window.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tqdm import tqdm

from videodit.captioning.captioner import Captioner, CaptioningConfig
from videodit.data.shards import ClipShards
from videodit.domain import Domain

CAPTIONS_FILE = "captions.parquet"
REJECTS_FILE = "rejects.parquet"
CAPTION_COLUMNS = ("path", "window", "user_caption", "generated_caption", "captioner", "captioner_version",
                   "trained_caption", "caption_source")  # fmt: skip


def build_captioner(config: CaptioningConfig, domain: Domain) -> Captioner | None:
    """The configured captioner, read against the data set's `domain`; None for captioner "none"."""
    if config.captioner == "descriptive":
        from videodit.captioning.descriptive import DescriptiveCaptioner

        return DescriptiveCaptioner(domain)
    if config.captioner == "vision_language":  # transformers loads only when asked for
        from videodit.captioning.vision_language import VisionLanguageCaptioner

        return VisionLanguageCaptioner(config.model_dir)
    return None


def _trained(user: str | None, generated: str | None, train_on: str) -> tuple[str | None, str | None]:
    """(caption, source) of the caption that trains: `train_on`'s, else the other one, else (None, None)."""
    order = (("generated", generated), ("user", user)) if train_on == "generated" else (("user", user), ("generated", generated))
    return next(((caption, source) for source, caption in order if caption), (None, None))


def caption_clips(
    accepted: pd.DataFrame, decoded_dir: Path, fps: float, config: CaptioningConfig, captioner: Captioner | None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(captions, rejects): a CAPTION_COLUMNS row per captioned window of `accepted`'s clips, and (path, window,
    reason) per window left without a caption. Without a captioner nothing is decoded from the shards."""
    decoded = ClipShards(decoded_dir)
    windows = decoded.index[decoded.index["path"].isin(set(accepted["path"]))].sort_values(["path", "window"])
    user_captions = dict(zip(accepted["path"], accepted["caption"]))
    rows, rejects = [], []
    for window in tqdm(windows.itertuples(), total=len(windows), desc="caption", unit="clip", disable=not progress):
        user = user_captions[window.path] if isinstance(user_captions[window.path], str) else None  # NaN from parquet
        user = user or None
        generated = captioner.caption(decoded.frames(window.shard, window.row), fps) if captioner else None
        caption, source = _trained(user, generated, config.train_on)
        if caption is None:
            reason = (f"no user caption and the {captioner.name} captioner could not describe window {window.window}"
                      if captioner else "no user caption and no captioner configured (captioning.captioner)")  # fmt: skip
            rejects.append({"path": window.path, "window": int(window.window), "reason": reason})
            continue
        rows.append({
            "path": window.path, "window": int(window.window), "user_caption": user, "generated_caption": generated,
            "captioner": captioner and captioner.name, "captioner_version": captioner and captioner.version,
            "trained_caption": caption, "caption_source": source,
        })  # fmt: skip
    return (pd.DataFrame(rows, columns=list(CAPTION_COLUMNS)),
            pd.DataFrame(rejects, columns=["path", "window", "reason"]))  # fmt: skip
