"""How many record batches this process has produced, per topic.

The embedded broker stores one object per produced batch and lists them all on every fetch, so
its cost follows the number of batches, not records or bytes (../shared/reference/embedded-broker.md);
on Apache Kafka fewer, larger batches are cheaper too. Both client libraries report here:
librdkafka through its statistics callback (``batchcnt`` per topic, reset every interval) and
aiokafka (faust) through a counting hook on its accumulator (see ``pipeline.kafka.faust_app``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from prometheus_client import Counter as PrometheusCounter

BATCHES = PrometheusCounter("hopline_produce_batches_total", "Record batches produced by this process", ["topic"])
RECORDS = PrometheusCounter("hopline_produce_records_total", "Records produced by this process", ["topic"])


class ProduceStats:
    """Batches and records produced since the process started, per topic; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: Counter[str] = Counter()
        self._records: Counter[str] = Counter()
        self.started = time.monotonic()

    def add(self, topic: str, batches: int, records: int) -> None:
        if not batches and not records:
            return
        with self._lock:
            self._batches[topic] += batches
            self._records[topic] += records
        BATCHES.labels(topic).inc(batches)
        RECORDS.labels(topic).inc(records)

    def on_librdkafka_stats(self, payload: str) -> None:
        """librdkafka's ``stats_cb``: each topic's ``batchcnt`` window holds the batches sent since the last call."""
        for topic, figures in json.loads(payload).get("topics", {}).items():
            window = figures.get("batchcnt", {})
            self.add(topic, int(window.get("cnt", 0)), int(window.get("sum", 0)))

    def summary(self) -> dict[str, float]:
        """Totals and per-second rates since the process started."""
        with self._lock:
            batches, records = sum(self._batches.values()), sum(self._records.values())
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "produce_batches": batches,
            "produce_records": records,
            "uptime_s": round(elapsed, 1),
            "produce_batches_per_s": round(batches / elapsed, 1),
            "produce_records_per_s": round(records / elapsed, 1),
        }


#: This process's producers, whichever client library they use.
PRODUCE_STATS = ProduceStats()
