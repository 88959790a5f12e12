"""Named presets: `tiny` (tests, seconds), `demo` (a 2-core CPU, minutes), `base` (a GPU).

A preset fixes the data shape end to end: the synthetic clips, what validation accepts and the
training clip size the models are built for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from videodit.data.config import CurationConfig, ProbeConfig, SyntheticConfig, ValidationConfig

PRESET_NAMES = ("tiny", "demo", "base")


@dataclass(frozen=True)
class DataPreset:
    synthetic: SyntheticConfig
    probe: ProbeConfig
    validation: ValidationConfig
    curation: CurationConfig


def data_preset(name: str) -> DataPreset:
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}")
    synthetic, curation = SyntheticConfig(), CurationConfig()
    if name == "tiny":
        synthetic = replace(synthetic, n_frames=8, height=32, width=32, max_clips=24)
        curation = replace(curation, n_frames=8, height=32, width=32, val_fraction=0.2, clips_per_shard=16)
    elif name == "demo":
        synthetic = replace(synthetic, clips_per_combination=2)
    elif name == "base":
        synthetic = replace(synthetic, n_frames=32, height=128, width=128, fps=16, clips_per_combination=8)
        curation = replace(curation, fps=16.0, n_frames=32, height=128, width=128)
    return DataPreset(synthetic, ProbeConfig(), ValidationConfig(), curation)
