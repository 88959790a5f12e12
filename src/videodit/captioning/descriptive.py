"""A captioner for the built-in shapes set that reads each clip's pixels and describes it in many phrasings.

`videodit.evaluation.attributes` reads colour, shape, size and direction against the data set's `Domain`; the
track it reads them from also gives where the shape starts (a third of the frame each way) and how fast it
moves (frame sides per second). Each clip gets one of `SENTENCE_PATTERNS` filled with one of the words of each
value, picked by a generator seeded from the clip's bytes, so the same clip always gets the same caption.

This file owns the descriptive vocabulary: its sentence patterns and its words for directions, speeds and starting
points (the words for shapes, colours and sizes are the built-in set's `TRAINED_SYNONYMS`). The domain owns what
must stay out of training (its held-out templates and synonyms), and a `DescriptiveCaptioner` refuses a domain
whose values it has no words for or whose held-out words it would write.
"""

from __future__ import annotations

import hashlib
import json
import re
import string

import numpy as np

from videodit.data.synthetic import SHAPES_DOMAIN, TRAINED_SYNONYMS
from videodit.domain import Domain
from videodit.evaluation.attributes import UNKNOWN, attributes_of_track, track_shape

CODE_VERSION = 1  # bump when the reading of a clip changes; the vocabulary is hashed into the version by itself

SENTENCE_PATTERNS = (
    "a {size} {colour} {shape} moves {direction} {speed}, {start}",
    "a {size} {colour} {shape}, {start}, moves {speed} {direction}",
    "the {size} {colour} {shape} slides {direction} {speed}, {start}",
    "{start}, a {size} {colour} {shape} travels {speed} {direction}",
    "one {size} {shape} in {colour} heads {direction} {speed}, {start}",
    "a black background with a {size} {colour} {shape} moving {speed} {direction}, {start}",
    "a {size} {colour} {shape} crossing the frame {direction} {speed}, {start}",
    "clip of a {size} {colour} {shape} that moves {speed} {direction}, {start}",
    "a {colour} {shape}, {size} in size, {start} and moving {direction} {speed}",
    "{start}, the {size} {colour} {shape} makes its way {direction} {speed}",
    "on a dark screen a {size} {colour} {shape} goes {direction} {speed}, {start}",
    "a {size} {colour} {shape} is moving {direction} {speed}, {start}",
    "the {colour} {shape} is {size} and moves {speed} {direction}, {start}",
    "a single {size} {colour} {shape} on black, {start}, heading {direction} {speed}",
    "animation of a {size} {colour} {shape} sliding {speed} {direction}, {start}",
    "a {size} {colour} {shape} passes {speed} across the screen {direction}, {start}",
    "{start}, a {colour} {shape} ({size}) moves {direction} {speed}",
    "we see a {size} {colour} {shape} travelling {direction} {speed}, {start}",
    "a {size} {colour} {shape} shifts {direction} {speed} over a black backdrop, {start}",
    "there is a {size} {colour} {shape} moving {speed} {direction}, {start}",
    "a {size} {colour} {shape} advances {direction} {speed}, {start}",
    "a {colour} {shape}, quite {size}, sweeps {direction} {speed}, {start}",
)
# Words for each value of the shapes domain, the value's own name first: for shape, colour and size the built-in
# set's trained synonyms, which its template captions use too.
WORDS = {
    **{attribute: {value: (value, *TRAINED_SYNONYMS[value]) for value in SHAPES_DOMAIN.names()[attribute]}
       for attribute in ("colour", "shape", "size")},
    "direction": {
        "left": ("to the left", "towards the left edge", "from right to left"),
        "right": ("to the right", "towards the right edge", "from left to right"),
        "up": ("upwards", "towards the top", "from bottom to top"),
        "down": ("downwards", "towards the bottom", "from top to bottom"),
    },
    "speed": {
        "slow": ("slowly", "gently", "at an unhurried pace"),
        "steady": ("steadily", "at a steady pace", "at a moderate speed"),
        "fast": ("quickly", "swiftly", "at high speed"),
    },
}
START_PHRASES = ("starting near the {where}", "setting off from the {where}", "beginning at the {where}")
ROWS, COLUMNS = ("top", "", "bottom"), ("left", "", "right")  # thirds of the frame; the middle third is unnamed
# Travel in frame sides per second below which a clip is "slow", then "steady"; above both, "fast". The built-in
# sets travel 0.2-0.75 sides per second (40%+ of the frame over 1-2 s).
SPEED_CUTS = {"slow": 0.3, "steady": 0.6}


