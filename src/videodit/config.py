"""The whole typed configuration of a project, every stage in one schema, and the named presets as data.

`ProjectConfig` holds the clip geometry every stage shares and one section per stage: the data layer
(`synthetic`, `probe`, `validation`, `captioning`, `curation`), the models (`vae`, `dit`, each beside its model), their
training runs (`vae_train`, `dit_train`), the `sampler` that previews, evaluates and serves, and `evaluation`.
A preset is a YAML file in `presets/` holding what differs from these defaults; `load_preset` reads it,
`with_overrides` applies launchpad values, and every construction checks the fields that must agree across
sections, so a wrong combination fails here, before anything trains. Every field is a plain JSON type, so
`dataclasses.asdict(cfg)` goes straight to MLflow, and `Cls(**d)` rebuilds it (lists come back as tuples).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from videodit.captioning.captioner import CaptioningConfig
from videodit.data.config import Bucket, CurationConfig, ProbeConfig, SyntheticConfig, ValidationConfig, as_buckets
from videodit.evaluation.model_report import METRICS, EvaluationConfig
from videodit.models.dit import DiTConfig
from videodit.models.text_encoder import text_encoder_width
from videodit.models.vae import VAEConfig
from videodit.sampling import SamplerConfig

PRESETS_DIR = Path(__file__).parent / "presets"
# Section fields that are the clip geometry under another name: set once, at the top level, copied in.
CLIP_FIELDS = {"n_frames": "frames", "height": "height", "width": "width", "fps": "fps", "buckets": "buckets"}
GEOMETRY = {"synthetic": CLIP_FIELDS, "curation": CLIP_FIELDS}


# Fields checkpoints of earlier versions carry: the sampler settings (the preset's `sampler` now) and the joint-image
# fraction (the bucket table's image buckets now).
RETIRED_TRAIN_FIELDS = ("sample_steps", "guidance_scale", "image_fraction")


@dataclass
class TrainConfig:
    """What every training run shares."""

    max_steps: int = 1000
    # Items per batch of the default bucket; this many of its items' tokens are every step's budget, so a batch
    # of another bucket holds as many items as fit in it (datamodule.py: BucketBatchSampler).
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    # "auto": bf16-mixed on CUDA; on a CPU fp32 unless cpu_bf16 and the CPU has native bf16 (AVX512-BF16/AMX), and
    # there whichever a few timed steps at the run's size find faster (on AVX2-only CPUs bf16 autocast is several
    # times slower; with native bf16 the small demo DiT measured slower too). The checkpoint records the choice.
    # Or any Lightning precision string.
    precision: str = "auto"
    cpu_bf16: bool = True
    compile: bool = False
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"  # "auto", "ddp", "ddp_spawn" or "fsdp"
    num_workers: int = 0
    log_every_steps: int = 10
    val_every_steps: int = 200
    val_batches: int = 4
    checkpoint_every_steps: int = 500

    @classmethod
    def from_saved(cls, saved: dict):
        """Rebuild from a checkpoint's hyperparameters, dropping the fields older versions had."""
        return cls(**{k: v for k, v in saved.items() if k not in RETIRED_TRAIN_FIELDS})

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "devices", "log_every_steps", "val_every_steps", "checkpoint_every_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")


@dataclass
class VAETrainConfig(TrainConfig):
    lr: float = 2e-4
    kl_weight: float = 1e-4  # weight of the per-element KL against the per-pixel reconstruction terms
    # Reconstruction = l1_weight * L1 + mse_weight * MSE. On the shapes set (measured, demo VAE, 600 steps) L1 sits
    # at all-black for long and reaches colour/shape read-back of 77%/68%; MSE reaches 100%/86%.
    l1_weight: float = 0.0
    mse_weight: float = 1.0
    # Extra weight on pixels that stand out from the clip's median colour. A small object on a plain background
    # is a few percent of the pixels; unweighted, a grey blob nearly minimises the mean loss and colour comes
    # last (measured: MSE without it reconstructs every shape white after 600 steps).
    foreground_weight: float = 5.0
    clip_frames: int = 0  # train on random windows of this many frames; 0 = whole clips
    crop_size: int = 0  # train on random square crops of this side; 0 = whole frames
    cpu_bf16: bool = False  # bf16 conv3d has no fast CPU kernel


