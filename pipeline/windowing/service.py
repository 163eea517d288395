"""``hopline windower``: the faust agent that turns the frames topic into the hops topic.

The rules live in :mod:`pipeline.windowing` (pure); this module is the wiring: decode the
``AudioFrame`` contract, feed :class:`~pipeline.windowing.Windower`, publish each hop
(``Hop`` contract, key = session id, ``published_ts_ms`` stamped just before the send),
dead-letter invalid frames to ``<frames>.dlq`` with the reason and the original bytes,
follow ``window_secs`` from the control topic, expire idle sessions every second.

Timing is the pipeline's own: each frame is stamped with :func:`pipeline.clock.now_ms` when
its event is taken, and a hop's ``ready_ts_ms`` is that receive time of the frame that
completed it (or the expiry check's time for an idle session's final hop), so ``net`` =
``published_ts_ms - ready_ts_ms`` is measured on one clock. ``first_capture_ts_ms`` is the
producer's capture time of the hop's first frame after the policy's sanity check; a capture
time it clamps is counted in ``hopline_windower_capture_clamped_total{reason}``, and every
other frame's received - capture end (transport plus the producer's clock offset) goes to
``hopline_windower_capture_skew_seconds{producer}``, labelled by the session id's tenant
prefix (:class:`~pipeline.windowing.policy.ProducerLabels`, a bounded number of labels).

State that survives a restart: faust tables with changelog topics, chosen over rebuilding
from the frames topic because the embedded broker cannot look offsets up by time and a
rebuild would have to re-read an unknown stretch of every partition. Writing a session's
whole 1.28 s window on every frame would cost ~2 MB/s per session, so the state is split
and written once per hop (and at the latest ``PERSIST_WITHIN_S`` after a frame arrives):

* table ``sessions``: key = session id, value = :meth:`SessionWindow.snapshot` (JSON,
  ~500 bytes: sequence position, hop counters, reorder buffer, resampler history);
* table ``audio``: key = ``session\x1f<first seq mod 128>``, value = first seq (8 bytes) +
  the 16 kHz PCM16 of the frames added since the last write (8 x 640 bytes per hop); the
  last 64 frames (one 1.28 s window) are always among them.

Measured with ``hopline bench windower`` (10 real-time sessions, 15 s, embedded broker):
**34.5 kB/s of changelog per session** (vs ~2 MB/s for a whole window per frame), and a
restarted windower is ready (``HOPLINE-READY windower``) **6.2 s** after it starts with 5.2 MB of changelog behind
it (of which ~3 s is the consumer-group join, ~0.5 s the changelog catch-up below).

Throughput (measured on the shared 2-core development machine, so pessimistic): ~0.25-0.35 ms
of CPU per frame in one windower process, of which ~0.09 ms is faust's own per-message
machinery (an empty agent) and ~0.07 ms the aiokafka consumer thread; the windowing itself
is ~5 us per 16 kHz frame and ~35 us per 8 kHz G.711 frame. One process therefore carries
~3,000-4,000 frames/s (60-80 sessions) on a free core; scale out by running more windower
processes, each taking a share of the frames partitions.

Exactly-once hops across a clean restart come from ordering, not transactions (which the
embedded broker does not honour): frames are acked only after the state covering them is
written, so the offset faust commits never runs ahead of the state; frames after the
commit come again and are dropped as duplicates by seq. On SIGTERM :meth:`_drain` stops
taking frames and writes every session's state before faust commits and stops, and a hop
with its state write is never cut in half by cancellation. The embedded broker's high
watermark can lag its last record, so faust's own recovery can miss the newest state:
:meth:`_read_changelogs_to_end` reads the changelogs to end-of-partition before a
partition's first frame is windowed.
After a crash (SIGKILL) a hop whose state write was lost is sent again with the same
``hop_seq`` and audio: consumers treat (session, hop_seq) as the hop's identity. The
changelog replay grows with the changelog: on Apache Kafka the compacted topics hold ~130
records per live session; the embedded broker never compacts.

A delivery that fails (hop, state or dead letter) is counted, logged and sent again with
backoff (:class:`~pipeline.windowing.policy.DeliveryRetry`); the frames behind it are acked
only once it is through. If it never goes through the windower exits with
:data:`DELIVERY_FAILED_EXIT`: the restart replays from the last commit, where staying up
would leave the committed offset stuck for the rest of the run.

Idle expiry closes a session with a final hop and writes its closed state; the state is
deleted only after ``ended_retention_s`` more, so a frame that comes later reopens the
session with its hop numbers going on, even across a restart (see the policy).

Rebalance: on partitions revoked, the sessions of those partitions are persisted and
dropped from memory, so this windower neither expires nor deletes state it no longer owns;
on partitions assigned, their changelogs are read to the end again (the state another
windower wrote meanwhile) and their sessions restored, so one with no more frames still
expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.control.follower import ControlFollower
from pipeline.kafka.readers import ReadIncomplete, read_to_end
from pipeline.observe.metrics import LATENCY_BUCKETS_S, serve_metrics
from pipeline.settings import Settings
from pipeline.windowing.policy import DeliveryRetry, Frame, Outcome, ProducerLabels, SessionWindow, Windower

log = logging.getLogger(__name__)

SERVICE = "windower"

FRAMES_IN = Counter("hopline_windower_frames_total", "Frames consumed from the frames topic")
HOPS_OUT = Counter("hopline_windower_hops_total", "Hops published", ["final"])
DEAD_LETTERED = Counter("hopline_windower_dead_lettered_total", "Frames sent to the dead-letter topic")
GAP_FRAMES = Counter("hopline_windower_gap_frames_total", "Missing frames filled with silence")
DUPLICATE_FRAMES = Counter("hopline_windower_duplicate_frames_total", "Duplicate frames dropped")
LATE_FRAMES = Counter("hopline_windower_late_frames_total", "Frames that came after they were given up")
EXPIRED_SESSIONS = Counter("hopline_windower_expired_sessions_total", "Sessions closed for idleness")
SKIPPED_FRAMES = Counter(
    "hopline_windower_skipped_frames_total", "Frames passed over without fill: seq jumps past max_gap_frames"
)
DELIVERY_FAILURES = Counter(
    "hopline_windower_delivery_failures_total", "Hop, state or dead-letter deliveries that failed", ["topic"]
)
ACTIVE_SESSIONS = Gauge("hopline_windower_sessions", "Sessions in memory (open or recently ended)")
WINDOWING_SECONDS = Histogram(
    "hopline_windower_windowing_seconds",
    "Time to window one frame (decode, cut, persist)",
    buckets=LATENCY_BUCKETS_S,
)
HOP_EMIT_SECONDS = Histogram(
    "hopline_windower_hop_emit_seconds",
    "Hop ready (its completing frame received) -> published",
    buckets=LATENCY_BUCKETS_S,
)
CAPTURE_CLAMPED = Counter(
    "hopline_windower_capture_clamped_total",
    "Frames whose capture_ts_ms was NaN, in the future or too old, replaced by their receive time",
    ["reason"],
)
CAPTURE_SKEW_SECONDS = Histogram(
    "hopline_windower_capture_skew_seconds",
    "Frame received - capture end: transport plus the producer's clock offset (a clock ahead: first bucket)",
    ["producer"],
    buckets=LATENCY_BUCKETS_S,
)

SEQ = struct.Struct("<q")

#: A session's unpersisted frames are written at the latest this long after the first of them.
PERSIST_WITHIN_S = 1.0

#: Exit status when output could not be delivered after every retry (EX_TEMPFAIL: restart and replay).
DELIVERY_FAILED_EXIT = 75


def session_key(session_id: str) -> bytes:
    return session_id.encode()


def chunk_key(session_id: str, slot: int) -> bytes:
    return f"{session_id}\x1f{slot}".encode()


@dataclass
class _Sent:
    """One send in flight: its delivery future, its topic, and how to send the same record again."""

    future: asyncio.Future[Any]
    topic: str
    again: Callable[[], Awaitable[Any]]


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.cancelled() or future.exception() is not None


@dataclass
class _Unpersisted:
    """What a session did since its state was last written: the audio, and the frames to ack."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)


