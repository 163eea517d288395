"""pipeline.control."""
