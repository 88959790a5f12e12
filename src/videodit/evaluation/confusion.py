"""Which value was drawn for which asked value, per attribute: counts from prompt adherence's per-clip readings,
and a small picture of them for the Dagster UI and MLflow."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from videodit.domain import ATTRIBUTES, Domain
from videodit.evaluation.attributes import UNKNOWN

CELL, LABEL_WIDTH, GAP = 22, 78, 16


def confusion_matrix(per_clip: list[dict], attribute: str, values: tuple[str, ...]) -> np.ndarray:
    """int [asked value, read value or unknown]: how often a clip asked for values[i] read as values[j]."""
    columns = (*values, UNKNOWN)
    counts = np.zeros((len(values), len(columns)), dtype=int)
    for row in per_clip:
        asked, read = row[f"expected_{attribute}"], row[f"read_{attribute}"]
        if asked is not None:
            counts[values.index(asked), columns.index(read if read in values else UNKNOWN)] += 1
    return counts


def _matrix_image(title: str, counts: np.ndarray, values: tuple[str, ...]) -> Image.Image:
    rows, columns = counts.shape
    image = Image.new("RGB", (LABEL_WIDTH + columns * CELL, 2 * CELL + rows * CELL), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    draw.text((2, 2), f"{title}: asked (rows) / drawn", fill="black", font=font)
    for j, name in enumerate((*values, UNKNOWN)):
        draw.text((LABEL_WIDTH + j * CELL + 2, CELL + 4), name[:3], fill="black", font=font)
    row_totals = counts.sum(axis=1, keepdims=True).clip(min=1)
    for i, name in enumerate(values):
        top = 2 * CELL + i * CELL
        draw.text((2, top + 5), name[:12], fill="black", font=font)
        for j in range(columns):
            share = counts[i, j] / row_totals[i, 0]
            shade = int(255 * (1 - share))  # the diagonal dark when the model follows the prompt
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            box = (LABEL_WIDTH + j * CELL, top, LABEL_WIDTH + (j + 1) * CELL - 1, top + CELL - 1)
            draw.rectangle(box, fill=colour, outline="lightgrey")
            draw.text((box[0] + 4, box[1] + 5), str(counts[i, j]), fill="black" if share < 0.6 else "white", font=font)
    return image


def confusion_sheet(per_clip: list[dict], domain: Domain) -> Image.Image:
    """One matrix per attribute, side by side."""
    names = domain.names()
    tiles = [_matrix_image(a, confusion_matrix(per_clip, a, names[a]), names[a]) for a in ATTRIBUTES]
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + GAP * (len(tiles) - 1), max(t.height for t in tiles)), "white")
    left = 0
    for tile in tiles:
        sheet.paste(tile, (left, 0))
        left += tile.width + GAP
    return sheet
