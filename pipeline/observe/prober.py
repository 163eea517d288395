"""The broker probe: a heartbeat produced and read back, and a data partition's offset lookup, every interval.

:class:`BrokerProber` produces a :class:`~pipeline.contracts.BrokerProbe` keyed by its id to the
probe topic every ``probe.interval_ms``, with a producer of its own (linger 0: it measures the
broker, not client batching), and reads the topic with an assigned reader (no group join) that
starts at the topic's end and skips other probers' heartbeats and anything it did not send. Each
of its own heartbeats read back is a produce->consume round trip (``pipeline.clock.now_ms`` at
both ends, one host) for its :class:`~pipeline.observe.probe.ProbeWindow`; the next heartbeat
carries it as ``previous_rtt_ms``, so ``hopline latency report`` reads the figures off the topic.
Round trips count from the first heartbeat sent after one came back: before that the clients are
still connecting (~0.5 s on the embedded broker), which says nothing about the broker's health.

A second thread times an end-offset query (ListOffsets) on one partition of the frames, hops and
hypotheses topics per interval, in turn: the embedded broker lists a partition's every stored batch
for it as for a fetch, so it slows down with the busy partitions, which the heartbeat's own light
partition does not (see :mod:`pipeline.observe.probe`). The heartbeat carries the latest as ``lookup_ms``.

The verdict goes to Prometheus (``hopline_broker_probe_rtt_seconds{stat="p50"|"p95"}``,
``hopline_broker_lookup_seconds{stat}``, histograms of both, ``hopline_transport_alarm`` 0/1) and
to the log: one WARNING line ``transport alarm start {...}`` when the alarm starts and one INFO
line ``transport alarm end {...}`` when it ends, each with the reason and the figures. The
controller reads :meth:`BrokerProber.verdict` every tick.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.errors import CliError
from pipeline.kafka.clients import make_consumer, make_producer
from pipeline.kafka.readers import open_reader, topic_partitions
from pipeline.observe.metrics import LATENCY_BUCKETS_S
from pipeline.observe.probe import ProbeVerdict, ProbeWindow
from pipeline.settings import Settings

log = logging.getLogger(__name__)

RTT = Gauge("hopline_broker_probe_rtt_seconds", "Broker probe produce->consume round trip over its window.", ["stat"])
RTT_HISTOGRAM = Histogram(
    "hopline_broker_probe_round_trip_seconds", "Broker probe produce->consume round trips.", buckets=LATENCY_BUCKETS_S
)
LOOKUP = Gauge("hopline_broker_lookup_seconds", "Offset lookup on a pipeline data partition over its window.", ["stat"])
LOOKUP_HISTOGRAM = Histogram(
    "hopline_broker_lookup_duration_seconds", "Offset lookups on pipeline data partitions.", buckets=LATENCY_BUCKETS_S
)
ALARM = Gauge("hopline_transport_alarm", "1 while the broker probe says the transport is slow.")
#: Outcomes: sent, answered, lost (not back within the window), failed (not produced or not delivered).
HEARTBEATS = Counter("hopline_broker_probe_heartbeats_total", "Broker probe heartbeats, by outcome.", ["outcome"])


def prober_id(service: str) -> str:
    """Unique per process and start: a restarted prober never mistakes an old heartbeat for its own."""
    return f"{service}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class BrokerProber:
    """Heartbeats out, the same heartbeats back, timed lookups, a verdict; :meth:`start`, then :meth:`close`.

    Construction reads the probe topic's metadata and end offset, so a missing probe topic or an
    unreachable broker raises there (:class:`~pipeline.errors.CliError` / ``KafkaException``); a
    missing data topic only leaves its partitions out of the lookups.
    """

    #: The topics whose partitions the offset lookups go round: those consumed on the hop's path.
    LOOKUP_ROLES = ("frames", "hops", "hypotheses")
    LOOKUP_TIMEOUT_S = 5.0

    def __init__(self, settings: Settings, service: str) -> None:
        self._settings = settings
        self._config = settings.probe
        self._topic = settings.topics.probe
        self.id = prober_id(service)
        self._key = self.id.encode()
        self._lock = threading.Lock()  # the window, the verdict and the latest lookup: two threads write
        self._window = ProbeWindow(self._config)
        self._verdict: ProbeVerdict | None = None
        self._latest_lookup_ms: float | None = None  # not yet carried by a heartbeat
        self._stop = threading.Event()
        self._seq = 0
        self._pending: dict[int, float] = {}  # seq -> sent_ts_ms, until read back, lost or failed
        self._last_answer: tuple[int, float] | None = None  # (seq, round trip ms)
        self._first_counted: int | None = None  # the first seq sent after a heartbeat came back; None: warming up
        self._consumer = open_reader(settings, f"probe-{self.id}", [self._topic])
        self._lookup_consumer = make_consumer(settings, f"{settings.app_id}-probe-lookup")
        try:
            self._start_at_end()
            self._lookup_targets = self._lookup_partitions()
            self._producer = make_producer(settings, **{"linger.ms": 0})
        except BaseException:
            self._consumer.close()
            self._lookup_consumer.close()
            raise
        self._thread = threading.Thread(target=self._run, name="broker-prober", daemon=True)
        self._lookup_thread = threading.Thread(target=self._run_lookups, name="broker-prober-lookup", daemon=True)

    def _start_at_end(self) -> None:
        """Read from each partition's end as it is now: every heartbeat sent from here on is read back.

        An explicit offset, not OFFSET_END, which resolves later and could miss the first heartbeat.
        ListOffsets may under-report the end on the embedded broker: then a few old messages are read and skipped.
        """
        ends = []
        for assigned in self._consumer.assignment():
            tp = TopicPartition(assigned.topic, assigned.partition)
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
            ends.append(TopicPartition(assigned.topic, assigned.partition, max(high, 0)))
        self._consumer.assign(ends)

    def _lookup_partitions(self) -> list[TopicPartition]:
        found = []
        for role in self.LOOKUP_ROLES:
            topic = self._settings.topics.name(role)
            try:
                found += [TopicPartition(t, p) for t, p in topic_partitions(self._lookup_consumer, [topic])]
            except CliError as exc:
                log.warning("broker prober: no offset lookups on %s: %s", topic, exc)
        return found

    def start(self) -> BrokerProber:
        self._thread.start()
        self._lookup_thread.start()
        log.info(
            "broker prober %s: heartbeats on %s, lookups on %d partitions, every %g ms",
            self.id,
            self._topic,
            len(self._lookup_targets),
            self._config.interval_ms,
        )
        return self

    def verdict(self) -> ProbeVerdict | None:
        """The latest verdict (updated every heartbeat and every answer); None without enough measurements."""
        with self._lock:
            return self._verdict

    @property
    def alarm(self) -> bool:
        verdict = self.verdict()
        return verdict is not None and verdict.transport_slow

    def _run(self) -> None:
        interval_s = self._config.interval_ms / 1000.0
        next_beat = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                self._beat()
                self._update()
                next_beat = max(next_beat + interval_s, now)
            message = self._consumer.poll(max(0.0, min(0.1, next_beat - time.monotonic())))
            if message is not None:
                self._handle(message)
            self._producer.poll(0)

    def _run_lookups(self) -> None:
        """One timed end-offset query per interval, going round the data partitions."""
        if not self._lookup_targets:
            return
        turn = 0
        while not self._stop.wait(self._config.interval_ms / 1000.0):
            target = self._lookup_targets[turn % len(self._lookup_targets)]
            turn += 1
            started = time.monotonic()
            failure: KafkaException | None = None
            try:
                self._lookup_consumer.get_watermark_offsets(target, timeout=self.LOOKUP_TIMEOUT_S, cached=False)
            except KafkaException as exc:
                failure = exc
            lookup_ms = (time.monotonic() - started) * 1000.0
            if failure is not None:
                log.warning(
                    "offset lookup on %s/%d failed after %.0f ms: %s",
                    target.topic,
                    target.partition,
                    lookup_ms,
                    failure,
                )
                if lookup_ms < self._config.slow_lookup_p95_ms:
                    continue  # a quick refusal says nothing about speed; a slow one does (a lower bound)
            LOOKUP_HISTOGRAM.observe(lookup_ms / 1000.0)
            with self._lock:
                self._window.observe_lookup(lookup_ms)
                self._latest_lookup_ms = lookup_ms

    def _beat(self) -> None:
        self._seq += 1
        seq = self._seq
        sent = now_ms()
        with self._lock:
            lookup_ms, self._latest_lookup_ms = self._latest_lookup_ms, None
        record = contracts.BrokerProbe(
            prober=self.id,
            seq=seq,
            sent_ts_ms=sent,
            previous_rtt_ms=self._previous_rtt_ms(seq, sent),
            lookup_ms=-1.0 if lookup_ms is None else lookup_ms,
        )

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None and self._pending.pop(seq, None) is not None:
                HEARTBEATS.labels("failed").inc()
                log.warning("broker probe heartbeat %d not delivered: %s", seq, error)

        try:
            self._producer.produce(self._topic, key=self._key, value=record.encode(), on_delivery=delivered)
        except (BufferError, KafkaException) as exc:
            HEARTBEATS.labels("failed").inc()
            log.warning("broker probe heartbeat %d not produced: %s", seq, exc)
            return
        self._pending[seq] = sent
        HEARTBEATS.labels("sent").inc()

    def _previous_rtt_ms(self, seq: int, sent_ms: float) -> float:
        """Heartbeat seq-1's round trip; its age so far while it is still out (a lower bound); -1 if none."""
        if self._first_counted is None or seq - 1 < self._first_counted:
            return -1.0
        if self._last_answer is not None and self._last_answer[0] == seq - 1:
            return self._last_answer[1]
        previous_sent = self._pending.get(seq - 1)
        return sent_ms - previous_sent if previous_sent is not None else -1.0

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("probe topic: %s", error)
            return
        if message.key() != self._key:
            return
        try:
            record = contracts.BrokerProbe.decode(message.value())
        except contracts.ContractError as exc:
            log.warning("skipping unreadable heartbeat at offset %s: %s", message.offset(), exc)
            return
        if record.prober != self.id or self._pending.pop(record.seq, None) is None:
            return
        if self._first_counted is None:
            self._first_counted = self._seq + 1
            log.info("broker prober %s: first heartbeat back, counting round trips from seq %d", self.id, self._seq + 1)
        if record.seq < self._first_counted:
            return
        rtt = now_ms() - record.sent_ts_ms
        if rtt < 0:  # the wall clock stepped back meanwhile: no figure
            return
        HEARTBEATS.labels("answered").inc()
        RTT_HISTOGRAM.observe(rtt / 1000.0)
        self._last_answer = (record.seq, rtt)
        with self._lock:
            self._window.observe(rtt)
        self._update()

    def _update(self) -> None:
        """Expire lost heartbeats, recompute the verdict, export it, log the alarm's start and end."""
        now = now_ms()
        horizon = now - self._config.window_s * 1000.0
        for seq in [seq for seq, sent in self._pending.items() if sent < horizon]:
            del self._pending[seq]
            HEARTBEATS.labels("lost").inc()
        counted = self._first_counted
        outstanding = [now - sent for seq, sent in self._pending.items() if counted is not None and seq >= counted]
        with self._lock:
            was_on = self._window.alarm
            verdict = self._verdict = self._window.verdict(outstanding)
            is_on = self._window.alarm
        if verdict is not None:
            for gauge, p50, p95 in (
                (RTT, verdict.rtt_p50_ms, verdict.rtt_p95_ms),
                (LOOKUP, verdict.lookup_p50_ms, verdict.lookup_p95_ms),
            ):
                gauge.labels("p50").set(p50 / 1000.0)
                gauge.labels("p95").set(p95 / 1000.0)
        ALARM.set(1 if is_on else 0)
        if is_on and not was_on:
            log.warning("transport alarm start %s", self._alarm_fields(verdict))
        elif was_on and not is_on:
            log.info("transport alarm end %s", self._alarm_fields(verdict))

    def _alarm_fields(self, verdict: ProbeVerdict | None) -> str:
        fields: dict[str, Any] = {"prober": self.id, "topic": self._topic}
        if verdict is None:
            fields["reason"] = "too few measurements in the window"
        else:
            fields["reason"] = verdict.reason
            fields.update(verdict.as_metrics())
        return json.dumps(fields, separators=(",", ":"))

    def close(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._lookup_thread):
            if thread.is_alive():
                thread.join(self.LOOKUP_TIMEOUT_S + 1.0)
        self._consumer.close()
        self._lookup_consumer.close()
        self._producer.flush(1.0)

    def __enter__(self) -> BrokerProber:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()
