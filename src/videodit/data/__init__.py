"""Data layer: synthetic clips, user sources, probing, validation and curation into training shards."""
