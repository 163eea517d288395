"""pipeline.assembly."""
