"""Export the trained models to an ONNX bundle, and prove the bundle computes what PyTorch computes.

`export_bundle` writes the folder `videodit.generation.OnnxVideoGenerator` reads (see that module for the
layout). The DiT is exported as two graphs: the captions' conditioning (pooled embedding, every block's
cross-attention K/V), run once per video, and one classifier-free-guided Euler step taking it and the given
latent frames, so a generator calls one graph per step and can keep the latents and the conditioning on its
device between steps. The VAE encoder is exported too, for the frames a clip is conditioned on.

`graph_parity` compares each graph with its PyTorch module; `end_to_end_parity` runs the same prompts, seeds
and timesteps through `generate_videos` in PyTorch and through the bundle in onnxruntime and returns the PSNR.
`quantize_bundle` makes an int8 copy of a bundle, and `bundle_psnr` measures it against the fp32 one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript
import torch
from onnxscript import opset23 as op
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn
from torch.export import Dim

from videodit.data.config import Bucket, as_buckets
from videodit.evaluation.image_quality import psnr
from videodit.export.per_frame import per_frame_form
from videodit.export.translations import TRANSLATIONS
from videodit.generation.onnx_generator import (
    BUNDLE_FORMAT_VERSION,
    BUNDLE_JSON,
    CONDITION_ONNX,
    DIT_ONNX,
    TEXT_ENCODER_ONNX,
    TOKENIZER_DIR,
    VAE_DECODER_ONNX,
    VAE_ENCODER_ONNX,
    BundleSpec,
    OnnxVideoGenerator,
)
from videodit.models.dit import SpacetimeDiT
from videodit.models.rectified_flow import GuidedCondition, GuidedEulerStep, generate_videos
from videodit.models.text_encoder import MiniLMTextEncoder
from videodit.models.vae import VideoVAE, channels_to_frames, frames_to_channels
from videodit.sampling import SamplerConfig
from videodit.config import ProjectConfig

# 23: tanh-GELU exports as one Gelu node, which onnxruntime runs fused (attention: see export/translations.py).
OPSET = op.version
# Dynamic graphs accept latents up to this many times the largest bucket's latent frames, height and width.
MAX_SIZE_FACTOR = 4
MAX_BATCH = 256
CLIP_KEYS = ("fps", "frames", "height", "width")
# condition.onnx's outputs are dit.onnx's inputs of the same names.
CONDITION_NAMES = {"inputs": ["text", "text_mask", "null_text", "null_mask"], "outputs": ["pooled", "text_kv", "cfg_mask"]}
STEP_NAMES = {"inputs": ["latents", "t", "t_next", "guidance", *CONDITION_NAMES["outputs"], "given_latents",
                        "given_frames"], "outputs": ["next_latents"]}  # fmt: skip
PARITY_SEED = 0
PARITY_BATCH = 2


class TextEncoderGraph(nn.Module):
    """MiniLM's token embeddings for (input_ids, attention_mask), as `MiniLMTextEncoder.encode` returns them."""

    def __init__(self, text_encoder: MiniLMTextEncoder):
        super().__init__()
        self.model = text_encoder.model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        token_type_ids = torch.zeros_like(input_ids)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0].float()


class VAEDecoderGraph(nn.Module):
    """The VAE decoder without the frame trim (the generator cuts the clip to the frames asked for), taking the
    DiT's normalised latents: `latents / latent_scale + latent_shift` undoes the statistics of `encode_latents`.
    A VAE whose convs see one latent frame each runs as an image network (`per_frame_form`)."""

    def __init__(self, vae: VideoVAE, latent_shift: float = 0.0, latent_scale: float = 1.0):
        super().__init__()
        self.decoder, self.r = vae.decoder, vae.config.temporal_compression
        self.per_frame = per_frame_form(vae, vae.decoder.layers)
        self.latent_shift, self.latent_scale = latent_shift, latent_scale

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents / self.latent_scale + self.latent_shift
        return self.decoder(z) if self.per_frame is None else channels_to_frames(self.per_frame(z), self.r)


