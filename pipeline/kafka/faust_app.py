"""The one way hopline builds and runs faust-streaming apps.

Why a module of its own: faust's defaults are wrong for a latency pipeline. Its aiokafka
driver hard-codes ``fetch_max_wait_ms=1500`` (on the embedded broker every fetch waits the
full time, so 20 ms frames arrived ~400 ms late), its web server grabs port 6066, it
creates ``<app>-data`` in the working directory, its JSON serializers would re-encode our
Avro bytes, and its CLI wants to own the process. Here:

* :func:`make_app` -> a :class:`HoplineApp` with the broker from ``settings.kafka``, the
  fetch wait from ``settings.kafka.fetch_wait_max_ms`` (through :class:`LowLatencyTransport`),
  the group session/heartbeat timeouts from settings, ``topic_partitions`` equal to
  ``settings.topics.partitions`` (table changelogs must match the source topic, else
  ``PartitionsMismatch``), raw bytes keys/values, the web server off, a private data dir
  and in-memory table stores (state survives restarts through the changelog topics), and
  the TLS/SASL settings as faust broker credentials (:func:`broker_credentials`). Its consumer
  (:class:`LowLatencyConsumer`) also repairs what faust loses at a rebalance: no commit past an unacked
  message, sources resumed only at their committed offsets, fetches filtered while no partition is active.
* :func:`raw_topic` -> a topic of raw bytes; values are encoded with ``pipeline.contracts``.
* :class:`AgentDeadLetters` -> publish an event an agent cannot process to ``<topic>.dlq``.
* :func:`run_app` -> run the app in this process from a ``hopline`` CLI handler until
  SIGTERM/Ctrl-C, print ``HOPLINE-READY <service>`` (:mod:`pipeline.ready`) once recovery is done
  and the agents consume, stop cleanly (faust commits processed offsets and flushes its producer), return 0.

How a faust service (e.g. the assembler) uses it, inside its CLI handler::

    from pipeline import contracts
    from pipeline.kafka.faust_app import AgentDeadLetters, make_app, raw_topic, run_app

    def run(settings: Settings) -> int:
        app = make_app(settings, f"{settings.app_id}-assembler")
        source = raw_topic(app, settings.topics.hypotheses)
        output = raw_topic(app, settings.topics.transcripts)
        dead_letters = AgentDeadLetters(app, settings, service="assembler")

        @app.agent(source)
        async def assemble(stream):
            async for event in stream.events():
                try:
                    hypothesis = contracts.Hypothesis.decode(event.value)
                except contracts.ContractError as exc:
                    await dead_letters.publish(event, str(exc), exc)
                    continue
                await output.send(key=event.key, value=contracts.Transcript(...).encode())

        return run_app(app, service="assembler")

Heavy import (faust): import this module inside CLI handlers, not at CLI module level.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT

from pipeline.kafka.dead_letters import dead_letter_key, dead_letter_record
from pipeline.kafka.produce_stats import PRODUCE_STATS
from pipeline.ready import announce_ready, announce_stats
from pipeline.settings import Settings

log = logging.getLogger(__name__)


class FetchOnly:
    """The live set of partitions faust lets the fetcher hand out, as a filter aiokafka applies even while
    it is empty.

    aiokafka's ``fetched_records(partitions)`` skips its filter when ``partitions`` is falsy and hands out
    what it has buffered for every partition. faust passes its live set of active partitions, which is
    empty for a moment at the end of each table recovery (changelogs paused, sources not yet resumed): the
    sources' buffered records were then handed out, dropped by faust as inactive, and their fetch position
    moved past them. A member starting on a fresh group (no committed offset to seek back to) never read
    those records; elsewhere the position was wrong until faust's seek to the committed offset.
    """

    __slots__ = ("_live",)

    def __init__(self, live: set[TP]) -> None:
        self._live = live

    def __contains__(self, tp: object) -> bool:
        return tp in self._live

    def __bool__(self) -> bool:
        return True


class LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with the fetch wait taken from the app instead of 1500 ms, and fetches that
    hand out records of active partitions only (:class:`FetchOnly`)."""

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP] | None,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        only = None if active_partitions is None else FetchOnly(active_partitions)
        # faust types it a set; aiokafka only tests its truth and membership (None: every partition).
        return await super()._fetch_records(consumer, cast(set[TP], only), timeout=timeout, max_records=max_records)

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("aiokafka changed: AIOKafkaConsumer has no _fetch_max_wait_ms to override")
        # aiokafka reads this attribute when start() builds its Fetcher, which happens later.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_wait_max_ms", 10)
        log.info("faust consumer fetch wait %d ms", consumer._fetch_max_wait_ms)
        return consumer


class LowLatencyConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with :class:`LowLatencyConsumerThread`, source partitions that resume only
    at their committed offsets, and a commit that never passes an unacked message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_after_seek: set[TP] = set()

    def _new_consumer_thread(self) -> LowLatencyConsumerThread:
        return LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        """Changelog partitions resume now; source partitions once :meth:`perform_seek` has put them at their
        committed offsets.

        At the end of a rebalance faust resumes the source partitions, then seeks them to their committed
        offsets, with flow already running for the table recovery. During that seek the consumer delivered
        records fetched from wherever the partition's fetch position was (a takeover's survivor took offsets
        105..107 before 40..104), and faust's next flow resume emptied the stream queues of what had not been
        taken yet, though marked read: hops assembled out of order, or not until the next rebalance
        (docs/faults.md). faust calls :meth:`perform_seek` right after every resume of source partitions.
        """
        requested = set(tps)
        sources = {tp for tp in requested if not self._is_changelog_tp(tp)}
        self._resume_after_seek |= sources
        super().resume_partitions(requested - sources)

    async def perform_seek(self) -> None:
        """Seek every partition to its committed offset, then resume the source partitions held back."""
        await super().perform_seek()
        assigned = self.assignment()
        held, self._resume_after_seek = self._resume_after_seek, set()
        super().resume_partitions({tp for tp in held if tp in assigned})

    def _new_offset(self, tp: Any) -> int | None:
        """The offset to commit for ``tp``, or None while its committed offset is still unacked.

        faust's own checks the head of the acked offsets with ``min(acked) - committed > 1``, where
        ``committed`` is the next offset to read: with ``committed`` still in flight and the next offsets
        acked it commits past ``committed``, and no restart or rebalance reads that message again. Seen in
        the two-assembler fault test: committed 48, acked 49..119, commit 120, offset 48 never assembled
        (its record had not reached the agent at a takeover: docs/faults.md). A committed offset inside
        faust's own offset gaps (compacted or transactional topics) still counts.
        """
        committed = self._committed_offset[tp]
        if (
            committed is not None
            and self._acked[tp]
            and committed not in self._acked_index[tp]
            and not self._gap[tp].overlaps(committed)
        ):
            return None
        offset: int | None = super()._new_offset(tp)
        return offset


class CountingAIOKafkaProducer(aiokafka.AIOKafkaProducer):
    """aiokafka's producer, counting the record batches its sender takes into :data:`PRODUCE_STATS`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        accumulator = getattr(self, "_message_accumulator", None)
        if accumulator is None or not hasattr(accumulator, "drain_by_nodes"):
            raise RuntimeError("aiokafka changed: no _message_accumulator.drain_by_nodes to count batches on")
        drain = accumulator.drain_by_nodes

        def drain_counted(*args: Any, **kwargs: Any) -> Any:
            nodes, unknown_leaders = drain(*args, **kwargs)
            for batches in nodes.values():
                for partition, batch in batches.items():
                    PRODUCE_STATS.add(partition.topic, 1, batch.record_count)
            return nodes, unknown_leaders

        accumulator.drain_by_nodes = drain_counted


class CountingProducer(faust_aiokafka.Producer):
    """faust's aiokafka producer built as :class:`CountingAIOKafkaProducer`."""

    @property
    def _producer_type(self) -> type[aiokafka.AIOKafkaProducer]:
        return CountingAIOKafkaProducer


class LowLatencyTransport(faust_aiokafka.Transport):
    """The aiokafka transport with :class:`LowLatencyConsumer` and :class:`CountingProducer`."""

    Consumer = LowLatencyConsumer
    Producer = CountingProducer


class HoplineApp(faust.App):
    """A faust App whose consumer uses :class:`LowLatencyTransport` and a configurable fetch wait."""

    fetch_wait_max_ms: int = 10

    def _new_transport(self) -> Any:
        return LowLatencyTransport(self.conf.broker_consumer, self)


def _data_dir(app_id: str) -> Path:
    """faust insists on a data dir even with memory stores; keep it out of the working tree."""
    path = Path(tempfile.gettempdir()) / "hopline-faust" / app_id
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def broker_credentials(settings: Settings) -> faust.auth.Credentials | None:
    """``settings.kafka``'s security as faust credentials: the aiokafka side of ``clients.security_config``.

    None for PLAINTEXT; SSL and SASL_SSL get an SSL context with the CA bundle and the client certificate.
    """
    kafka = settings.kafka
    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_cafile)
        if kafka.ssl_certfile and kafka.ssl_keyfile:
            context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    if kafka.sasl_mechanism and kafka.sasl_username and kafka.sasl_password:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    return None if context is None else faust.SSLCredentials(context)


