"""videodit: a small Sora-style text-to-video model and the library behind its Dagster pipeline."""

__version__ = "0.1.0"
