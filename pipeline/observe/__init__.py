"""pipeline.observe."""
