"""Produce-batch counting (pipeline/kafka/produce_stats.py) from librdkafka's statistics."""

from __future__ import annotations

import json

from pipeline.kafka.produce_stats import ProduceStats


def _stats(**batches: tuple[int, int]) -> str:
    """A librdkafka statistics payload: topic -> (batches, records) in the ``batchcnt`` window."""
    return json.dumps({"topics": {t: {"batchcnt": {"cnt": n, "sum": r}} for t, (n, r) in batches.items()}})


def test_librdkafka_windows_add_up_per_topic() -> None:
    stats = ProduceStats()
    stats.on_librdkafka_stats(_stats(frames=(50, 500), hops=(6, 60)))
    stats.on_librdkafka_stats(_stats(frames=(50, 500)))
    stats.on_librdkafka_stats(json.dumps({"topics": {}}))
    summary = stats.summary()
    assert (summary["produce_batches"], summary["produce_records"]) == (106, 1060)
    assert summary["produce_batches_per_s"] > 0


def test_a_fresh_process_has_produced_nothing() -> None:
    assert ProduceStats().summary()["produce_batches"] == 0
