"""Everything Dagster loads, found by `load_from_defs_folder`: assets and checks by pipeline stage (one module
each), jobs, schedules, sensors and resources in modules of their own."""
