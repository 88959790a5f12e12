"""Text-to-video with the exported ONNX bundle: numpy, onnxruntime and tokenizers only, no torch. Clips may
also begin or end with given frames (animate an image, continue a clip, interpolate), and be longer than the
model's window (generated window by window): `videodit.conditioning`.

The bundle (written by `videodit.export.export_bundle`) holds five graphs and a tokenizer:
  text_encoder.onnx  token ids [B, L] + attention mask -> caption tokens [B, L, D]
  condition.onnx     caption tokens -> the DiT's caption conditioning (pooled embedding, every block's
                     cross-attention K/V) for the CFG batch: once per video
  dit.onnx           one classifier-free-guided Euler step of the rectified-flow sampler (DiT inside), keeping
                     the given latent frames as they are
  vae_encoder.onnx   video [B, 3, 1 + r(t-1), H, W] in [-1, 1] -> latents: the frames a clip is conditioned on
  vae_decoder.onnx   latents [B, C, t, h, w] -> video [B, 3, 1 + r(t-1), H, W] in [-1, 1]
and bundle.json with the sampler (its settings and the exact float32 timesteps it was exported with), the clip
defaults, the sizes the model was trained at (its preset's buckets, 1-frame image buckets too: other sizes the
graphs accept get a warning), the sizes the graphs accept and the precision of the graphs ("fp32", or "int8": a
quantized copy).

The sampler is the one torch evaluates with: `videodit.sampling`'s schedule, per-prompt noise and Euler loop,
stepping through dit.onnx, which is `videodit.models.rectified_flow.GuidedEulerStep` exported (and condition.onnx
its `GuidedCondition`); so a (prompt, seed) gives the video evaluation scored, alone or in a batch.

Between steps everything stays where the DiT runs: the conditioning is bound once, the timesteps are OrtValues
made once per batch, and the latents alternate between two OrtValues, one bound as a step's input and the other
as its output; a step allocates and copies nothing. On CPU that is plain memory (and tested); on CUDA it keeps
the latents on the GPU. The CUDA branch cannot be exercised on the CPU-only test machine.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from videodit.data.config import Bucket, as_buckets
from videodit.conditioning import (
    FrameCondition, extend_video, given_latents, long_video, start_latents, window_seed,
)
from videodit.sampling import SamplerConfig, euler, initial_noise, prompt_seeds, to_uint8_videos

BUNDLE_JSON = "bundle.json"
TEXT_ENCODER_ONNX = "text_encoder.onnx"
CONDITION_ONNX = "condition.onnx"
DIT_ONNX = "dit.onnx"
VAE_ENCODER_ONNX = "vae_encoder.onnx"
VAE_DECODER_ONNX = "vae_decoder.onnx"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_JSON = "tokenizer.json"
# 2: the sampler with its shift and exact timesteps ("sampler"), the clip defaults apart ("clip", "text").
# 3: the captions' conditioning in condition.onnx, once per video, which dit.onnx takes; "precision".
# 4: the trained sizes ("buckets"); frame limits step by r from the fewest frames, so each count is 1 + r·k.
# 5: frame conditioning: vae_encoder.onnx, and dit.onnx takes given_latents / given_frames.
BUNDLE_FORMAT_VERSION = 5

# Prompts per DiT batch (each runs twice: conditional and unconditional); bounds memory for long prompt files.
MAX_BATCH = 8
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class SizeRange:
    """Values from `minimum` to `maximum` in steps of `multiple` (one value when the graph is static)."""

    minimum: int
    maximum: int
    multiple: int

    def allows(self, value: int) -> bool:
        return self.minimum <= value <= self.maximum and (value - self.minimum) % self.multiple == 0

    def describe(self) -> str:
        if self.minimum == self.maximum:
            return f"{self.minimum} (this bundle was exported at a fixed size)"
        if self.minimum % self.multiple == 0:
            return f"a multiple of {self.multiple} from {self.minimum} to {self.maximum}"
        values = range(self.minimum, self.maximum + 1, self.multiple)  # e.g. frames 1 + r·k
        shown = ", ".join(map(str, values)) if len(values) <= 4 else f"{', '.join(map(str, values[:3]))}, ... {self.maximum}"
        return f"one of {shown} (steps of {self.multiple})"


@dataclass(frozen=True)
class BundleSpec:
    """What bundle.json says: the sampler and its timesteps, clip defaults, model geometry and the sizes the
    graphs accept."""

    root: Path
    sampler: SamplerConfig
    timesteps: np.ndarray  # float32 [sampler.steps + 1], as exported: not derived again
    fps: int
    frames: int
    height: int
    width: int
    latent_shift: float  # informative: vae_decoder.onnx applies the normalisation itself
    latent_scale: float
    max_tokens: int
    pad_token_id: int
    latent_channels: int
    spatial_compression: int
    temporal_compression: int
    frame_range: SizeRange
    height_range: SizeRange
    width_range: SizeRange
    buckets: tuple[Bucket, ...]  # the sizes the model was trained at
    source_versions: dict
    precision: str  # of dit.onnx (and vae_decoder.onnx where quantizing it held quality): "fp32" or "int8"

    @classmethod
    def load(cls, bundle_dir: Path | str) -> BundleSpec:
        root = Path(bundle_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"model bundle folder not found: {root}")
        spec_path = root / BUNDLE_JSON
        if not spec_path.is_file():
            raise FileNotFoundError(f"{spec_path} is missing: {root} is not an exported videodit bundle")
        raw = json.loads(spec_path.read_text())
        found = raw.get("format_version")
        if found != BUNDLE_FORMAT_VERSION:
            raise ValueError(
                f"{spec_path}: bundle format_version {found!r}, this videodit reads {BUNDLE_FORMAT_VERSION}: "
                "export the bundle again with this version (materialize onnx_models)"
            )
        for name in (TEXT_ENCODER_ONNX, CONDITION_ONNX, DIT_ONNX, VAE_ENCODER_ONNX, VAE_DECODER_ONNX,
                     f"{TOKENIZER_DIR}/{TOKENIZER_JSON}"):  # fmt: skip
            if not (root / name).is_file():
                raise FileNotFoundError(f"{root / name} is missing from the bundle")
        sampler, clip, text, geometry, limits = (raw[k] for k in ("sampler", "clip", "text", "geometry", "limits"))
        timesteps = np.array(sampler.pop("timesteps"), np.float32)
        sampler = SamplerConfig(**sampler)
        if len(timesteps) != sampler.steps + 1:
            raise ValueError(f"{spec_path}: {len(timesteps)} timesteps for {sampler.steps} steps (needs steps + 1)")
        return cls(
            root=root,
            sampler=sampler,
            timesteps=timesteps,
            fps=clip["fps"],
            frames=clip["frames"],
            height=clip["height"],
            width=clip["width"],
            latent_shift=clip["latent_shift"],
            latent_scale=clip["latent_scale"],
            max_tokens=text["max_tokens"],
            pad_token_id=text["pad_token_id"],
            latent_channels=geometry["latent_channels"],
            spatial_compression=geometry["spatial_compression"],
            temporal_compression=geometry["temporal_compression"],
            frame_range=SizeRange(**limits["frames"]),
            height_range=SizeRange(**limits["height"]),
            width_range=SizeRange(**limits["width"]),
            buckets=as_buckets(raw["buckets"]),
            source_versions=raw["source_versions"],
            precision=raw["precision"],
        )

    def latent_frames(self, frames: int) -> int:
        """The causal VAE's frame rule: 1 + r*k video frames <-> 1 + k latent frames, longer clips trimmed."""
        return 1 + math.ceil((frames - 1) / self.temporal_compression)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        s = self.spatial_compression
        return (self.latent_channels, self.latent_frames(frames), height // s, width // s)


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, with CPU as the fallback for any op CUDA lacks."""
    return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in ort.get_available_providers() else [CPU_PROVIDER]


def physical_cores() -> int:
    """Cores this process may run on, a core's hyperthreads counted once: onnxruntime's intra-op threads gain
    nothing from a core's second hardware thread and lose to the contention."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:  # no sysfs topology (not Linux, some containers): every allowed CPU is a core
            return len(cpus)
    return len(cores)


def session_settings(threads: int | None = None) -> dict:
    """The onnxruntime session settings the generator runs with, as `session_options` applies them and the
    manifest of a generation run records them."""
    return {
        "intra_op_num_threads": threads or physical_cores(),
        "inter_op_num_threads": 1,  # the graphs are chains of ops: sequential execution, no second pool
        "graph_optimization_level": "ORT_ENABLE_ALL",  # fusions (attention, GELU, layer norm, MatMul + Add)
        "enable_mem_pattern": True,  # shapes repeat every step: plan the buffers once
        "enable_cpu_mem_arena": True,
        # Every session's threads spin while it runs and stop the moment its run returns: a pool left spinning
        # (the DiT's, after its last step) takes the cores the next graph needs, and a sleeping pool pays a wake-up
        # per node. Measured on 2 cores, demo size, int8, batch 2: 54 -> 45 ms per video (median of 3 processes)
        # against spinning in the DiT's steps only; spinning everywhere without the stop: 97 ms.
        "allow_spinning": True,
        "force_spinning_stop": True,
    }


def session_options(settings: dict) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings["intra_op_num_threads"]
    options.inter_op_num_threads = settings["inter_op_num_threads"]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings["graph_optimization_level"])
    options.enable_mem_pattern = settings["enable_mem_pattern"]
    options.enable_cpu_mem_arena = settings["enable_cpu_mem_arena"]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings["allow_spinning"] else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1" if settings["force_spinning_stop"] else "0")
    return options


