"""Named presets: `tiny` (tests, seconds), `demo` (a 2-core CPU, minutes), `base` (a GPU).

The clip geometry (frames, size, fps) is defined once, by the model preset in
`videodit.training.config`; the data layer generates and curates clips of exactly that shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from videodit.data.config import CurationConfig, ProbeConfig, SyntheticConfig, ValidationConfig
from videodit.evaluation.model_report import EvaluationConfig
from videodit.training.config import model_preset

PRESET_NAMES = ("tiny", "demo", "base")

# How many clips of each attribute combination the synthetic set holds, per preset (tiny: a sample).
SYNTHETIC_SIZE = {"tiny": {"max_clips": 24}, "demo": {"clips_per_combination": 2}, "base": {"clips_per_combination": 8}}
# The demo's paths vary over a fifth of the full range: its DiT trains for ~2 minutes on 2 CPU cores, too few
# steps to also learn where in the frame a shape may start (measured: full jitter gives 10-15% adherence).
POSITION_JITTER = {"tiny": 1.0, "demo": 0.2, "base": 1.0}
SHARD_SIZE = {"tiny": 16, "demo": 256, "base": 256}
VAL_FRACTION = {"tiny": 0.2, "demo": 0.1, "base": 0.05}


@dataclass(frozen=True)
class DataPreset:
    synthetic: SyntheticConfig
    probe: ProbeConfig
    validation: ValidationConfig
    curation: CurationConfig


def data_preset(name: str) -> DataPreset:
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}")
    model = model_preset(name)
    shape = {"n_frames": model.frames, "height": model.height, "width": model.width}
    return DataPreset(
        synthetic=SyntheticConfig(**shape, fps=model.fps, position_jitter=POSITION_JITTER[name], **SYNTHETIC_SIZE[name]),
        probe=ProbeConfig(),
        validation=ValidationConfig(),
        curation=CurationConfig(**shape, fps=float(model.fps), val_fraction=VAL_FRACTION[name], clips_per_shard=SHARD_SIZE[name]),
    )


def evaluation_preset(name: str) -> EvaluationConfig:
    if name == "tiny":
        return EvaluationConfig(n_prompts=8, steps=4, batch_size=8, max_val_clips=8)
    if name == "demo":
        return EvaluationConfig(min_overall=0.5)
    if name == "base":
        return EvaluationConfig(steps=50, min_overall=0.8)
    raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}")
