"""Micro-batching: the latency-capped batch policy and its batch loop thread."""
