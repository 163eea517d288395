"""``hopline assembler``: hypotheses -> transcripts and one latency event per hop.

A faust-streaming agent on the hypotheses topic (keyed by session, so one session's hops
arrive in order on one partition) feeds :class:`pipeline.stitching.Stitcher`, publishes the
partials and finals it yields to the transcripts topic, and for every hypothesis a
LatencyEvent whose components add up to e2e (:mod:`pipeline.latency`). The partial emit
interval follows the controller's knobs (160 ms, 320 ms when throttled).

Recovery: per-session stitching state lives in memory and is mirrored, after every
hypothesis that changes it, into a faust table (changelog topic
``<app>-stitching-changelog``, co-partitioned with the hypotheses by session key). Per
hypothesis its transcripts and latency event go out first; once they are delivered the new
state, which records the hypothesis' input offset, goes to the changelog; the input is acked
once that is delivered too. After a crash the hypotheses since the last committed offset are
replayed; each one the restored state records as applied (its offset among the last ones applied, or
older) sends nothing (not even a latency event), and a restored state only ever follows delivered outputs,
so nothing is lost.
The agent never waits for a delivery, so ``post`` stays at its ~10 ms (waiting for two round
trips per hypothesis, in order, doubled post p50 and tripled its p95 on the embedded broker).
The price is a narrow window: a crash after the outputs were delivered but before the state was
repeats that hypothesis' outputs on the replay (the same bytes: readers keep (session, segment,
hop_seq) as their identity). Writing the state first closed that window but opened a worse one:
a state delivered ahead of its outputs made the replay skip outputs that never went out. (The
two-assembler fault test still loses a latency event now and then at a rebalance, with either
order: an open defect, docs/faults.md.) Exactly-once would need Kafka transactions, which the
embedded broker does not honour. An output or state that fails
delivery leaves its input unacked; ``MAX_DELIVERY_FAILURES`` in a row crash the app (exit
non-zero) so the next run replays them.

Rebalance: a revoked partition's sessions are dropped from memory (their state is in the
changelog); once faust has recovered the table for an assignment, every stored session of
the assigned partitions is loaded, so idle expiry closes (final) and later deletes them too.
A session's partition is the murmur2 hash of its id, as for every keyed hopline topic.

Undecodable or unstitchable hypotheses go to ``<hypotheses>.dlq`` with the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from aiokafka.partitioner import murmur2
from prometheus_client import Counter, Histogram

from pipeline import contracts
from pipeline.assembly.policy import Stitcher, StitchingPolicy
from pipeline.clock import now_ms
from pipeline.observe.latency import MEASURES, latency_event, measures
from pipeline.observe.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "assembler"

HOP_LATENCY = Histogram(
    "hopline_hop_latency_seconds",
    "Per-hop latency by component (hop_buffer, net, queue_wait, batch_wait, gpu_infer, post, e2e).",
    ["component"],
    buckets=LATENCY_BUCKETS_S,
)
#: One child per component, looked up once: ``labels()`` on every hop cost more than the observation.
_HOP_LATENCY_BY_MEASURE = {name: HOP_LATENCY.labels(name) for name in MEASURES}
HOP_BATCH_SIZE = Histogram(
    "hopline_hop_batch_size", "Size of the micro-batch each hop was inferred in.", buckets=BATCH_SIZE_BUCKETS
)
HYPOTHESES = Counter(
    "hopline_assembler_hypotheses_total",
    "Hypotheses taken, by stitching status (applied, duplicate, stale, closed, invalid, undecodable).",
    ["status"],
)
TRANSCRIPTS = Counter("hopline_assembler_transcripts_total", "Transcripts published, by kind.", ["kind"])
EVICTED = Counter("hopline_assembler_evicted_sessions_total", "Sessions closed early because max_sessions were open.")
DELIVERY_FAILURES = Counter(
    "hopline_assembler_delivery_failures_total", "Outputs or state writes whose delivery failed (input left unacked)."
)
#: Failed deliveries in a row after which the assembler crashes so its next run replays them.
MAX_DELIVERY_FAILURES = 3
#: How long a SIGTERM waits for deliveries in flight before faust stops.
STOP_SETTLE_S = 10.0


def stitching_policy(settings: Settings) -> StitchingPolicy:
    assembler = settings.assembler
    return StitchingPolicy(
        endpoint_silence_ms=assembler.endpoint_silence_ms,
        agreement_tolerance_ms=assembler.agreement_tolerance_ms,
        stable_after_ms=assembler.stable_after_ms,
        idle_timeout_ms=assembler.idle_timeout_s * 1000.0,
        closed_retention_ms=assembler.closed_retention_s * 1000.0,
        max_segment_words=assembler.max_segment_words,
        max_sessions=assembler.max_sessions,
    )


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes
    value: bytes


@dataclass
class Handled:
    """What one hypothesis message leads to: messages to send, state to persist, or a dead letter."""

    outgoing: list[Outgoing] = field(default_factory=list)
    session_id: str | None = None
    state: bytes | None = None
    evicted: dict[str, bytes | None] = field(default_factory=dict)
    dead_letter_reason: str | None = None
    error: BaseException | None = None


class Assembly:
    """The assembler's logic between Kafka bytes in and Kafka bytes out, free of faust.

    ``load_state(session_id)`` returns a persisted snapshot (or None); it is asked once per
    session not in memory, which is how state comes back after a restart or rebalance.
    """

    def __init__(
        self,
        settings: Settings,
        load_state: Callable[[str], bytes | None],
        clock: Callable[[], float] = now_ms,
    ) -> None:
        self._topics = settings.topics
        self._partitions = settings.topics.partitions
        self._load_state = load_state
        self._clock = clock
        self.stitcher = Stitcher(stitching_policy(settings), clock=clock)

    def handle(self, value: bytes | None, emit_interval_ms: float, offset: int = -1) -> Handled:
        """``offset``: the message's offset in its partition, which recognises a replay after a crash."""
        try:
            hypothesis = contracts.Hypothesis.decode(value)
        except contracts.ContractError as exc:
            HYPOTHESES.labels("undecodable").inc()
            return Handled(dead_letter_reason=str(exc), error=exc)
        session_id = hypothesis.session_id
        if session_id not in self.stitcher:
            self._restore(session_id)
        outcome = self.stitcher.accept(hypothesis, emit_interval_ms, offset)
        HYPOTHESES.labels(outcome.status).inc()
        if outcome.status == "invalid":
            return Handled(dead_letter_reason=f"cannot stitch: {outcome.reason}")
        if outcome.status == "replayed":
            return Handled(session_id=session_id)
        for evicted in outcome.evicted:
            EVICTED.inc()
            log.warning("session %s: closed to make room (max_sessions open)", evicted)
        if outcome.status != "applied":
            log.info("session %s: ignored %s", session_id, outcome.reason)
        if outcome.dropped_words:
            log.warning(
                "session %s hop %s: dropped %d malformed words",
                session_id,
                hypothesis.hop_seq,
                outcome.dropped_words,
            )
        handled = Handled(session_id=session_id)
        key = session_id.encode()
        finished_ms = self._clock()
        for transcript in outcome.transcripts:
            message, finished_ms = self._transcript(transcript)
            handled.outgoing.append(message)
        event = latency_event(hypothesis, finished_ms, emitted=outcome.emitted)
        observe(event)
        handled.outgoing.append(Outgoing(self._topics.latency, key, event.encode()))
        if outcome.status == "applied":
            handled.state = self._snapshot(session_id)
            handled.evicted = {evicted: self._snapshot(evicted) for evicted in outcome.evicted}
        return handled

    def partition_of(self, session_id: str) -> int:
        """The session's partition in every keyed topic (the producers' murmur2 partitioner)."""
        return (murmur2(session_id.encode()) & 0x7FFFFFFF) % self._partitions

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop the sessions of revoked partitions from memory; their state stays in the table."""
        for session_id in self.stitcher.session_ids():
            if self.partition_of(session_id) in partitions:
                self.stitcher.forget(session_id)

    def restore_partitions(self, partitions: set[int], stored: Iterable[tuple[bytes | str, bytes]]) -> int:
        """Load every stored session of ``partitions`` not in memory; returns how many."""
        restored = 0
        for key, value in stored:
            session_id = key.decode() if isinstance(key, bytes) else key
            if session_id not in self.stitcher and self.partition_of(session_id) in partitions:
                restored += self._restore(session_id, value)
        return restored

    def expire(self) -> tuple[list[Outgoing], dict[str, bytes | None]]:
        """Finals of idle sessions, and the state changes to persist (None = delete)."""
        expiry = self.stitcher.expire()
        outgoing = [self._transcript(final)[0] for final in expiry.finals]
        changes: dict[str, bytes | None] = {s: self._snapshot(s) for s in expiry.closed}
        changes.update(dict.fromkeys(expiry.forgotten))
        for session_id in expiry.closed:
            log.info("session %s: idle, closed", session_id)
        return outgoing, changes

    def _transcript(self, transcript: contracts.Transcript) -> tuple[Outgoing, float]:
        """The transcript's message, stamped with the moment it is handed over, and that moment."""
        published_ts_ms = self._clock()
        TRANSCRIPTS.labels(transcript.kind).inc()
        value = replace(transcript, published_ts_ms=published_ts_ms).encode()
        return Outgoing(self._topics.transcripts, transcript.session_id.encode(), value), published_ts_ms

    def _snapshot(self, session_id: str) -> bytes | None:
        snapshot = self.stitcher.snapshot(session_id)
        return json.dumps(snapshot, separators=(",", ":")).encode() if snapshot else None

    def _restore(self, session_id: str, stored: bytes | None = None) -> bool:
        stored = stored if stored is not None else self._load_state(session_id)
        if stored is None:
            return False
        try:
            self.stitcher.restore(json.loads(stored))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("session %s: unreadable stored state, starting afresh: %s", session_id, exc)
            return False
        return True


