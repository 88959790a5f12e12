"""Evaluation of generated clips without the generator: attributes read from pixels, prompt adherence,
an FVD-like Fréchet score on those readings, PSNR/SSIM for reconstructions, continuity over time (stability,
seams, interpolation paths, adherence per window), and report pictures."""

from videodit.evaluation.attributes import (
    FEATURE_NAMES,
    UNKNOWN,
    ClipAttributes,
    attribute_features,
    read_attributes,
)
from videodit.evaluation.continuity import (
    PathMonotonicity,
    SeamContinuity,
    TemporalStability,
    path_metrics,
    path_monotonicity,
    seam_continuity,
    seam_metrics,
    stability_metrics,
    temporal_stability,
    window_adherence,
    window_adherence_metrics,
    window_attributes,
)
from videodit.evaluation.contact_sheet import contact_sheet, png_data_uri, save_gif
from videodit.evaluation.frechet import frechet_distance, frechet_video_distance
from videodit.evaluation.image_quality import psnr, ssim
from videodit.evaluation.prompt_adherence import attributes_from_caption, prompt_adherence

__all__ = [
    "FEATURE_NAMES",
    "UNKNOWN",
    "ClipAttributes",
    "PathMonotonicity",
    "SeamContinuity",
    "TemporalStability",
    "attribute_features",
    "attributes_from_caption",
    "contact_sheet",
    "frechet_distance",
    "frechet_video_distance",
    "path_metrics",
    "path_monotonicity",
    "png_data_uri",
    "prompt_adherence",
    "psnr",
    "read_attributes",
    "save_gif",
    "seam_continuity",
    "seam_metrics",
    "ssim",
    "stability_metrics",
    "temporal_stability",
    "window_adherence",
    "window_adherence_metrics",
    "window_attributes",
]
