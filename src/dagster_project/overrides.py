"""Launchpad settings: a Config field left as None keeps the preset's value, any other value replaces it."""

from dataclasses import replace

from dagster import Config


def with_overrides(preset_config, settings: Config, exclude: frozenset[str] = frozenset()):
    """`preset_config` (a dataclass) with every non-None field of `settings` (outside `exclude`) applied."""
    overrides = {k: v for k, v in settings.model_dump(exclude=set(exclude)).items() if v is not None}
    return replace(preset_config, **overrides)
