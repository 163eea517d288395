"""``hopline windower``: the faust agent that turns the frames topic into the hops topic.

The rules live in :mod:`pipeline.windowing` (pure); this module is the wiring: decode the
``AudioFrame`` contract, feed :class:`~pipeline.windowing.Windower`, publish each hop
(``Hop`` contract, key = session id, ``published_ts_ms`` stamped just before the send),
dead-letter invalid frames to ``<frames>.dlq`` with the reason and the original bytes,
follow ``window_secs`` from the control topic, expire idle sessions every second.

State that survives a restart: faust tables with changelog topics, chosen over rebuilding
from the frames topic because the embedded broker cannot look offsets up by time and a
rebuild would have to re-read an unknown stretch of every partition. Writing a session's
whole 1.28 s window on every frame would cost ~2 MB/s per session, so the state is split:

* table ``sessions``: key = session id, value = :meth:`SessionWindow.snapshot` (JSON,
  ~450 bytes: sequence position, hop counters, reorder buffer, resampler history);
* table ``audio``: key = ``session\\x1f<seq mod 64>``, value = seq (8 bytes) + that
  frame's 16 kHz PCM16 (640 bytes): a ring of the last 64 frames = one 1.28 s window.

Every frame therefore writes ~1.2 kB to the changelogs: about 60 kB/s per real-time session
(measured: see ``hopline bench windower``, ``changelog_bytes_per_s_per_session``) instead of
~2 MB/s. On restart faust replays the changelogs before the agent consumes, sessions are
rebuilt (:meth:`SessionWindow.restore`) and continue from the committed frame offset: frames
processed after the last commit come again and are recognised as duplicates by seq, so no
hop is lost or repeated after a clean stop (SIGTERM). After a crash a hop whose state write
was lost can be sent again with the same ``hop_seq``; consumers treat (session, hop_seq)
as the hop's identity. Measured restart recovery: see the module's integration test and
the figures in the report (changelog replay grows with the changelog: on Apache Kafka the
compacted topics stay at ~65 records per live session; the embedded broker never compacts).
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from pipeline import contracts
from pipeline.control import ControlFollower
from pipeline.kafka import now_ms
from pipeline.metrics import LATENCY_BUCKETS_S, serve_metrics
from pipeline.settings import Settings
from pipeline.windowing import Frame, Outcome, SessionWindow, Windower

log = logging.getLogger(__name__)

SERVICE = "windower"

FRAMES_IN = Counter("hopline_windower_frames_total", "Frames consumed from the frames topic")
HOPS_OUT = Counter("hopline_windower_hops_total", "Hops published", ["final"])
DEAD_LETTERED = Counter("hopline_windower_dead_lettered_total", "Frames sent to the dead-letter topic")
GAP_FRAMES = Counter("hopline_windower_gap_frames_total", "Missing frames filled with silence")
DUPLICATE_FRAMES = Counter("hopline_windower_duplicate_frames_total", "Duplicate frames dropped")
LATE_FRAMES = Counter("hopline_windower_late_frames_total", "Frames that came after they were given up")
EXPIRED_SESSIONS = Counter("hopline_windower_expired_sessions_total", "Sessions closed for idleness")
ACTIVE_SESSIONS = Gauge("hopline_windower_sessions", "Sessions in memory (open or recently ended)")
WINDOWING_SECONDS = Histogram(
    "hopline_windower_windowing_seconds",
    "Time to window one frame (decode, cut, persist)",
    buckets=LATENCY_BUCKETS_S,
)
HOP_EMIT_SECONDS = Histogram(
    "hopline_windower_hop_emit_seconds", "Hop ready (end of last frame) -> published", buckets=LATENCY_BUCKETS_S
)

SEQ = struct.Struct("<q")


def session_key(session_id: str) -> bytes:
    return session_id.encode()


def slot_key(session_id: str, seq: int, ring_frames: int) -> bytes:
    return f"{session_id}\x1f{seq % ring_frames}".encode()


class WindowerService:
    """The faust app, its tables and agent, around one :class:`Windower`."""

    def __init__(self, settings: Settings, control: ControlFollower | None = None) -> None:
        from pipeline.faust_app import AgentDeadLetters, make_app, raw_topic

        self.settings = settings
        self.control = control
        self.windower = Windower(settings.audio)
        self.ring_frames = self.windower.shape.ring_frames
        self.app = make_app(settings, f"{settings.app_id}-windower")
        self.frames = raw_topic(self.app, settings.topics.frames)
        self.hops = raw_topic(self.app, settings.topics.hops)
        self.dead_letters = AgentDeadLetters(self.app, settings, SERVICE)
        table_options: dict[str, Any] = {
            "default": None,
            "partitions": settings.topics.partitions,
            "key_type": bytes,
            "value_type": bytes,
        }
        self.session_table = self.app.Table("sessions", **table_options)
        self.audio_table = self.app.Table("audio", **table_options)
        self.app.agent(self.frames, name="window-frames")(self._consume)
        self.app.timer(1.0)(self._expire_idle)

    def run(self) -> int:
        from pipeline.faust_app import run_app

        return run_app(self.app, SERVICE, on_ready=self._restore_all)

    # -- knobs ----------------------------------------------------------------------------

    def _knobs(self) -> tuple[float, int]:
        if self.control is None:
            return self.settings.audio.window_secs, 0
        knobs = self.control.knobs
        return knobs.window_secs, knobs.level

    # -- the agent ------------------------------------------------------------------------

    async def _consume(self, stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            FRAMES_IN.inc()
            try:
                record = contracts.FRAME.decode(event.value)
            except contracts.ContractError as exc:
                DEAD_LETTERED.inc()
                await self.dead_letters.publish(event, str(exc), exc)
                continue
            frame = Frame.from_record(record)
            if frame.session_id not in self.windower.sessions:
                self._restore(frame.session_id)
            window_secs, level = self._knobs()
            outcome = self.windower.accept(frame, window_secs, level, partition=event.message.partition)
            if outcome.rejection is not None:
                DEAD_LETTERED.inc()
                await self.dead_letters.publish(event, outcome.rejection.reason)
                continue
            await self._publish(outcome)
            self._persist(frame.session_id, outcome)
            WINDOWING_SECONDS.observe(time.perf_counter() - started)

    async def _publish(self, outcome: Outcome) -> None:
        GAP_FRAMES.inc(outcome.gaps)
        DUPLICATE_FRAMES.inc(int(outcome.duplicate))
        LATE_FRAMES.inc(int(outcome.late))
        for hop in outcome.hops:
            published = now_ms()
            await self.hops.send(key=session_key(hop.session_id), value=contracts.HOP.encode(hop.to_record(published)))
            HOPS_OUT.labels(final=str(hop.is_final).lower()).inc()
            HOP_EMIT_SECONDS.observe(max(published - hop.ready_ts_ms, 0.0) / 1000.0)

    def _persist(self, session_id: str, outcome: Outcome) -> None:
        """Inside the agent: table writes go to the changelog partition of the current frame."""
        for seq, pcm in outcome.appended:
            self.audio_table[slot_key(session_id, seq, self.ring_frames)] = SEQ.pack(seq) + pcm
        session = self.windower.sessions.get(session_id)
        if session is not None and (outcome.appended or outcome.hops or outcome.duplicate or outcome.late):
            self.session_table[session_key(session_id)] = session.snapshot()
        ACTIVE_SESSIONS.set(len(self.windower.sessions))

    # -- restart --------------------------------------------------------------------------

    def _restore(self, session_id: str) -> SessionWindow | None:
        snapshot = self.session_table.get(session_key(session_id))
        if not snapshot:
            return None
        frames: dict[int, bytes] = {}
        for seq in SessionWindow.frames_needed(snapshot, self.windower.shape):
            slot = self.audio_table.get(slot_key(session_id, seq, self.ring_frames))
            if slot and SEQ.unpack_from(slot)[0] == seq:
                frames[seq] = slot[SEQ.size :]
        session = SessionWindow.restore(session_id, snapshot, frames, self.windower.shape)
        self.windower.sessions[session_id] = session
        log.info("restored session %s at seq %d, hop %d", session_id, session.next_seq, session.hop_seq)
        return session

    def _restore_all(self) -> None:
        for key in list(self.session_table.keys()):
            session_id = key.decode() if isinstance(key, bytes) else str(key)
            if session_id not in self.windower.sessions:
                self._restore(session_id)
        ACTIVE_SESSIONS.set(len(self.windower.sessions))

    # -- idle expiry ----------------------------------------------------------------------

    async def _expire_idle(self) -> None:
        window_secs, level = self._knobs()
        for session, outcome in self.windower.expire_idle(window_secs, level):
            EXPIRED_SESSIONS.inc(0 if session.end_seq is not None else 1)
            await self._publish(outcome)
            self._forget(session)
        ACTIVE_SESSIONS.set(len(self.windower.sessions))

    def _forget(self, session: SessionWindow) -> None:
        """Outside the agent: delete the session's state on its own changelog partition."""
        keys = [(self.session_table, session_key(session.session_id))]
        keys += [
            (self.audio_table, slot_key(session.session_id, slot, self.ring_frames)) for slot in range(self.ring_frames)
        ]
        for table, key in keys:
            if table.data.pop(key, None) is not None:
                table.send_changelog(session.partition, key, None)


def run_windower(settings: Settings) -> int:
    serve_metrics(settings, SERVICE)
    control = ControlFollower(settings).start()
    try:
        return WindowerService(settings, control).run()
    finally:
        control.close()
