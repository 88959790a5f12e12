"""What the clips of a data set may show, as data: the vocabulary evaluation reads clips and captions against.

A clip shows one shape of one colour and size moving in one direction. The data set that owns these facts
builds its `Domain` (the built-in one is `videodit.data.synthetic.SHAPES_DOMAIN`) and the caller hands it to
evaluation, which imports no data set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ATTRIBUTES = ("colour", "shape", "size", "direction")


@dataclass(frozen=True)
class Domain:
    shapes: tuple[str, ...]
    colours: Mapping[str, tuple[int, int, int]]  # name -> RGB, 0-255
    sizes: Mapping[str, float]  # name -> bounding-box side / frame side
    directions: Mapping[str, tuple[int, int]]  # name -> (dx, dy) of the motion; image rows grow downwards
    prompt_template: str  # a caption naming every attribute: "a {size} {colour} {shape} moves {direction}"
    synonyms: Mapping[str, str] = field(default_factory=dict)  # other caption words for a value: "upwards" -> "up"

    def __post_init__(self):
        values = {value for names in self.names().values() for value in names}
        unknown = sorted(set(self.synonyms.values()) - values)
        if unknown:
            raise ValueError(f"synonyms name values the domain does not have: {unknown}")

    def names(self) -> dict[str, tuple[str, ...]]:
        """Each of ATTRIBUTES -> the names of its values, e.g. "colour" -> ("red", "green", …)."""
        values = (self.colours, self.shapes, self.sizes, self.directions)
        return {attribute: tuple(names) for attribute, names in zip(ATTRIBUTES, values, strict=True)}