def observe(event: contracts.LatencyEvent) -> None:
    """Feed one latency event into the Prometheus histograms (seconds)."""
    for name, value in measures(event).items():
        _HOP_LATENCY_BY_MEASURE[name].observe(value / 1000.0)
    HOP_BATCH_SIZE.observe(event.batch_size)


def run(settings: Settings) -> int:
    """Run the assembler agent until SIGTERM; returns the exit code."""
    from pipeline.control.follower import ControlFollower
    from pipeline.kafka.faust_app import AgentDeadLetters, make_app, raw_topic, run_app
    from pipeline.observe.metrics import serve_metrics

    serve_metrics(settings, SERVICE)
    app = make_app(settings, f"{settings.app_id}-{SERVICE}")
    source = raw_topic(app, settings.topics.hypotheses)
    dead_letters = AgentDeadLetters(app, settings, service=SERVICE)
    # Rows are written by write_changelog() to the session's own changelog partition, inside an event
    # or not (the expiry timer), so faust's event-bound partition choice is not used.
    states = app.Table(
        "stitching",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.topics.partitions,
    )
    assembly = Assembly(settings, load_state=lambda session_id: states.get(session_id.encode()))
    follower = ControlFollower(settings)
    changelog = states.changelog_topic.get_topic_name()
    failures = 0

    async def produce(topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> Any:
        """Straight to faust's producer (flushed on stop); returns the delivery future."""
        return await app.producer.send(topic, key, value, partition, None, None)

    def update_table(changes: dict[str, bytes | None]) -> dict[str, bytes | None]:
        """Apply the changes to the local table now (None: delete); returns the rows the changelog needs."""
        rows: dict[str, bytes | None] = {}
        for session_id, state in changes.items():
            key = session_id.encode()
            if state is None:
                if states.data.pop(key, None) is None:
                    continue
            else:
                states.data[key] = state
            rows[session_id] = state
        return rows

    pending: set[asyncio.Future[Any]] = set()
    # Changelog writes go out in the order their outputs were delivered: a session's rows never reorder.
    changelog_order = asyncio.Lock()

    def on_delivery(futures: list[Any], then: Callable[[], None] | None = None) -> None:
        """Once ``futures`` are delivered, run ``then``; count a failure and crash the app after
        MAX_DELIVERY_FAILURES in a row, the input left unacked so the next run replays it."""
        done = asyncio.gather(*futures)
        pending.add(done)

        def settle(result: asyncio.Future[Any]) -> None:
            nonlocal failures
            pending.discard(result)
            error = None if result.cancelled() else result.exception()
            if result.cancelled() or error is not None:
                failures += 1
                DELIVERY_FAILURES.inc()
                log.error("delivery failed (%d in a row), input stays unacked: %s", failures, error)
                if failures >= MAX_DELIVERY_FAILURES:
                    crash = asyncio.ensure_future(app.crash(error or RuntimeError("delivery cancelled")))
                    pending.add(crash)
                return
            failures = 0
            if then is not None:
                then()

        done.add_done_callback(settle)

    async def write_changelog(rows: dict[str, bytes | None], then: Callable[[], None] | None) -> None:
        """The rows to each session's own changelog partition; ``then`` once they are delivered."""
        async with changelog_order:
            writes = [
                await produce(changelog, session_id.encode(), state, assembly.partition_of(session_id))
                for session_id, state in rows.items()
            ]
        on_delivery(writes, then)

    async def write_and_send(
        changes: dict[str, bytes | None], outgoing: list[Outgoing], then: Callable[[], None] | None = None
    ) -> None:
        """Outputs first; once they are delivered, the state rows (which record the input offset); ``then``
        once those are delivered too. The local table is current at once."""
        rows = update_table(changes)
        sends = [await produce(m.topic, m.key, m.value) for m in outgoing]

        def write_rows() -> None:
            if rows:
                task = asyncio.ensure_future(write_changelog(rows, then))
                pending.add(task)
                task.add_done_callback(pending.discard)
            elif then is not None:
                then()

        on_delivery(sends, write_rows)

    @app.agent(source)
    async def assemble(stream: Any) -> None:
        async for event in stream.noack().events():
            handled = assembly.handle(event.value, follower.knobs.emit_interval_ms, event.message.offset)
            if handled.dead_letter_reason is not None:
                letter = await dead_letters.publish(event, handled.dead_letter_reason, handled.error)
                on_delivery([letter], event.ack)
                continue
            changes = dict(handled.evicted)
            if handled.session_id is not None and handled.state is not None:
                changes[handled.session_id] = handled.state
            await write_and_send(changes, handled.outgoing, event.ack)

    @app.timer(1.0)
    async def expire_idle_sessions() -> None:
        outgoing, changes = assembly.expire()
        await write_and_send(changes, outgoing)

    def source_partitions(tps: Iterable[Any]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == settings.topics.hypotheses}

    async def forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        """Only the revoked partitions' sessions leave memory; the rest stay current."""
        assembly.forget_partitions(source_partitions(revoked))

    async def restore_assigned() -> None:
        """After faust recovered the table: load the assigned partitions' sessions, for idle expiry."""
        partitions = source_partitions(app.consumer.assignment())
        restored = assembly.restore_partitions(partitions, list(states.data.items()))
        log.info("restored %d sessions of partitions %s", restored, sorted(partitions))

    # mode's signal-handler type cannot be satisfied by a plain def under mypy; the call shape is right.
    app.on_partitions_revoked.connect(cast(Any, forget_revoked))
    states.on_recover(restore_assigned)

    async def settle_deliveries() -> None:
        """On SIGTERM, before faust commits: let outputs and the state rows behind them be delivered (and
        their inputs acked), so a clean stop leaves nothing for the next run to send again."""
        deadline = asyncio.get_running_loop().time() + STOP_SETTLE_S
        while pending and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.wait(list(pending), timeout=left)

    follower.start()
    try:
        return run_app(app, service=SERVICE, on_stop=settle_deliveries)
    finally:
        follower.close()
