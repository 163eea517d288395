"""pipeline.ingress."""