class WindowerService:
    """The faust app, its tables and agent, around one :class:`Windower`."""

    def __init__(self, settings: Settings, control: ControlFollower | None = None) -> None:
        from pipeline.kafka.faust_app import AgentDeadLetters, make_app, raw_topic

        self.settings = settings
        self.control = control
        self.windower = Windower(settings.audio)
        self.ring_frames = self.windower.shape.ring_frames
        # Chunks start at distinct seqs and hold at most ring_frames frames, so keying them by
        # first seq modulo 2 * ring_frames never overwrites audio the last window still needs.
        self.chunk_slots = 2 * self.ring_frames
        # Frames are acked only once their state is written (see _persist), so stopping must
        # not wait for every frame to be acked.
        self.app = make_app(settings, f"{settings.app_id}-windower", stream_wait_empty=False)
        self.frames = raw_topic(self.app, settings.topics.frames)
        self.dead_letters = AgentDeadLetters(self.app, settings, SERVICE)
        table_options: dict[str, Any] = {
            "default": None,
            "partitions": settings.topics.partitions,
            "key_type": bytes,
            "value_type": bytes,
        }
        self.session_table = self.app.Table("sessions", **table_options)
        self.audio_table = self.app.Table("audio", **table_options)
        self._unpersisted: dict[str, _Unpersisted] = {}
        self._stream: Any = None
        self._in_flight: asyncio.Future[None] | None = None
        self._acking: set[asyncio.Future[Any]] = set()
        self._caught_up: set[int] = set()
        self._assigned: set[int] = set()
        self._producer_label = ProducerLabels()
        self._draining = False
        self.retry = DeliveryRetry()
        self.exit: Callable[[int], None] = os._exit
        self.app.agent(self.frames, name="window-frames")(self._consume)
        self.app.timer(PERSIST_WITHIN_S / 2)(self._housekeeping)
        # faust's signal types want handlers of (sender, *args): these take the one argument it sends.
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    def run(self) -> int:
        from pipeline.kafka.faust_app import run_app

        return run_app(self.app, SERVICE, on_ready=self._restore_all, on_stop=self._drain)

    # -- knobs ----------------------------------------------------------------------------

    def _knobs(self) -> tuple[float, int]:
        if self.control is None:
            return self.settings.audio.window_secs, 0
        knobs = self.control.knobs
        return knobs.window_secs, knobs.level

    # -- the agent ------------------------------------------------------------------------

    async def _consume(self, stream: Any) -> None:
        self._stream = stream.noack()
        async for event in self._stream.events():
            if self._draining:
                continue  # left unacked: the next run gets it again
            received = now_ms()
            started = time.perf_counter()
            FRAMES_IN.inc()
            try:
                frame = Frame.from_record(contracts.AudioFrame.decode(event.value))
            except contracts.ContractError as exc:
                await self._dead_letter(event, str(exc), exc)
                continue
            if event.message.partition not in self._caught_up:
                self._read_changelogs_to_end()
            if frame.session_id not in self.windower.sessions:
                self._restore(frame.session_id)
            window_secs, level = self._knobs()
            outcome = self.windower.accept(
                frame, window_secs, level, partition=event.message.partition, received_ts_ms=received
            )
            self._observe_capture(frame.session_id, outcome)
            if outcome.rejection is not None:
                await self._dead_letter(event, outcome.rejection.reason)
                continue
            if outcome.duplicate or outcome.late:
                self._count(outcome)
                event.ack()
                continue
            pending = self._unpersisted.setdefault(frame.session_id, _Unpersisted())
            pending.frames += outcome.appended
            pending.events.append(event)
            if outcome.hops:
                await self._uninterrupted(self._publish_and_persist(frame.session_id, outcome))
            else:
                self._count(outcome)
            WINDOWING_SECONDS.observe(time.perf_counter() - started)

    async def _publish_and_persist(self, session_id: str, outcome: Outcome) -> None:
        await self._persist(session_id, await self._publish(outcome))

    async def _dead_letter(self, event: Any, reason: str, error: BaseException | None = None) -> None:
        DEAD_LETTERED.inc()

        def again() -> Awaitable[Any]:
            return self.dead_letters.publish(event, reason, error)

        topic = self.settings.topics.dead_letter(self.settings.topics.frames)
        self._ack_when_delivered([event], [_Sent(await again(), topic, again)])

    def _observe_capture(self, session_id: str, outcome: Outcome) -> None:
        """Count a clamped capture time, or observe the frame's skew under its producer's label."""
        if outcome.clamped_capture is not None:
            CAPTURE_CLAMPED.labels(reason=outcome.clamped_capture).inc()
        if outcome.capture_skew_ms is not None:
            CAPTURE_SKEW_SECONDS.labels(producer=self._producer_label(session_id)).observe(
                outcome.capture_skew_ms / 1000.0
            )

    def _count(self, outcome: Outcome) -> None:
        if outcome.gaps:
            GAP_FRAMES.inc(outcome.gaps)
        if outcome.skipped:
            SKIPPED_FRAMES.inc(outcome.skipped)
        if outcome.duplicate:
            DUPLICATE_FRAMES.inc()
        if outcome.late:
            LATE_FRAMES.inc()

    async def _publish(self, outcome: Outcome) -> list[_Sent]:
        """Send the outcome's hops; returns their delivery futures."""
        self._count(outcome)
        sent = []
        for hop in outcome.hops:
            published = now_ms()
            record = hop.to_record(published).encode()
            sent.append(await self._send(self.settings.topics.hops, session_key(hop.session_id), record))
            HOPS_OUT.labels(final=str(hop.is_final).lower()).inc()
            HOP_EMIT_SECONDS.observe(max(published - hop.ready_ts_ms, 0.0) / 1000.0)
        return sent

    def _ack_when_delivered(self, events: list[Any], sent: list[_Sent]) -> None:
        """Ack ``events`` once everything in ``sent`` is on the broker, so commits never outrun output.

        A frame is committed only after the hops it completed and the state recording it are
        delivered: a crash before that replays the frame instead of losing it. A failed
        delivery is sent again (:meth:`_redeliver`) before the frames are acked.
        """
        if not sent:
            for event in events:
                event.ack()
            return
        delivered = asyncio.gather(*(s.future for s in sent), return_exceptions=True)
        self._acking.add(delivered)

        def ack(done: asyncio.Future[Any]) -> None:
            self._acking.discard(done)
            failed = [s for s in sent if _failed(s.future)]
            if not failed:
                for event in events:
                    event.ack()
                return
            retrying = asyncio.ensure_future(self._redeliver(events, failed))
            self._acking.add(retrying)
            retrying.add_done_callback(self._acking.discard)

        delivered.add_done_callback(ack)

    async def _redeliver(self, events: list[Any], failed: list[_Sent]) -> None:
        """Send failed records again with backoff; ack ``events`` once all are through, or exit non-zero."""
        failures = 0
        while failed:
            failures += 1
            for sent in failed:
                DELIVERY_FAILURES.labels(topic=sent.topic).inc()
                error = None if sent.future.cancelled() else sent.future.exception()
                log.error("delivery to %s failed (%d in a row): %r", sent.topic, failures, error)
            delay = self.retry.delay_s(failures)
            if delay is None:
                log.critical(
                    "output still not delivered after %d attempts: exiting %d, %d frames replay after the restart",
                    failures,
                    DELIVERY_FAILED_EXIT,
                    len(events),
                )
                self.exit(DELIVERY_FAILED_EXIT)
                return
            await asyncio.sleep(delay)
            failed = [_Sent(await s.again(), s.topic, s.again) for s in failed]
            await asyncio.gather(*(s.future for s in failed), return_exceptions=True)
            failed = [s for s in failed if _failed(s.future)]
        for event in events:
            event.ack()

    # -- state ----------------------------------------------------------------------------

    async def _write(self, table: Any, partition: int, key: bytes, value: bytes | None) -> _Sent | None:
        """Set (or with None delete) a table key, sending the change to an explicit changelog partition.

        Sent straight to the producer rather than through faust's ``send_soon`` buffer, which can
        drop what it still holds when the app stops; works inside and outside the agent.
        """
        if value is None:
            if table.data.pop(key, None) is None:
                return None
        else:
            table.data[key] = value
        return await self._send(table.changelog_topic.get_topic_name(), key, value, partition)

    async def _send(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> _Sent:
        """Straight to faust's producer (flushed when the app stops); returns the send in flight.

        Skips faust's ``Topic.send`` layer, which costs several times more per message.
        """

        def again() -> Awaitable[Any]:
            return self.app.producer.send(topic, key, value, partition, None, None)

        return _Sent(await again(), topic, again)

    async def _persist(self, session_id: str, sent: list[_Sent] | None = None) -> None:
        """Write the session's snapshot and new audio; ack the frames they cover once delivered.

        Acking after delivery means a committed frame offset never runs ahead of the state:
        frames redelivered after a restart are either in the restored state (dropped as
        duplicates) or not yet seen. ``sent``: hops these frames completed, also awaited.
        """
        writes: list[_Sent | None] = list(sent or [])
        pending = self._unpersisted.pop(session_id, None)
        session = self.windower.sessions.get(session_id)
        if pending is None or session is None:
            return
        frames = pending.frames[-self.ring_frames :]
        if frames:
            first_seq = frames[0][0]
            chunk = SEQ.pack(first_seq) + b"".join(pcm for _, pcm in frames)
            slot = first_seq % self.chunk_slots
            writes.append(await self._write(self.audio_table, session.partition, chunk_key(session_id, slot), chunk))
        snapshot = session.snapshot()
        writes.append(await self._write(self.session_table, session.partition, session_key(session_id), snapshot))
        self._ack_when_delivered(pending.events, [write for write in writes if write is not None])

    async def _housekeeping(self) -> None:
        """Persist sessions with frames waiting too long; expire idle sessions; forget long-ended ones."""
        cutoff = time.monotonic() - PERSIST_WITHIN_S
        for session_id in [sid for sid, pending in self._unpersisted.items() if pending.since <= cutoff]:
            await self._uninterrupted(self._persist(session_id))
        window_secs, level = self._knobs()
        for session, outcome in self.windower.expire_idle(window_secs, level, now_ms=now_ms()):
            EXPIRED_SESSIONS.inc()
            self._unpersisted.setdefault(session.session_id, _Unpersisted())  # the closed state is written
            await self._uninterrupted(self._publish_and_persist(session.session_id, outcome))
        for session in self.windower.forget_ended():
            await self._uninterrupted(self._forget(session))
        ACTIVE_SESSIONS.set(len(self.windower.sessions))

    async def _forget(self, session: SessionWindow) -> None:
        """Delete an ended session's state (tombstones); acks the frames still waiting on it once delivered."""
        pending = self._unpersisted.pop(session.session_id, None)
        keys = [(self.session_table, session_key(session.session_id))]
        keys += [(self.audio_table, chunk_key(session.session_id, slot)) for slot in range(self.chunk_slots)]
        sent = [await self._write(table, session.partition, key, None) for table, key in keys]
        self._ack_when_delivered(pending.events if pending else [], [write for write in sent if write is not None])

    async def _uninterrupted(self, work: Awaitable[None]) -> None:
        """Finish ``work`` even if this task is cancelled: a hop and the state recording it go out together."""
        task = self._in_flight = asyncio.ensure_future(work)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise
        finally:
            self._in_flight = None

    async def _drain(self) -> None:
        """On SIGTERM, before faust stops: stop taking frames, write every session's state, flush.

        Every frame processed so far is then persisted and acked, so the commit faust makes
        while stopping matches the state and a restart neither loses nor repeats a hop.
        """
        self._draining = True
        if self._in_flight is not None:
            await asyncio.shield(self._in_flight)
        for session_id in list(self._unpersisted):
            await self._persist(session_id)
        await self.app.producer.flush()
        await asyncio.gather(*self._acking, return_exceptions=True)
        await asyncio.sleep(0)  # let the last ack callbacks run before faust commits
        log.info("windower drained: state of %d sessions written", len(self.windower.sessions))

    # -- restart --------------------------------------------------------------------------

    def _restore(self, session_id: str) -> SessionWindow | None:
        snapshot = self.session_table.get(session_key(session_id))
        if not snapshot:
            return None
        needed = SessionWindow.frames_needed(snapshot, self.windower.shape)
        frames: dict[int, bytes] = {}
        frame_bytes = self.windower.shape.samples_per_frame * 2
        for slot in range(self.chunk_slots):
            chunk = self.audio_table.get(chunk_key(session_id, slot))
            if not chunk:
                continue
            first_seq = SEQ.unpack_from(chunk)[0]
            for index in range((len(chunk) - SEQ.size) // frame_bytes):
                if first_seq + index in needed:
                    start = SEQ.size + index * frame_bytes
                    frames[first_seq + index] = chunk[start : start + frame_bytes]
        session = SessionWindow.restore(session_id, snapshot, frames, self.windower.shape)
        self.windower.adopt(session)
        log.info("restored session %s at seq %d, hop %d", session_id, session.next_seq, session.hop_seq)
        return session

    def _read_changelogs_to_end(self, timeout_s: float = 30.0) -> int:
        """Apply every changelog record of newly assigned partitions, up to each partition's real end.

        faust's recovery stops at the high watermark the broker reports, which on the embedded
        broker can lag the last record: the newest state (what was written while stopping) would
        be missed. Reading until end-of-partition closes that gap. Runs before a partition's first
        frame is windowed (the agent may start before ``on_ready``); returns the records applied.
        """
        partitions = self._owned() - self._caught_up
        self._caught_up |= partitions
        if not partitions:
            return 0
        tables = {table.changelog_topic.get_topic_name(): table for table in (self.session_table, self.audio_table)}
        started = time.monotonic()
        applied = 0
        changelogs = [(topic, partition) for topic in tables for partition in partitions]
        try:
            for message in read_to_end(self.settings, "windower-catch-up", partitions=changelogs, timeout_s=timeout_s):
                data = tables[message.topic() or ""].data
                if message.value():
                    data[message.key()] = message.value()
                else:
                    data.pop(message.key(), None)
                applied += 1
        except ReadIncomplete as exc:
            log.warning("changelog catch-up incomplete after %.0f s: %s", timeout_s, exc.pending)
        log.info("changelog catch-up: %d records in %.2f s", applied, time.monotonic() - started)
        return applied

    def _restore_all(self) -> None:
        """Restore every session of the partitions this windower owns (the table may hold others' too)."""
        self._read_changelogs_to_end()
        owned = self._owned()
        for key, snapshot in list(self.session_table.data.items()):
            session_id = key.decode() if isinstance(key, bytes) else str(key)
            if session_id not in self.windower.sessions and json.loads(snapshot)["partition"] in owned:
                self._restore(session_id)
        ACTIVE_SESSIONS.set(len(self.windower.sessions))

    def _owned(self) -> set[int]:
        return self._frames_partitions(self.app.consumer.assignment())

    def _frames_partitions(self, tps: Iterable[Any]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == self.settings.topics.frames}

    async def _on_revoked(self, app: Any, revoked: Iterable[Any], **_: Any) -> None:
        """Before the group reassigns anything: write the state of every frame taken, and flush it.

        With faust's eager rebalancing every partition is revoked, and the new owner of one may
        start reading its changelog as soon as this returns.
        """
        if not self._frames_partitions(revoked):
            return
        if self._in_flight is not None:
            await asyncio.shield(self._in_flight)
        for session_id in list(self._unpersisted):
            await self._uninterrupted(self._persist(session_id))
        await self.app.producer.flush()

    async def _on_assigned(self, app: Any, assigned: Iterable[Any], **_: Any) -> None:
        """Drop the sessions of partitions gone to another windower; catch up on and restore new ones.

        A partition that comes back later is read from its changelog again (another windower wrote
        it meanwhile), and its sessions are restored even without a frame, so idle ones still expire.
        """
        partitions = self._frames_partitions(assigned)
        gone = self._assigned - partitions
        self._assigned = partitions
        if gone:
            dropped = self.windower.forget_partitions(gone)
            self._caught_up -= gone
            log.info("partitions %s revoked: %d sessions left to their new owner", sorted(gone), len(dropped))
        if partitions - self._caught_up:
            self._restore_all()


def run_windower(settings: Settings) -> int:
    serve_metrics(settings, SERVICE)
    control = ControlFollower(settings).start()
    try:
        return WindowerService(settings, control).run()
    finally:
        control.close()
