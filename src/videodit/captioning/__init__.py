"""Captioning: the clips' captions, the user's or generated from their pixels, with the lineage of each."""
