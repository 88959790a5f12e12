"""Evaluation of generated clips without the generator: attributes read from pixels, prompt adherence,
an FVD-like Fréchet score on those readings, PSNR/SSIM for reconstructions, and report pictures."""

from videodit.evaluation.attributes import (
    FEATURE_NAMES,
    UNKNOWN,
    ClipAttributes,
    attribute_features,
    read_attributes,
)
from videodit.evaluation.contact_sheet import contact_sheet, png_data_uri, save_gif
from videodit.evaluation.frechet import frechet_distance, frechet_video_distance
from videodit.evaluation.image_quality import psnr, ssim
from videodit.evaluation.prompt_adherence import attributes_from_caption, prompt_adherence

__all__ = [
    "FEATURE_NAMES",
    "UNKNOWN",
    "ClipAttributes",
    "attribute_features",
    "attributes_from_caption",
    "contact_sheet",
    "frechet_distance",
    "frechet_video_distance",
    "png_data_uri",
    "prompt_adherence",
    "psnr",
    "read_attributes",
    "save_gif",
    "ssim",
]