@dataclass
class DiTTrainConfig(TrainConfig):
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # captions replaced by "" so the model also learns the unconditional velocity
    timestep_mean: float = 0.0  # logit-normal timestep sampling: t = sigmoid(N(mean, std))
    timestep_std: float = 1.0
    # Samples trained with some latent frames given (first, first k, last k, first + last): what image-to-video,
    # extension and interpolation sample from (`rectified_flow.conditioning_frames`); 0 trains text-to-video only.
    condition_fraction: float = 0.25

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.condition_fraction <= 1.0:
            raise ValueError(f"condition_fraction={self.condition_fraction} must be from 0 to 1")


@dataclass
class ProjectConfig:
    """One project's configuration: the clip geometry (frames, height, width, fps), the bucket table and a section
    per stage. frames × height × width is the default generation size, one of the buckets."""

    name: str
    frames: int
    height: int
    width: int
    fps: int
    # The shapes the data is curated into and the models train on; empty: the default size alone.
    buckets: tuple[Bucket, ...] = ()
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    captioning: CaptioningConfig = field(default_factory=CaptioningConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    vae_train: VAETrainConfig = field(default_factory=VAETrainConfig)
    dit_train: DiTTrainConfig = field(default_factory=DiTTrainConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self):
        self.buckets = as_buckets(self.buckets) or (Bucket(self.height, self.width, self.frames),)
        for section, copies in GEOMETRY.items():  # the geometry has one owner: the top-level fields
            value = getattr(self, section)
            setattr(self, section, replace(value, **{f: type(getattr(value, f))(getattr(self, top)) for f, top in copies.items()}))
        check_config(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def default_bucket(self) -> Bucket:
        return next(b for b in self.buckets if (b.frames, b.height, b.width) == (self.frames, self.height, self.width))

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> ProjectConfig:
        """Rebuild from nested dicts (a preset file, `to_dict`, MLflow params); unknown keys are errors naming `source`."""
        sections = {f.name: f.default_factory for f in fields(cls) if f.default_factory is not dataclasses.MISSING}
        _refuse_unknown(d, {f.name for f in fields(cls)}, source)
        values = {}
        for key, value in d.items():
            if key in sections:
                _refuse_unknown(value, {f.name for f in fields(sections[key])}, f"{source}: {key}")
                _refuse_other_geometry(key, value, d, source)
                try:
                    value = sections[key](**value)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{source}: {key}: {exc}") from None
            values[key] = value
        return cls(**values)

    def with_overrides(self, overrides: dict) -> ProjectConfig:
        """This config with `overrides` ({section: {field: value}} or {top-level field: value}) applied and checked."""
        merged = self.to_dict()
        for section, copies in GEOMETRY.items():  # derived again from the (maybe overridden) top-level geometry
            merged[section] = {k: v for k, v in merged[section].items() if k not in copies}
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return ProjectConfig.from_dict(merged, "overrides")


def _refuse_other_geometry(section: str, values: dict, top: dict, source: str) -> None:
    """A section may repeat the clip geometry (as `to_dict` writes it) but not change it."""
    for name, top_name in GEOMETRY.get(section, {}).items():
        if name in values and top_name in top and values[name] != top[top_name]:
            raise ValueError(f"{source}: {section}.{name}={values[name]} differs from {top_name}={top[top_name]}; "
                             f"the clip geometry is set once, at the top level")


def _refuse_unknown(values: dict, known: set[str], source: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of fields, got {values!r}")
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")


def check_config(cfg: ProjectConfig) -> None:
    """The rules that tie sections together; each error names the fields to change."""
    errors = []
    if cfg.dit.latent_channels != cfg.vae.latent_channels:
        errors.append(f"dit.latent_channels={cfg.dit.latent_channels} must equal vae.latent_channels={cfg.vae.latent_channels}")
    if cfg.dit.text_dim != text_encoder_width():
        errors.append(f"dit.text_dim={cfg.dit.text_dim} must equal the text encoder's width {text_encoder_width()}")
    _, patch_h, patch_w = cfg.dit.patch_size
    for name, size, patch in (("height", cfg.height, patch_h), ("width", cfg.width, patch_w)):
        multiple = cfg.vae.spatial_compression * patch
        if size % multiple:
            errors.append(f"{name}={size} must be a multiple of vae.spatial_compression × dit.patch_size = {multiple}")
    errors += _bucket_errors(cfg)
    crop = cfg.vae_train.crop_size
    if crop and (crop % cfg.vae.spatial_compression or crop > min(cfg.height, cfg.width)):
        errors.append(f"vae_train.crop_size={crop} must be a multiple of {cfg.vae.spatial_compression} and fit in {cfg.height}×{cfg.width}")
    if cfg.vae_train.clip_frames > cfg.frames:
        errors.append(f"vae_train.clip_frames={cfg.vae_train.clip_frames} is longer than the clips (frames={cfg.frames})")
    if cfg.dit_train.condition_fraction and cfg.dit.patch_size[0] != 1:
        errors.append(f"dit_train.condition_fraction={cfg.dit_train.condition_fraction} gives single latent frames, "
                      f"which dit.patch_size={cfg.dit.patch_size} groups in time: use a temporal patch of 1")  # fmt: skip
    captioning = cfg.captioning
    if captioning.captioner == "vision_language" and not captioning.model_dir:
        errors.append("captioning.captioner='vision_language' needs captioning.model_dir, the local folder of the model")
    if captioning.train_on == "generated" and not captioning.generates:
        errors.append("captioning.train_on='generated' needs a captioning.captioner other than 'none'")
    if cfg.evaluation.primary_metric not in METRICS:
        errors.append(f"evaluation.primary_metric={cfg.evaluation.primary_metric!r} is not one of {', '.join(METRICS)}")
    if errors:
        raise ValueError(f"config {cfg.name!r} is inconsistent: " + "; ".join(errors))


def _bucket_errors(cfg: ProjectConfig) -> list[str]:
    """Each entry of the table must code to whole latent patches, and the default size must be one of them."""
    errors = []
    patch_t, patch_h, patch_w = cfg.dit.patch_size
    r = cfg.vae.temporal_compression
    for i, b in enumerate(cfg.buckets):
        entry = f"buckets[{i}] ({b.frames}×{b.height}×{b.width})"
        for name, size, patch in (("height", b.height, patch_h), ("width", b.width, patch_w)):
            multiple = cfg.vae.spatial_compression * patch
            if size <= 0 or size % multiple:
                errors.append(f"{entry}: {name}={size} must be a multiple of vae.spatial_compression × dit.patch_size = {multiple}")
        if b.frames < 1 or (b.frames - 1) % r:
            errors.append(f"{entry}: frames={b.frames} must be 1 + {r}·k (vae.temporal_compression={r}), e.g. {1 + r * max(1, round((b.frames - 1) / r))}")
        elif (1 + (b.frames - 1) // r) % patch_t:
            errors.append(f"{entry}: frames={b.frames} make {1 + (b.frames - 1) // r} latent frames, not a multiple of dit.patch_size[0]={patch_t}")
        if not b.weight > 0:
            errors.append(f"{entry}: weight={b.weight} must be positive")
    if not any((b.frames, b.height, b.width) == (cfg.frames, cfg.height, cfg.width) for b in cfg.buckets):
        errors.append(f"the default size frames×height×width = {cfg.frames}×{cfg.height}×{cfg.width} is not one of the buckets")
    return errors


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> ProjectConfig:
    """The preset `name` from `presets/<name>.yaml`, on top of the schema's defaults, checked."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(preset_names())}")
    return ProjectConfig.from_dict({"name": name, **(yaml.safe_load(path.read_text(encoding="utf-8")) or {})}, str(path))
