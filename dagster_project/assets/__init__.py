"""Assets grouped by pipeline stage."""