class VAEEncoderGraph(nn.Module):
    """Video [B, 3, 1 + r·k, H, W] in [-1, 1] -> the DiT's normalised latents (the posterior mean), as
    `rectified_flow.vae_encoder` encodes given frames in torch."""

    def __init__(self, vae: VideoVAE, latent_shift: float = 0.0, latent_scale: float = 1.0):
        super().__init__()
        self.encoder, self.r, self.latent_channels = vae.encoder, vae.config.temporal_compression, vae.config.latent_channels
        self.per_frame = per_frame_form(vae, vae.encoder.layers)
        self.latent_shift, self.latent_scale = latent_shift, latent_scale

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.per_frame is None:
            moments = self.encoder(video)
        else:
            moments = self.per_frame(frames_to_channels(video, self.r))
        mean = moments[:, : self.latent_channels]
        return (mean - self.latent_shift) * self.latent_scale


def random_models(preset: ProjectConfig, weight_std: float, seed: int = 0) -> tuple[VideoVAE, SpacetimeDiT]:
    """An untrained VAE and a DiT with every weight drawn from N(0, weight_std²), for parity checks and speed
    benchmarks: adaLN-Zero starts a fresh DiT at zero velocity, which would make parity trivially exact."""
    torch.manual_seed(seed)
    vae, dit = VideoVAE(preset.vae).eval(), SpacetimeDiT(preset.dit).eval()
    with torch.no_grad():
        for parameter in dit.parameters():
            parameter.normal_(0.0, weight_std)
    return vae, dit


def _export(module: nn.Module, args: tuple, path: Path, names: dict[str, list[str]], shapes: dict) -> None:
    # torch.export first, on its own: torch.onnx.export would otherwise retry failures with looser strategies
    # that silently pin dynamic sizes.
    program = torch.export.export(module.eval(), args, dynamic_shapes=shapes, strict=False)
    torch.onnx.export(
        program, args, str(path), dynamo=True, opset_version=OPSET, input_names=names["inputs"],
        output_names=names["outputs"], custom_translation_table=TRANSLATIONS, verbose=False,
    )  # fmt: skip


def _export_with_fallback(
    module: nn.Module, args: tuple, path: Path, names: dict[str, list[str]], dynamic: dict, batch_only: dict
) -> bool:
    """Export with dynamic latent T/H/W; if torch.export cannot, at the example's T/H/W. True when dynamic."""
    try:
        _export(module, args, path, names, dynamic)
        return True
    except torch._dynamo.exc.UserError as exc:  # what torch.export raises for a size it cannot keep symbolic
        warnings.warn(f"{path.name}: dynamic latent T/H/W failed, exporting at {tuple(args[0].shape)}: {exc}")
        _export(module, args, path, names, batch_only)
        return False


def _size_limits(
    vae: VideoVAE, dit: SpacetimeDiT, buckets: tuple[Bucket, ...], dynamic: bool
) -> dict[str, dict[str, int]]:
    """The frames, heights and widths the graphs accept: ranges covering every bucket when dynamic, else the one
    size exported. Frames step by r (times the temporal patch) from the fewest, so each is 1 + r·k."""
    s, r = vae.config.spatial_compression, vae.config.temporal_compression
    pt, ph, pw = dit.config.patch_size
    if not dynamic:
        (b,) = buckets
        return {name: {"minimum": v, "maximum": v, "multiple": v} for name, v in
                (("frames", b.frames), ("height", b.height), ("width", b.width))}  # fmt: skip
    fewest, most = (pt * p for p in _latent_t_patches(vae, dit, buckets))
    return {
        "frames": {"minimum": 1 + r * (fewest - 1), "maximum": 1 + r * (most - 1), "multiple": r * pt},
        "height": {"minimum": s * ph, "maximum": MAX_SIZE_FACTOR * max(b.height for b in buckets), "multiple": s * ph},
        "width": {"minimum": s * pw, "maximum": MAX_SIZE_FACTOR * max(b.width for b in buckets), "multiple": s * pw},
    }


