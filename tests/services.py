"""The child-process harness lives in production code (the demo supervises the same way)."""

from pipeline.supervisor import ServiceProcess

__all__ = ["ServiceProcess"]