def make_app(settings: Settings, app_id: str, **conf: Any) -> HoplineApp:
    """A faust app for one hopline service; ``conf`` overrides any faust setting."""
    kafka = settings.kafka
    brokers = [f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",") if server.strip()]
    options: dict[str, Any] = {
        "broker": brokers,
        "broker_credentials": broker_credentials(settings),
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.topics.partitions,
        "topic_replication_factor": kafka.replication_factor,
        "broker_session_timeout": kafka.session_timeout_ms / 1000.0,
        "broker_heartbeat_interval": kafka.heartbeat_interval_ms / 1000.0,
        "broker_commit_interval": 0.5,
        "consumer_auto_offset_reset": "earliest",
        "producer_linger": kafka.linger_ms / 1000.0,
        "producer_acks": -1 if kafka.acks == "all" else int(kafka.acks),
        "producer_request_timeout": kafka.delivery_timeout_ms / 1000.0,
        # aiokafka keeps one request in flight per broker and makes a send wait while its
        # partition's batch is full: with 16 kB batches every 41 kB hop would wait for the
        # previous request's round trip. 1 MB batches let sends queue up behind it instead.
        "producer_max_batch_size": 1_000_000,
        "web_enabled": False,
        # The embedded broker's ListOffsets(latest) under-reports a partition's end (the newest batch's base
        # offset + 1), while a fetch returns that whole batch: a member that recovered a changelog ending in a
        # batch of several records has read past the reported end, and at the next rebalance faust's check took
        # that for a stale local store and crashed recovery (ConsistencyError), e.g. when another member joined
        # and left again. The memory store keeps no files that the check could find stale.
        "recovery_consistency_check": False,
        "store": "memory://",
        "datadir": str(_data_dir(app_id)),
        "autodiscover": False,
        "worker_redirect_stdouts": False,
    }
    options.update(conf)
    app = HoplineApp(app_id, **options)
    app.fetch_wait_max_ms = kafka.fetch_wait_max_ms
    return app


def raw_topic(app: faust.App, name: str) -> Any:
    """A topic whose keys and values are bytes, untouched by faust (contracts encode them)."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


class AgentDeadLetters:
    """Publishes events a faust agent cannot process to ``<source topic>.dlq``, with the reason."""

    def __init__(self, app: faust.App, settings: Settings, service: str) -> None:
        self._app = app
        self._settings = settings
        self._service = service
        self._topics: dict[str, Any] = {}

    async def publish(self, event: EventT, reason: str, error: BaseException | None = None) -> Any:
        """Send the dead letter; returns its delivery future (ack the event once it is done)."""
        message = event.message
        source = message.topic
        log.warning("dead-lettered %s[%s]@%s: %s", source, message.partition, message.offset, reason)
        topic = self._topics.get(source)
        if topic is None:
            topic = self._topics[source] = raw_topic(self._app, self._settings.topics.dead_letter(source))
        key = message.key if isinstance(message.key, bytes) else None
        value = message.value if isinstance(message.value, bytes) else None
        record = dead_letter_record(
            source_topic=source,
            partition=message.partition,
            offset=message.offset,
            key=key,
            value=value,
            reason=reason,
            error=error,
            service=self._service,
        )
        return await topic.send(key=dead_letter_key(key), value=record)


Hook = Callable[[], Awaitable[None] | None]

#: Longest a service's ``on_stop`` drain may take before faust stops anyway.
DRAIN_TIMEOUT_S = 10.0


async def _call(hook: Hook) -> None:
    result = hook()
    if asyncio.iscoroutine(result):
        await result


class _ServiceWorker(faust.Worker):
    """faust's Worker, announcing readiness through logging and draining before it stops."""

    def __init__(self, app: faust.App, service: str, on_ready: Hook | None, on_stop: Hook | None) -> None:
        super().__init__(app, loglevel=None, override_logging=False, redirect_stdouts=False, quiet=True)
        self.spinner = None
        self._service = service
        self._on_ready = on_ready
        self._on_stop = on_stop

    async def _stop_on_signal(self, signal: Any) -> None:
        if self._on_stop is not None:
            try:
                await asyncio.wait_for(_call(self._on_stop), DRAIN_TIMEOUT_S)
            except Exception:
                log.exception("%s: draining before stop failed", self._service)
        await super()._stop_on_signal(signal)

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        if self._on_ready is not None:
            await _call(self._on_ready)
        topics = ", ".join(sorted(self.app.topics.acking_topics)) or "nothing"
        log.info("%s ready: consuming %s", self._service, topics)
        announce_ready(self._service)


def _drop_faust_ready(record: logging.LogRecord) -> bool:
    return "Worker ready" not in record.getMessage()


def run_app(
    app: faust.App,
    service: str,
    on_ready: Hook | None = None,
    on_stop: Hook | None = None,
) -> int:
    """Run ``app`` in this process until SIGTERM/Ctrl-C; returns the exit code.

    Uses faust's Worker for start-up order (table recovery before agents) and its signal
    handling (SIGTERM/SIGINT stop the app: agents finish the current event, offsets of
    processed events are committed, the producer is flushed), but leaves logging alone so
    everything goes through the Python logging the CLI configured. ``on_ready`` runs once
    the app consumes, just before the ``HOPLINE-READY <service>`` line. ``on_stop`` runs on
    SIGTERM/SIGINT before faust stops anything (consumer, agents, producer): the place to
    finish in-flight work and write state, so what is committed is also persisted.
    """
    # faust logs "Worker ready" when recovery ends, before on_ready and before the agents run:
    # drop it, so the only readiness a reader of the log sees is the service's own.
    logging.getLogger("faust.tables.recovery").addFilter(_drop_faust_ready)
    worker = _ServiceWorker(app, service, on_ready, on_stop)
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        log.info("%s stopped (exit %d)", service, code)
        return code
    finally:
        announce_stats(service, PRODUCE_STATS.summary())
    return 0