def vocabulary_version() -> str:
    """Changes whenever the patterns or words change, so captions written by another vocabulary are told apart."""
    vocabulary = [CODE_VERSION, SENTENCE_PATTERNS, WORDS, START_PHRASES, ROWS, COLUMNS, SPEED_CUTS]
    return f"{CODE_VERSION}-{hashlib.sha256(json.dumps(vocabulary).encode()).hexdigest()[:10]}"


def held_out_pattern(template: str) -> re.Pattern:
    """A regex that matches every caption written in `template` ("a {colour} {shape}, …"), whatever fills it."""
    parts = [re.escape(text) + ("(.+?)" if field is not None else "") for text, field, _, _ in string.Formatter().parse(template)]
    return re.compile("".join(parts), re.IGNORECASE)


def caption_words(caption: str) -> set[str]:
    return set(re.findall(r"[a-z]+(?:-[a-z]+)*", caption.lower()))


def vocabulary_problems(domain: Domain) -> list[str]:
    """What keeps this vocabulary from captioning `domain`: values without words, held-out words or templates."""
    problems = []
    for attribute, names in domain.names().items():
        missing = sorted(set(names) - set(WORDS[attribute]))
        if missing:
            problems.append(f"no words for {attribute} {missing}")
    written = {w for words in WORDS.values() for phrases in words.values() for p in phrases for w in caption_words(p)}
    written |= {w for text in SENTENCE_PATTERNS + START_PHRASES + ROWS + COLUMNS for w in caption_words(text)}
    held_out = sorted(written & set(domain.held_out_synonyms))
    if held_out:
        problems.append(f"held-out synonyms in the vocabulary: {held_out}")
    patterns = [held_out_pattern(t) for t in domain.held_out_templates]
    matching = [p for p in SENTENCE_PATTERNS if any(h.fullmatch(p) for h in patterns)]
    if matching:
        problems.append(f"sentence patterns in a held-out template: {matching}")
    return problems


def _speed(sides_per_s: float) -> str:
    return next((name for name, cut in SPEED_CUTS.items() if sides_per_s < cut), "fast")


def _where(x: float, y: float, width: int, height: int) -> str:
    """"top left", "bottom", "centre", … of the third the point (x, y) lies in."""
    row, column = ROWS[min(int(3 * y / height), 2)], COLUMNS[min(int(3 * x / width), 2)]
    return " ".join(part for part in (row, column) if part) or "centre"


def _article(caption: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", caption)


class DescriptiveCaptioner:
    """Captions a clip of the shapes domain from its pixels; None when the reader finds no one moving shape."""

    name = "descriptive"

    def __init__(self, domain: Domain):
        problems = vocabulary_problems(domain)
        if problems:
            raise ValueError(f"the descriptive captioner cannot caption this domain: {'; '.join(problems)}")
        self.domain = domain
        self.version = vocabulary_version()

    def caption(self, frames: np.ndarray, fps: float) -> str | None:
        track = track_shape(frames)
        read = attributes_of_track(track, self.domain)
        if UNKNOWN in (read.shape, read.colour, read.size, read.direction):
            return None
        first = int(np.argmax(track.present))
        height, width = frames.shape[1:3]
        seconds = (len(frames) - 1) / fps
        sides_per_s = float(np.hypot(*read.displacement_px)) / track.frame_side / seconds
        rng = np.random.default_rng(int(hashlib.sha256(frames.tobytes()).hexdigest()[:16], 16))

        def pick(options):
            return options[rng.integers(len(options))]

        where = _where(track.centroid_x[first], track.centroid_y[first], width, height)
        return _article(pick(SENTENCE_PATTERNS).format(
            shape=pick(WORDS["shape"][read.shape]), colour=pick(WORDS["colour"][read.colour]),
            size=pick(WORDS["size"][read.size]), direction=pick(WORDS["direction"][read.direction]),
            speed=pick(WORDS["speed"][_speed(sides_per_s)]), start=pick(START_PHRASES).format(where=where),
        ))  # fmt: skip
