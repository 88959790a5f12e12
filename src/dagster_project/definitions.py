"""The code location: every definition under `defs/` (assets by stage, checks, jobs, schedules, sensors,
resources), found by Dagster's `load_from_defs_folder` as `dg dev`, `dg check defs` and `dg launch` expect."""

from pathlib import Path

from dagster import load_from_defs_folder

defs = load_from_defs_folder(path_within_project=Path(__file__).parent)
