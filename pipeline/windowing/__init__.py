"""pipeline.windowing."""
