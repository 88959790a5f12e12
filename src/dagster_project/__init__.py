"""Dagster definitions for videodit: orchestration only; the ML lives in `videodit`."""