def _latent_t_patches(vae: VideoVAE, dit: SpacetimeDiT, buckets: tuple[Bucket, ...]) -> tuple[int, int]:
    """The fewest and most latent frames of the dynamic graphs, in temporal patches. From one patch: one latent
    frame at a temporal patch of 1 (which image buckets need), so image buckets share the video graphs.
    torch.export specialises sizes 0 and 1 of the example inputs only, and the example clip has more frames."""
    pt = dit.config.patch_size[0]
    return 1, MAX_SIZE_FACTOR * max(vae.latent_frames(b.frames) for b in buckets) // pt


def export_bundle(
    vae: VideoVAE,
    dit: SpacetimeDiT,
    text_encoder: MiniLMTextEncoder,
    out_dir: Path | str,
    sampler: SamplerConfig,
    clip: dict,
    source_versions: dict,
    buckets: tuple[Bucket, ...] = (),
) -> Path:
    """Write text_encoder.onnx, condition.onnx, dit.onnx, vae_encoder.onnx, vae_decoder.onnx, tokenizer/ and
    bundle.json (precision fp32; `quantize_bundle` makes an int8 copy) into `out_dir`.

    sampler: stored with its timesteps, which the generator then uses as they are. clip: fps, frames, height,
    width (the training clip, the default of generated videos) and optionally latent_shift and latent_scale (the
    DiT's latent normalisation, undone inside vae_decoder.onnx). source_versions: where the weights came from
    (e.g. MLflow model URIs and run ids), stored as given. buckets: the preset's bucket table, image (T=1) buckets
    included (the clip size when none): the sizes bundle.json names as trained, which the graphs' limits cover.
    """
    missing = [key for key in CLIP_KEYS if key not in clip]
    if missing:
        raise ValueError(f"clip lacks {', '.join(missing)} (needs {', '.join(CLIP_KEYS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames, height, width = (clip[k] for k in ("frames", "height", "width"))
    latent_shift = float(clip.get("latent_shift", 0.0))
    latent_scale = float(clip.get("latent_scale", 1.0))
    latent_shape = vae.latent_shape(frames, height, width)
    channels = latent_shape[0]
    trained = as_buckets(buckets) or (Bucket(height, width, frames),)
    pt, ph, pw = dit.config.patch_size
    max_tokens, text_dim = text_encoder.max_tokens, text_encoder.dim

    batch = Dim("batch", min=1, max=MAX_BATCH)
    # Captions are padded to the longest of their batch, not to max_tokens: the empty caption has 2 tokens.
    caption = Dim("caption_tokens", min=2, max=max_tokens)
    ids = torch.full((PARITY_BATCH, max_tokens), text_encoder.tokenizer.pad_token_id, dtype=torch.int64)
    _export(
        TextEncoderGraph(text_encoder), (ids, torch.ones_like(ids)), out / TEXT_ENCODER_ONNX,
        {"inputs": ["input_ids", "attention_mask"], "outputs": ["tokens"]},
        {"input_ids": {0: batch, 1: caption}, "attention_mask": {0: batch, 1: caption}},
    )  # fmt: skip

    # Latent sizes as multiples of the patch, so dynamo can prove the DiT's patchify divides evenly.
    fewest_t, most_t = _latent_t_patches(vae, dit, trained)
    s = vae.config.spatial_compression
    t_dim = pt * Dim("latent_t_patches", min=fewest_t, max=most_t)
    h_dim = ph * Dim("latent_h_patches", min=1, max=MAX_SIZE_FACTOR * max(b.height for b in trained) // (s * ph))
    w_dim = pw * Dim("latent_w_patches", min=1, max=MAX_SIZE_FACTOR * max(b.width for b in trained) // (s * pw))
    latents = torch.randn(PARITY_BATCH, *latent_shape)
    text = torch.randn(PARITY_BATCH, max_tokens, text_dim)
    mask = torch.ones(PARITY_BATCH, max_tokens, dtype=torch.bool)
    condition_args = (text, mask, text[:1].clone(), mask[:1].clone())
    caption_shapes = {"text": {0: batch, 1: caption}, "text_mask": {0: batch, 1: caption}, "null_text": {1: caption},
                      "null_mask": {1: caption}}  # fmt: skip
    _export(GuidedCondition(dit), condition_args, out / CONDITION_ONNX, CONDITION_NAMES, caption_shapes)
    with torch.no_grad():
        condition = GuidedCondition(dit).eval()(*condition_args)
    # Distinct tensors for the scalars: torch.export would merge one tensor passed three times into one input.
    t, t_next, guidance = torch.tensor(1.0), torch.tensor(0.75), torch.tensor(4.0)
    given_frames = torch.zeros(PARITY_BATCH, latent_shape[1], dtype=torch.bool)
    given_frames[0, 0] = True  # a mix of given and generated frames, so neither branch is folded away
    step_args = (latents, t, t_next, guidance, *condition, torch.randn_like(latents), given_frames)
    latent_dims = {0: batch, 2: t_dim, 3: h_dim, 4: w_dim}
    # The CFG batch (prompts, then as many empty captions) is twice the latents' batch.
    fixed = {"t": None, "t_next": None, "guidance": None, "pooled": {0: 2 * batch},
             "text_kv": {1: 2 * batch, 2: caption}, "cfg_mask": {0: 2 * batch, 1: caption}}  # fmt: skip
    dit_dynamic = _export_with_fallback(
        GuidedEulerStep(dit), step_args, out / DIT_ONNX, STEP_NAMES,
        {"latents": latent_dims, **fixed, "given_latents": latent_dims, "given_frames": {0: batch, 1: t_dim}},
        {"latents": {0: batch}, **fixed, "given_latents": {0: batch}, "given_frames": {0: batch}},
    )  # fmt: skip
    vae_dynamic = _export_with_fallback(
        VAEDecoderGraph(vae, latent_shift, latent_scale), (latents,), out / VAE_DECODER_ONNX, {"inputs": ["latents"], "outputs": ["video"]},
        {"latents": latent_dims}, {"latents": {0: batch}},
    )  # fmt: skip
    # Video frames 1 + r·k for k + 1 latent frames, written so torch.export can prove the frame stacking divides.
    r = vae.config.temporal_compression
    video = torch.rand(PARITY_BATCH, 3, frames, height, width) * 2 - 1
    encoder_dynamic = _export_with_fallback(
        VAEEncoderGraph(vae, latent_shift, latent_scale), (video,), out / VAE_ENCODER_ONNX,
        {"inputs": ["video"], "outputs": ["latents"]},
        {"video": {0: batch, 2: r * (t_dim - 1) + 1, 3: s * h_dim, 4: s * w_dim}}, {"video": {0: batch}},
    )  # fmt: skip
    dynamic = dit_dynamic and vae_dynamic and encoder_dynamic
    if not dynamic:  # fixed-size graphs serve the clip size alone
        trained = (Bucket(height, width, frames),)

    tokenizer_dir = out / TOKENIZER_DIR
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    text_encoder.tokenizer.save_pretrained(tokenizer_dir)
    spec = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "precision": "fp32",
        "sampler": {**asdict(sampler), "timesteps": sampler.timesteps().tolist()},
        "clip": {
            **{key: clip[key] for key in CLIP_KEYS},
            "latent_shape": list(latent_shape),
            "latent_shift": latent_shift,
            "latent_scale": latent_scale,
        },
        "text": {"max_tokens": max_tokens, "pad_token_id": text_encoder.tokenizer.pad_token_id},
        "geometry": {
            "latent_channels": channels,
            "spatial_compression": vae.config.spatial_compression,
            "temporal_compression": vae.config.temporal_compression,
            "patch_size": list(dit.config.patch_size),
            "text_dim": text_dim,
        },
        "buckets": [asdict(b) for b in trained],
        "limits": {"dynamic_latent_thw": dynamic, **_size_limits(vae, dit, trained, dynamic)},
        "graphs": {
            TEXT_ENCODER_ONNX: "input_ids, attention_mask int64 [B, L] -> tokens float32 [B, L, D], 2 <= L <= max_tokens",
            CONDITION_ONNX: "once per video: text [B, L, D], text_mask bool [B, L], null_text [1, L, D], null_mask "
            "[1, L] -> pooled [2B, d], text_kv [depth, 2B, L, 2d], cfg_mask bool [2B, L] (prompts, then empty captions)",
            DIT_ONNX: "one CFG Euler step: latents [B, C, t, h, w], t, t_next, guidance scalars, condition.onnx's "
            "pooled, text_kv, cfg_mask, and given_latents [B, C, t, h, w] at the latent frames where given_frames "
            "bool [B, t] is true (kept as they are) -> next_latents",
            VAE_ENCODER_ONNX: "video [B, 3, 1 + r(t - 1), H, W] in [-1, 1] -> normalised latents [B, C, t, h, w] "
            "(the frames a clip is conditioned on)",
            VAE_DECODER_ONNX: "latents [B, C, t, h, w] -> video [B, 3, 1 + r(t - 1), H, W] in [-1, 1]",
        },
        "source_versions": source_versions,
        "opset": OPSET,
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
            "onnxruntime": ort.__version__,
        },
    }
    (out / BUNDLE_JSON).write_text(json.dumps(spec, indent=2) + "\n")
    return out


def export_pipeline(
    pipeline, text_encoder: MiniLMTextEncoder, out_dir: Path | str, sampler: SamplerConfig, fps: int,
    source_versions: dict, buckets: tuple[Bucket, ...],
) -> Path:  # fmt: skip
    """`export_bundle` of a trained `DiTModule`: its EMA DiT and VAE, at its clip size and latent normalisation,
    serving the preset's `buckets`."""
    frames, height, width = pipeline.video_shape
    clip = {"fps": fps, "frames": frames, "height": height, "width": width,
            "latent_shift": pipeline.latent_shift, "latent_scale": pipeline.latent_scale}  # fmt: skip
    vae, dit = pipeline.vae.float().eval(), pipeline.ema.float().eval()
    return export_bundle(vae, dit, text_encoder, out_dir, sampler, clip, source_versions, buckets)


def _max_abs_diff(session: ort.InferenceSession, module: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """Over every output of the graph (a bool mask counts 1 where it differs)."""
    with torch.no_grad():
        expected = module.eval()(*inputs.values())
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = session.run(None, {name: value.numpy() for name, value in inputs.items()})
    return max(float(np.abs(a.astype(np.float64) - e.numpy().astype(np.float64)).max()) for a, e in zip(actual, expected))


def graph_parity(
    bundle_dir: Path | str,
    vae: VideoVAE,
    dit: SpacetimeDiT,
    text_encoder: MiniLMTextEncoder,
    real_prompts: list[str] | None = None,
    real_latents: np.ndarray | None = None,
) -> dict[str, float]:
    """Max abs difference of each graph against its PyTorch module: {"text_encoder/random": 3e-6, "dit/real": ...}.

    Random inputs are seeded; the latent graphs get them at every bucket of the bundle ("dit/random/9x32x32").
    real_prompts (captions) and real_latents ([B, C, t, h, w], e.g. VAE means of real clips, one per prompt) add
    "/real" entries when given.
    """
    spec = BundleSpec.load(bundle_dir)
    sessions = {name: ort.InferenceSession(str(spec.root / name), providers=["CPUExecutionProvider"])
                for name in (TEXT_ENCODER_ONNX, CONDITION_ONNX, DIT_ONNX, VAE_ENCODER_ONNX, VAE_DECODER_ONNX)}  # fmt: skip
    generator = torch.Generator().manual_seed(PARITY_SEED)
    vocab_size = text_encoder.model.config.vocab_size
    ids = torch.randint(0, vocab_size, (PARITY_BATCH, spec.max_tokens), generator=generator)
    lengths = torch.randint(1, spec.max_tokens + 1, (PARITY_BATCH, 1), generator=generator)
    random_text = {"input_ids": ids, "attention_mask": (torch.arange(spec.max_tokens) < lengths).long()}
    random_latents = {f"random/{b.name}": torch.randn(PARITY_BATCH, *spec.latent_shape(b.frames, b.height, b.width),
                                                      generator=generator) for b in spec.buckets}  # fmt: skip
    inputs = {"random": (random_text, random_latents)}
    if real_prompts is not None and real_latents is not None:
        # Padded to the longest caption, as the generator feeds them: this also covers the dynamic caption length.
        batch = text_encoder.tokenizer(real_prompts, padding="longest", truncation=True,
                                       max_length=spec.max_tokens, return_tensors="pt")  # fmt: skip
        real_text = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        inputs["real"] = (real_text, {"real": torch.from_numpy(real_latents).float()})

    decoder = VAEDecoderGraph(vae, spec.latent_shift, spec.latent_scale)
    video_encoder = VAEEncoderGraph(vae, spec.latent_shift, spec.latent_scale)
    step, condition, encoder = GuidedEulerStep(dit), GuidedCondition(dit), TextEncoderGraph(text_encoder)
    diffs: dict[str, float] = {}
    for kind, (token_inputs, latents_by_name) in inputs.items():
        diffs[f"text_encoder/{kind}"] = _max_abs_diff(sessions[TEXT_ENCODER_ONNX], encoder, token_inputs)
        with torch.no_grad():
            text = encoder(**token_inputs)
        mask = token_inputs["attention_mask"].bool()
        caption_inputs = {"text": text, "text_mask": mask, "null_text": text[:1], "null_mask": mask[:1]}
        diffs[f"condition/{kind}"] = _max_abs_diff(sessions[CONDITION_ONNX], condition, caption_inputs)
        with torch.no_grad():
            conditioning = dict(zip(CONDITION_NAMES["outputs"], condition(**caption_inputs)))
        for name, latents in latents_by_name.items():
            # The first clip's first latent frame given (image-to-video), the second clip's none (text to video).
            given_frames = torch.zeros(latents.shape[0], latents.shape[2], dtype=torch.bool)
            given_frames[0, 0] = True
            step_inputs = {"latents": latents, "t": torch.tensor(0.75), "t_next": torch.tensor(0.5),
                           "guidance": torch.tensor(4.0), **conditioning, "given_latents": latents.flip(0),
                           "given_frames": given_frames}  # fmt: skip
            diffs[f"dit/{name}"] = _max_abs_diff(sessions[DIT_ONNX], step, step_inputs)
            diffs[f"vae_decoder/{name}"] = _max_abs_diff(sessions[VAE_DECODER_ONNX], decoder, {"latents": latents})
            with torch.no_grad():
                video = decoder(latents).clamp(-1, 1)  # a video of this bucket's size
            diffs[f"vae_encoder/{name}"] = _max_abs_diff(sessions[VAE_ENCODER_ONNX], video_encoder, {"video": video})
    return diffs


def end_to_end_parity(
    bundle_dir: Path | str,
    vae: VideoVAE,
    dit: SpacetimeDiT,
    text_encoder: MiniLMTextEncoder,
    prompts: list[str],
    seeds: list[int],
    steps: int | None = None,
) -> dict[str, list[float]]:
    """PSNR in dB, per bucket of the bundle and prompt ({"9x32x32": [52.1, 49.8], ...}), between the PyTorch and
    the onnxruntime video, both sampled along the timesteps the generator uses (the bundle's own unless `steps`
    asks for another count)."""
    generator = OnnxVideoGenerator(bundle_dir, providers=["CPUExecutionProvider"])
    spec, sampler = generator.spec, generator.sampler(steps)
    psnrs = {}
    for bucket in spec.buckets:
        size = (bucket.frames, bucket.height, bucket.width)
        onnx_videos = generator.generate(prompts, seeds, steps, frames=bucket.frames, height=bucket.height,
                                         width=bucket.width)  # fmt: skip
        torch_videos = generate_videos(
            vae, dit, text_encoder, prompts, seeds, generator.timesteps(sampler), sampler.guidance, size,
            spec.latent_shift, spec.latent_scale,
        )  # fmt: skip
        psnrs[bucket.name] = [psnr(a, b) for a, b in zip(torch_videos, onnx_videos)]
    return psnrs


def quantize_bundle(bundle_dir: Path | str, out_dir: Path | str, calibration_prompts: list[str], calibration_seeds: list[int]) -> Path:
    """An int8 copy of an fp32 bundle, its two graphs that do the arithmetic quantized:
    - dit.onnx, run once per step: every MatMul with int8 weights, its activations quantized per call (dynamic
      quantization: a step's activations change with t, so no one fixed range fits them);
    - vae_decoder.onnx, run once per video: its convolutions static int8 (QDQ, weights per output channel), with
      activation ranges calibrated on the latents the fp32 bundle samples for `calibration_prompts` x
      `calibration_seeds` in every bucket it serves, which are what the decoder decodes in service.
    The text encoder, condition.onnx and the VAE encoder stay fp32."""
    source, out = Path(bundle_dir), Path(out_dir)
    shutil.copytree(source, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(f"{DIT_ONNX}*", f"{VAE_DECODER_ONNX}*"))
    quantize_dynamic(source / DIT_ONNX, out / DIT_ONNX, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    generator = OnnxVideoGenerator(source, providers=["CPUExecutionProvider"])
    prompts = [prompt for prompt in calibration_prompts for _ in calibration_seeds]
    seeds = [seed for _ in calibration_prompts for seed in calibration_seeds]
    latents = [generator.sample_latents(prompts, seeds, b.frames, b.height, b.width) for b in generator.spec.buckets]
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / VAE_DECODER_ONNX
        quant_pre_process(source / VAE_DECODER_ONNX, prepared)  # shapes inferred, so every conv gets its ranges
        quantize_static(prepared, out / VAE_DECODER_ONNX, LatentBatches(latents), quant_format=QuantFormat.QDQ,
                        per_channel=True, op_types_to_quantize=["Conv"], activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)  # fmt: skip
    spec = json.loads((out / BUNDLE_JSON).read_text())
    spec["precision"] = "int8"
    spec["quantization"] = {
        DIT_ONNX: "dynamic: MatMul weights int8 per tensor, activations uint8 per call",
        VAE_DECODER_ONNX: {"method": "static QDQ: Conv weights int8 per channel, activations uint8 from calibrated ranges",
                           "calibration": {"prompts": list(calibration_prompts), "seeds": list(calibration_seeds),
                                           "buckets": len(latents), "latents": sum(len(batch) for batch in latents)}},
    }  # fmt: skip
    (out / BUNDLE_JSON).write_text(json.dumps(spec, indent=2) + "\n")
    return out


class LatentBatches(CalibrationDataReader):
    """onnxruntime's calibration reader over decoder inputs, one batch of latents at a time."""

    def __init__(self, batches: list[np.ndarray]):
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(({"latents": batch} for batch in self.batches), None)


def bundle_psnr(reference_dir: Path | str, bundle_dir: Path | str, prompts: list[str], seeds: list[int]) -> list[float]:
    """PSNR in dB, per prompt, of `bundle_dir`'s videos against `reference_dir`'s (e.g. int8 against fp32), the
    same prompts, seeds and sampler."""
    reference, bundle = (OnnxVideoGenerator(d, providers=["CPUExecutionProvider"]) for d in (reference_dir, bundle_dir))
    return [psnr(a, b) for a, b in zip(reference.generate(prompts, seeds), bundle.generate(prompts, seeds))]
