"""workers.worker."""
