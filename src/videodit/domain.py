"""What the clips of a data set may show, as data: the vocabulary evaluation reads clips and captions against.

A clip shows one shape of one colour and size moving in one direction. The data set that owns these facts
builds its `Domain` (the built-in one is `videodit.data.synthetic.SHAPES_DOMAIN`) and the caller hands it to
evaluation, which imports no data set. The domain also says what is held out of training, so evaluation can ask
for what the model never saw: attribute combinations no training clip shows, and phrasings (sentence templates
and synonyms) no training caption uses.
"""

from __future__ import annotations

import itertools
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
    # Never trained on: these (shape, colour, size, direction) combinations, and these templates and words.
    held_out_combinations: tuple[tuple[str, str, str, str], ...] = ()
    held_out_templates: tuple[str, ...] = ()
    held_out_synonyms: Mapping[str, str] = field(default_factory=dict)  # "crimson" -> "red"

    def __post_init__(self):
        names = self.names()
        values = {value for names_ in names.values() for value in names_}
        unknown = sorted(set(self.synonyms.values()) - values) + sorted(set(self.held_out_synonyms.values()) - values)
        if unknown:
            raise ValueError(f"synonyms name values the domain does not have: {unknown}")
        trained_and_held_out = sorted(set(self.synonyms) & set(self.held_out_synonyms))
        if trained_and_held_out:
            raise ValueError(f"synonyms both trained and held out: {trained_and_held_out}")
        if self.held_out_combinations and not self.held_out_templates:
            raise ValueError("held-out combinations need held_out_templates to be asked for")
        trained = set(self.combinations()) - set(self.held_out_combinations)
        unknown_combinations = sorted(set(self.held_out_combinations) - set(self.combinations()))
        if unknown_combinations:
            raise ValueError(f"held-out combinations with values the domain does not have: {unknown_combinations}")
        for i, attribute in enumerate(ATTRIBUTES_BY_COMBINATION):
            unseen = set(names[attribute]) - {combination[i] for combination in trained}
            if unseen:
                raise ValueError(f"holding out {len(self.held_out_combinations)} combinations leaves {attribute} {sorted(unseen)} untrained")

    def names(self) -> dict[str, tuple[str, ...]]:
        """Each of ATTRIBUTES -> the names of its values, e.g. "colour" -> ("red", "green", …)."""
        values = (self.colours, self.shapes, self.sizes, self.directions)
        return {attribute: tuple(names) for attribute, names in zip(ATTRIBUTES, values, strict=True)}

    def combinations(self) -> list[tuple[str, str, str, str]]:
        """Every (shape, colour, size, direction), in a fixed order."""
        return list(itertools.product(self.shapes, self.colours, self.sizes, self.directions))

    def trained_combinations(self) -> list[tuple[str, str, str, str]]:
        held_out = set(self.held_out_combinations)
        return [c for c in self.combinations() if c not in held_out]

    def unseen_prompts(self) -> list[str]:
        """One prompt per held-out combination, in a held-out template, with a held-out synonym where a value has one."""
        word = {value: synonym for synonym, value in reversed(list(self.held_out_synonyms.items()))}  # a value's first synonym
        return [
            self.held_out_templates[k % len(self.held_out_templates)].format(
                shape=word.get(shape, shape), colour=word.get(colour, colour), size=word.get(size, size),
                direction=word.get(direction, direction),
            )  # fmt: skip
            for k, (shape, colour, size, direction) in enumerate(self.held_out_combinations)
        ]


ATTRIBUTES_BY_COMBINATION = ("shape", "colour", "size", "direction")  # the order of a combination tuple
