"""Does each generated clip show what its caption asked for? Accuracy per attribute, read from pixels."""

from __future__ import annotations

import re

import numpy as np

from videodit.domain import ATTRIBUTES, Domain
from videodit.evaluation.attributes import read_attributes

WORD = re.compile(r"[a-z]+")


def caption_words(domain: Domain) -> dict[str, dict[str, str]]:
    """Attribute -> {caption word: the value it names}: each value's own name and the domain's synonyms of it
    (the training captions' and the held-out ones)."""
    return {
        attribute: {
            **{name: name for name in names},
            **{word: value for word, value in {**domain.synonyms, **domain.held_out_synonyms}.items() if value in names},
        }
        for attribute, names in domain.names().items()
    }


def attributes_from_caption(caption: str, domain: Domain) -> dict[str, str | None]:
    """{colour, shape, size, direction} named in a caption; None for any it does not mention.

    Raises ValueError when a caption names two different values of one attribute ("a red blue circle").
    """
    words = WORD.findall(caption.lower())
    found: dict[str, str | None] = {}
    for attribute, vocabulary in caption_words(domain).items():
        values = {vocabulary[word] for word in words if word in vocabulary}
        if len(values) > 1:
            raise ValueError(f"caption {caption!r} names several {attribute}s: {sorted(values)}")
        found[attribute] = values.pop() if values else None
    return found


def prompt_adherence(videos: list[np.ndarray], expected: list[dict], domain: Domain) -> dict:
    """Read every clip against `domain` and compare it with the attributes it was asked for.

    `expected[i]` holds the wanted colour/shape/size/direction of `videos[i]` (e.g. from
    `attributes_from_caption`); a None or missing value is left out of that attribute's accuracy.
    An unreadable clip reads as "unknown" and so counts as wrong.

    Returns {"colour", "shape", "size", "direction": accuracy in [0, 1] (NaN when nothing was asked),
    "overall": mean of the attribute accuracies that are defined, "n_clips": int,
    "per_clip": one dict per clip with expected_*, read_* and the measures behind the reading}.
    """
    if len(videos) != len(expected):
        raise ValueError(f"got {len(videos)} videos but {len(expected)} expected-attribute dicts")
    per_clip = []
    hits: dict[str, list[bool]] = {attribute: [] for attribute in ATTRIBUTES}
    for index, (video, wanted) in enumerate(zip(videos, expected, strict=True)):
        read = read_attributes(video, domain)
        row: dict = {"clip": index}
        for attribute in ATTRIBUTES:
            want, got = wanted.get(attribute), getattr(read, attribute)
            row[f"expected_{attribute}"], row[f"read_{attribute}"] = want, got
            if want is not None:
                hits[attribute].append(got == want)
        row.update(
            foreground_fraction=read.foreground_fraction,
            fill_ratio=read.fill_ratio,
            row_skewness=read.row_skewness,
            side_fraction=read.side_fraction,
            displacement_px=read.displacement_px,
        )
        per_clip.append(row)
    accuracy = {attribute: float(np.mean(h)) if h else float("nan") for attribute, h in hits.items()}
    defined = [value for value in accuracy.values() if not np.isnan(value)]
    return {
        **accuracy,
        "overall": float(np.mean(defined)) if defined else float("nan"),
        "n_clips": len(videos),
        "per_clip": per_clip,
    }
