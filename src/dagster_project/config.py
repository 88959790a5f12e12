"""The launchpad's view of `videodit.config.ProjectConfig`: Dagster Config classes built from its sections.

Each asset's Config holds whole sections of the schema, every field of each (so `dit.hidden_size` is one field in
the launchpad). A field left empty keeps the value of the `workspace` resource's preset; the values set are
applied to that preset and the result is checked as a whole (`Workspace.config`) before the asset does anything.
"""

import dataclasses
import types
import typing

from dagster import Config
from pydantic import Field, create_model

from videodit.captioning.captioner import CaptioningConfig
from videodit.config import GEOMETRY, DiTTrainConfig, VAETrainConfig
from videodit.data.config import CurationConfig, ProbeConfig, SyntheticConfig, ValidationConfig
from videodit.evaluation.model_report import EvaluationConfig
from videodit.models.dit import DiTConfig
from videodit.models.vae import VAEConfig
from videodit.sampling import SamplerConfig


def _launchpad_type(annotation):
    """A schema field's type as Dagster config takes it: tuples as lists, `X | None` as X (None means "keep")."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _launchpad_type(next(a for a in args if a is not type(None)))
    if origin is tuple:
        return list[args[0]]
    return annotation


def section_config(section: str, schema: type) -> type[Config]:
    """A Config class with every field of the dataclass `schema` (the section `section`), each optional.

    The clip geometry copied into a section (`GEOMETRY`) is left out: it is the preset's, one value for every stage.
    """
    hints = typing.get_type_hints(schema)
    fields = {
        f.name: (_launchpad_type(hints[f.name]) | None, Field(default=None, description=f"{section}.{f.name}; empty keeps the preset's value"))
        for f in dataclasses.fields(schema)
        if f.name not in GEOMETRY.get(section, {})
    }
    return create_model(f"{schema.__name__.removesuffix('Config')}Section", __base__=Config, __module__=__name__, **fields)


def overrides(config: Config, sections: typing.Iterable[str]) -> dict:
    """{section: {field: value}} of the fields set in `config`'s `sections` (the rest of the Config is not schema)."""
    values = {name: getattr(config, name).model_dump(exclude_none=True) for name in sections}
    return {name: fields for name, fields in values.items() if fields}


# One Config class per section of the schema, each used by the assets that run on that section.
SyntheticSection = section_config("synthetic", SyntheticConfig)
ProbeSection = section_config("probe", ProbeConfig)
ValidationSection = section_config("validation", ValidationConfig)
CaptioningSection = section_config("captioning", CaptioningConfig)
CurationSection = section_config("curation", CurationConfig)
VAESection = section_config("vae", VAEConfig)
DiTSection = section_config("dit", DiTConfig)
VAETrainSection = section_config("vae_train", VAETrainConfig)
DiTTrainSection = section_config("dit_train", DiTTrainConfig)
SamplerSection = section_config("sampler", SamplerConfig)
EvaluationSection = section_config("evaluation", EvaluationConfig)