class OnnxVideoGenerator:
    """Generates uint8 videos [T, H, W, 3] from prompts with an exported bundle folder.

    threads: onnxruntime's intra-op threads (default: the physical cores); `settings` records what the sessions
    run with."""

    def __init__(self, bundle_dir: Path | str, providers: list[str] | None = None, threads: int | None = None):
        self.spec = BundleSpec.load(bundle_dir)
        self.providers = providers or default_providers()
        self.settings = session_settings(threads)
        root = self.spec.root

        def session(graph: str) -> ort.InferenceSession:
            return ort.InferenceSession(str(root / graph), session_options(self.settings), providers=self.providers)

        self.text_encoder, self.condition = session(TEXT_ENCODER_ONNX), session(CONDITION_ONNX)
        self.dit, self.vae_decoder = session(DIT_ONNX), session(VAE_DECODER_ONNX)
        self.vae_encoder = session(VAE_ENCODER_ONNX)
        self.device = "cuda" if self.dit.get_providers()[0] == CUDA_PROVIDER else "cpu"
        self.tokenizer = Tokenizer.from_file(str(root / TOKENIZER_DIR / TOKENIZER_JSON))
        self.tokenizer.enable_truncation(self.spec.max_tokens)
        # Pad each batch to its longest prompt; bundles exported with a fixed caption length get max_tokens.
        fixed_length = self.text_encoder.get_inputs()[0].shape[1]
        self.tokenizer.enable_padding(length=fixed_length if isinstance(fixed_length, int) else None,
                                      pad_id=self.spec.pad_token_id)  # fmt: skip

    def generate(
        self,
        prompts: list[str],
        seeds: int | list[int],
        steps: int | None = None,
        guidance: float | None = None,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        conditions: list[FrameCondition | None] | None = None,
    ) -> list[np.ndarray]:
        """One clip per prompt, prompt i from seeds[i] (an int s means s, s + 1, ...); settings left as None take
        the bundle's defaults. conditions: per prompt, the frames its clip begins/ends with, at the clip's size
        (`videodit.conditioning.FrameCondition`), or None for text only."""
        spec = self.spec
        sampler = self.sampler(steps, guidance)
        frames = spec.frames if frames is None else frames
        height = spec.height if height is None else height
        width = spec.width if width is None else width
        self.check_request(prompts, frames, height, width)
        conditions = conditions or [None] * len(prompts)
        if len(conditions) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(conditions)} conditions; give one per prompt")
        seeds, timesteps = prompt_seeds(seeds, len(prompts)), self.timesteps(sampler)
        videos: list[np.ndarray] = []
        for start in range(0, len(prompts), MAX_BATCH):
            chunk = slice(start, start + MAX_BATCH)
            videos += self._generate_batch(
                prompts[chunk], seeds[chunk], timesteps, sampler.guidance, frames, height, width, conditions[chunk]
            )
        return videos

    def window_frames(self, height: int, width: int) -> int:
        """The longest clip trained at this size (the default clip's length at an untrained size): the window of
        extended and long videos."""
        return max((b.frames for b in self.spec.buckets if (b.height, b.width) == (height, width)), default=self.spec.frames)

    def generate_long(
        self, prompt: str, seed: int, frames: int, height: int | None = None, width: int | None = None,
        condition: FrameCondition | None = None, steps: int | None = None, guidance: float | None = None,
    ) -> np.ndarray:  # fmt: skip
        """One clip of any length: up to `window_frames` at once, beyond it window by window, each continuing the
        last (`videodit.conditioning.long_video`). Its first window is `generate`'s clip for (prompt, seed)."""
        height, width = height or self.spec.height, width or self.spec.width
        window = self.window_frames(height, width)
        generate = self._window(prompt, seed, height, width, steps, guidance)
        return long_video(generate, frames, window, self.spec.temporal_compression, condition)

    def extend(
        self, prompt: str, seed: int, clip: np.ndarray, new_frames: int, backward: bool = False,
        steps: int | None = None, guidance: float | None = None,
    ) -> np.ndarray:  # fmt: skip
        """`clip` (uint8 [T, H, W, 3] at a size the bundle serves) with `new_frames` generated after it, or
        before it when `backward`."""
        height, width = clip.shape[1:3]
        generate = self._window(prompt, seed, height, width, steps, guidance)
        window = self.window_frames(height, width)
        return extend_video(generate, clip, new_frames, window, self.spec.temporal_compression, backward)

    def _window(self, prompt: str, seed: int, height: int, width: int, steps: int | None, guidance: float | None):
        """A `GenerateWindow` for one prompt, window i drawing the noise of `window_seed(seed, i)`."""

        def generate(frames: int, condition: FrameCondition | None, index: int) -> np.ndarray:
            sampler = self.sampler(steps, guidance)
            self.check_request([prompt], frames, height, width)
            return self._generate_batch([prompt], [window_seed(seed, index)], self.timesteps(sampler), sampler.guidance, frames,
                                        height, width, [condition])[0]  # fmt: skip

        return generate

    def sampler(self, steps: int | None = None, guidance: float | None = None) -> SamplerConfig:
        """The bundle's sampler with `steps` and `guidance` replaced where given (ValueError when out of range)."""
        overrides = {name: value for name, value in (("steps", steps), ("guidance", guidance)) if value is not None}
        return replace(self.spec.sampler, **overrides)

    def timesteps(self, sampler: SamplerConfig) -> np.ndarray:
        """The bundle's stored timesteps for its own steps and shift; another step count gets the schedule of that
        count at the bundle's shift, computed by `videodit.sampling`."""
        stored = self.spec.sampler
        if (sampler.steps, sampler.shift) == (stored.steps, stored.shift):
            return self.spec.timesteps
        return sampler.timesteps()

    def check_request(self, prompts: list[str], frames: int, height: int, width: int) -> None:
        """Raise ValueError naming the offending value and what is allowed; warn of a size not trained at."""
        if isinstance(prompts, str) or not prompts:
            raise ValueError("prompts must be a non-empty list of strings")
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                where = f" (prompt {index + 1} of {len(prompts)})" if len(prompts) > 1 else ""
                raise ValueError(f"prompt is empty{where}")
        for name, value, allowed in (
            ("frames", frames, self.spec.frame_range),
            ("height", height, self.spec.height_range),
            ("width", width, self.spec.width_range),
        ):
            if not allowed.allows(value):
                raise ValueError(f"{name}={value} is not supported by this model: use {allowed.describe()}")
        if not any((b.frames, b.height, b.width) == (frames, height, width) for b in self.spec.buckets):
            trained = ", ".join(f"{b.width}x{b.height} × {b.frames} frames" for b in self.spec.buckets)
            warnings.warn(f"{width}x{height} × {frames} frames was not trained (trained: {trained}): expect lower "
                          "quality", UserWarning, stacklevel=3)  # fmt: skip

    def encode_text(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Caption tokens [B, L, D] float32 and mask [B, L] bool; warns about prompts cut to max_tokens."""
        encodings = self.tokenizer.encode_batch(prompts)
        for prompt, encoding in zip(prompts, encodings):
            if encoding.overflowing:
                warnings.warn(
                    f"prompt truncated to {self.spec.max_tokens} tokens: {prompt[:60]!r}...", UserWarning, stacklevel=3
                )
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (tokens,) = self.text_encoder.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        return tokens.astype(np.float32), attention_mask.astype(bool)

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [1 + r·k, H, W, 3] -> normalised latents [C, 1 + k, h, w]: `videodit.conditioning`'s Encode."""
        video = (frames.astype(np.float32) / 127.5 - 1.0).transpose(3, 0, 1, 2)[None]
        (latents,) = self.vae_encoder.run(None, {"video": np.ascontiguousarray(video)})
        return latents[0]

    def sample_latents(self, prompts: list[str], seeds: list[int], frames: int, height: int, width: int) -> np.ndarray:
        """The normalised latents [B, C, 1 + k, h, w] that `generate` decodes for these prompts and seeds at the
        bundle's sampler, text only (one batch; e.g. to calibrate a quantized decoder on what it decodes)."""
        self.check_request(prompts, frames, height, width)
        sampler = self.sampler()
        return self._sample(prompts, prompt_seeds(seeds, len(prompts)), self.timesteps(sampler), sampler.guidance, frames,
                            height, width, [None] * len(prompts))  # fmt: skip

    def _generate_batch(
        self, prompts: list[str], seeds: list[int], timesteps: np.ndarray, guidance: float, frames: int, height: int,
        width: int, conditions: list[FrameCondition | None],
    ) -> list[np.ndarray]:  # fmt: skip
        latents = self._sample(prompts, seeds, timesteps, guidance, frames, height, width, conditions)
        (video,) = self.vae_decoder.run(None, {"latents": latents})
        return list(to_uint8_videos(video[:, :, :frames]))

    def _sample(
        self, prompts: list[str], seeds: list[int], timesteps: np.ndarray, guidance: float, frames: int, height: int,
        width: int, conditions: list[FrameCondition | None],
    ) -> np.ndarray:  # fmt: skip
        # The empty caption rides along in the same text-encoder batch: it is the unconditional input of CFG.
        tokens, mask = self.encode_text([*prompts, ""])
        condition = self._condition(tokens[:-1], mask[:-1], tokens[-1:], mask[-1:])
        latent_shape = self.spec.latent_shape(frames, height, width)
        given = given_latents(conditions, latent_shape, self.spec.temporal_compression, (height, width), self.encode_frames)
        start = start_latents(initial_noise(seeds, latent_shape), *given)
        return self._denoise(start, condition, given, timesteps, guidance)

    def _ortvalue(self, value: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(value, self.device, 0)

    def _condition(
        self, text: np.ndarray, text_mask: np.ndarray, null_text: np.ndarray, null_mask: np.ndarray
    ) -> dict[str, ort.OrtValue]:
        """condition.onnx once per batch; its outputs, by name, stay on self.device for dit.onnx."""
        binding = self.condition.io_binding()
        for name, value in zip(("text", "text_mask", "null_text", "null_mask"), (text, text_mask, null_text, null_mask)):
            binding.bind_ortvalue_input(name, self._ortvalue(value))
        names = [output.name for output in self.condition.get_outputs()]
        for name in names:
            binding.bind_output(name, self.device)
        self.condition.run_with_iobinding(binding)
        return dict(zip(names, binding.get_outputs()))

    def _denoise(
        self, noise: np.ndarray, condition: dict[str, ort.OrtValue], given: tuple[np.ndarray, np.ndarray],
        timesteps: np.ndarray, guidance: float,
    ) -> np.ndarray:  # fmt: skip
        """Euler along `timesteps` from `noise` (holding the given latent frames), one dit.onnx call per step,
        nothing leaving self.device or being allocated."""
        binding = self.dit.io_binding()
        for name, value in condition.items():
            binding.bind_ortvalue_input(name, value)
        for name, value in zip(("given_latents", "given_frames"), given):
            binding.bind_ortvalue_input(name, self._ortvalue(value))
        binding.bind_ortvalue_input("guidance", self._ortvalue(np.array(guidance, np.float32)))
        times = {t: self._ortvalue(np.array(t, np.float32)) for t in timesteps}
        # Copied in once (on CPU an OrtValue wraps the array itself, which the steps overwrite).
        buffers = (self._ortvalue(noise.copy()), self._ortvalue(np.empty_like(noise)))

        def step(latents: ort.OrtValue, t: np.float32, t_next: np.float32) -> ort.OrtValue:
            following = buffers[1] if latents is buffers[0] else buffers[0]
            binding.bind_ortvalue_input("latents", latents)
            binding.bind_ortvalue_input("t", times[t])
            binding.bind_ortvalue_input("t_next", times[t_next])
            binding.bind_ortvalue_output("next_latents", following)
            self.dit.run_with_iobinding(binding)
            return following

        # A copy: on CPU .numpy() is a view of a buffer that is freed when this returns.
        return euler(step, buffers[0], timesteps).numpy().copy()
