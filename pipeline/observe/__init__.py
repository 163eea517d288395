"""Observability: the latency accounting, metrics, the broker probe, the analyst's report, WER."""
