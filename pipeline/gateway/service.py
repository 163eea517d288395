"""``hopline gateway``: audio over WebSockets -> 20 ms frames on the frames topic; transcripts back.

One ``websockets`` asyncio server, one coroutine per socket:

* ``/twilio``: Twilio Media Streams, session ``<tenant>/<callSid>``;
* ``/v1/stream``: a JSON start message then binary audio, session ``<tenant>/<uuid>`` (told to the
  client first), the session's transcripts on the same socket;
* ``/v1/transcripts/{session}``: a client of the session's tenant follows its transcripts;
* ``/healthz`` and ``/metrics``: plain HTTP, answered in ``process_request``;
* ``/``: the browser page (``static/index.html``: microphone -> ``/v1/stream``, live transcript).

What a socket receives goes through :mod:`pipeline.gateway.policy`; frames go out through the
ingress :class:`~pipeline.ingress.service.AudioProducer` (its producer settings, key = session id).
Whatever ends a session (its end or stop message, a refusal, the idle timeout, a dropped socket,
SIGTERM) sends its end-of-stream frame, once, so the assembler closes it with a final. A refusal
closes only its own socket. One thread reads every partition of the transcripts topic from its
end and hands the transcripts of this replica's sessions to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from confluent_kafka import TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.control.follower import ControlFollower
from pipeline.errors import CliError
from pipeline.gateway.policy import (
    GOING_AWAY,
    NORMAL,
    POLICY,
    TRY_AGAIN,
    TWILIO_FORMAT,
    Capacity,
    Frame,
    RealtimeLimiter,
    Reframer,
    Refusal,
    StreamFormat,
    TokenBook,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
    check_admission,
    expect_end,
    parse_stream_start,
    parse_twilio,
    presented_token,
    session_event,
    session_id,
    subscription_session,
    transcript_message,
)
from pipeline.ingress.service import AudioProducer, AudioStream
from pipeline.kafka.dead_letters import ReaderDeadLetters
from pipeline.kafka.produce_stats import PRODUCE_STATS
from pipeline.kafka.readers import open_reader, poll_record
from pipeline.ready import announce_ready, announce_stats
from pipeline.settings import GatewaySettings, Settings

log = logging.getLogger(__name__)

SERVICE = "gateway"
#: The browser client, shipped as package data; opened as ``/?token=<token>``.
PAGE = Path(__file__).resolve().parent / "static" / "index.html"
SHUTDOWN_REASON = "gateway shutting down"
#: ``send_frame`` takes a stream for its session id and format only; live audio has no samples up front.
NO_SAMPLES = np.zeros(0, dtype=np.int16)

CONNECTIONS = Counter("hopline_gateway_connections_total", "WebSocket connections accepted, by endpoint.", ["endpoint"])
OPEN_CONNECTIONS = Gauge("hopline_gateway_open_connections", "WebSocket connections open, by endpoint.", ["endpoint"])
SESSIONS = Counter("hopline_gateway_sessions_total", "Sessions started, by protocol.", ["protocol"])
LIVE_SESSIONS = Gauge("hopline_gateway_live_sessions", "Sessions streaming now, by protocol.", ["protocol"])
FRAMES = Counter("hopline_gateway_frames_total", "Frames sent to Kafka (end-of-stream included).", ["protocol"])
AUDIO_BYTES = Counter("hopline_gateway_audio_bytes_total", "Audio bytes received, by protocol.", ["protocol"])
CLOSES = Counter("hopline_gateway_closes_total", "WebSockets closed, by close code (1006: dropped).", ["code"])
REFUSALS = Counter("hopline_gateway_refusals_total", "Sockets the gateway closed by a rule, by reason.", ["reason"])
TRANSCRIPTS_SENT = Counter("hopline_gateway_transcript_messages_total", "Transcript messages sent.", ["kind"])
DELIVERY_FAILURES = Counter("hopline_gateway_frame_delivery_failures_total", "Frames Kafka did not acknowledge.")


def load_tokens(gateway: GatewaySettings) -> TokenBook:
    """``tokens`` with ``tokens_file`` (a JSON object of tenant -> token) merged over them."""
    tokens = dict(gateway.tokens)
    if gateway.tokens_file is not None:
        try:
            loaded = json.loads(Path(gateway.tokens_file).read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"gateway tokens file {gateway.tokens_file}: {exc}") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise CliError(f"gateway tokens file {gateway.tokens_file}: not a JSON object of tenant -> token")
        tokens.update(loaded)
    try:
        return TokenBook(tokens)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def endpoint_of(path: str) -> str | None:
    """Which WebSocket endpoint ``path`` is, or None."""
    if path == "/twilio":
        return "twilio"
    if path == "/v1/stream":
        return "stream"
    if path.startswith("/v1/transcripts/") and len(path) > len("/v1/transcripts/"):
        return "transcripts"
    return None


class Outbox:
    """Transcript messages for one socket, sent in order by their own task; a client that lets
    ``limit`` of them pile up is closed (1008) rather than buffered without end."""

    def __init__(self, connection: ServerConnection, limit: int) -> None:
        self._connection = connection
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(limit)
        self._task = asyncio.create_task(self._send())
        self._closing: asyncio.Task[None] | None = None

    def put(self, kind: str, message: str) -> None:
        try:
            self._queue.put_nowait((kind, message))
        except asyncio.QueueFull:
            if self._closing is None:
                REFUSALS.labels("backlog").inc()
                reason = f"client not reading: {self._queue.maxsize} transcript messages queued"
                self._closing = asyncio.create_task(self._connection.close(POLICY, reason))

    async def _send(self) -> None:
        while True:
            kind, message = await self._queue.get()
            try:
                await self._connection.send(message)
            except ConnectionClosed:
                return
            TRANSCRIPTS_SENT.labels(kind).inc()

    def close(self) -> None:
        self._task.cancel()


class LiveSession:
    """One streaming session: its audio paced, re-framed and sent; ended (end-of-stream frame) once."""

    def __init__(
        self,
        settings: Settings,
        frames: AudioProducer,
        session: str,
        tenant: str,
        protocol: str,
        stream: StreamFormat,
        anchor_ms: float | None = None,
    ) -> None:
        gateway = settings.gateway
        self.session_id = session
        self.tenant = tenant
        self.protocol = protocol
        self.ended = False
        self.sent = 0
        self.last_audio = time.monotonic()
        self._frames = frames
        self._stream = AudioStream(session, NO_SAMPLES, stream.codec, stream.sample_rate)
        self._format = stream
        self._reframer = Reframer(stream, settings.audio.frame_ms, anchor_ms)
        self._limiter = RealtimeLimiter(gateway.max_realtime_factor, gateway.burst_s, time.monotonic)

    def audio(self, data: bytes, offset_ms: float | None = None) -> None:
        """Take one message's audio (ignored once the session has ended, e.g. by shutdown)."""
        if self.ended:
            return
        self._limiter.take(self._format.seconds(data))
        self.last_audio = time.monotonic()
        AUDIO_BYTES.labels(self.protocol).inc(len(data))
        for frame in self._reframer.push(data, now_ms(), offset_ms):
            self._send(frame)

    def end(self, why: str) -> None:
        if self.ended:
            return
        self.ended = True
        for frame in self._reframer.end(now_ms()):
            self._send(frame)
        log.info("session %s ended (%s): %d frames", self.session_id, why, self.sent)

    def _send(self, frame: Frame) -> None:
        self._frames.send_frame(self._stream, frame.seq, frame.payload, frame.capture_ms, frame.end_of_stream)
        self.sent += 1
        FRAMES.labels(self.protocol).inc()


class TranscriptFanout:
    """Every partition of the transcripts topic, read from its end on one thread; the transcripts of
    the sessions :meth:`watch`-ed (this replica's sockets and subscriptions) go to ``deliver`` on the loop,
    and those of them it cannot read to ``transcripts.dlq``."""

    def __init__(
        self, settings: Settings, loop: asyncio.AbstractEventLoop, deliver: Callable[[contracts.Transcript], None]
    ) -> None:
        self._loop = loop
        self._deliver = deliver
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = open_reader(settings, SERVICE, [settings.topics.transcripts])
        self._dead_letters = ReaderDeadLetters(settings, SERVICE)
        # From the end, resolved now rather than when the first fetch starts: whatever is published
        # after the gateway is listening reaches it.
        ends = []
        for tp in self._consumer.assignment():
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            ends.append(TopicPartition(tp.topic, tp.partition, high))
        self._consumer.assign(ends)
        self._thread = threading.Thread(target=self._run, name="gateway-transcripts", daemon=True)

    def start(self) -> TranscriptFanout:
        self._thread.start()
        return self

    def watch(self, session: str) -> None:
        with self._lock:
            self._watched.add(session)

    def unwatch(self, session: str) -> None:
        with self._lock:
            self._watched.discard(session)

    def _wanted(self, key: bytes | None) -> bool:
        with self._lock:
            return key is not None and key.decode(errors="replace") in self._watched

    def _run(self) -> None:
        """Hand each wanted transcript to the event loop as soon as it is fetched.

        ``poll``, not ``consume(n, timeout)``: consume waits for n messages or the whole timeout, which
        held every transcript back by up to 100 ms (measured: egress p50 11 -> ~70 ms).
        """
        while not self._stop.is_set():
            message = poll_record(self._consumer, 0.1, "transcripts topic")
            if message is None or not self._wanted(message.key()):
                continue
            try:
                transcript = contracts.Transcript.decode(message.value())
            except contracts.ContractError as exc:
                self._dead_letters.publish(message, f"unreadable transcript: {exc}", exc)
                continue
            self._loop.call_soon_threadsafe(self._deliver, transcript)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self._consumer.close()
        self._dead_letters.close()


class Gateway:
    """The WebSocket server; :meth:`serve` runs it until ``stop`` is set, then shuts down cleanly."""

    # Kafka clients and the transcripts thread, made by serve(): the reader hands over to its event loop.
    _control: ControlFollower
    _frames: AudioProducer
    _fanout: TranscriptFanout

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._config = settings.gateway
        self._tokens = load_tokens(settings.gateway)
        self._capacity = Capacity(self._config.max_sessions, self._config.max_sessions_per_tenant)
        self._sessions: dict[str, LiveSession] = {}
        self._outboxes: dict[str, set[Outbox]] = {}
        self._open_sockets = 0
        self._failed_seen = 0
        self._page = PAGE.read_text()

    async def serve(self, stop: asyncio.Event, on_listening: Callable[[int], None]) -> None:
        """Listen; ``on_listening(port)`` once accepting; on ``stop``: end every session, flush, close 1001."""
        self._control = ControlFollower(self._settings).start()
        self._frames = AudioProducer(self._settings)
        self._fanout = TranscriptFanout(self._settings, asyncio.get_running_loop(), self._deliver).start()
        try:
            try:
                server = await serve(
                    self._handle,
                    self._config.host,
                    self._config.port,
                    process_request=self._http,
                    max_size=self._config.max_message_bytes,
                )
            except OSError as exc:
                raise CliError(f"gateway cannot listen on {self._config.host}:{self._config.port}: {exc}") from None
            async with server:
                port = next(iter(server.sockets)).getsockname()[1]
                log.info("gateway on ws://%s:%d", self._config.host, port)
                on_listening(port)
                housekeeping = asyncio.create_task(self._housekeeping())
                await stop.wait()
                housekeeping.cancel()
                await self._shutdown(server)
        finally:
            self._fanout.close()
            self._control.close()
            report = self._frames.close()
            DELIVERY_FAILURES.inc(report.failed - self._failed_seen)
            log.info(
                "gateway stopped: frames sent %d, delivered %d, failed %d, pending %d",
                report.sent,
                report.delivered,
                report.failed,
                report.pending,
            )

    async def _shutdown(self, server: Server) -> None:
        server.close(close_connections=False)
        for session in list(self._sessions.values()):
            session.end(SHUTDOWN_REASON)
        pending = await asyncio.to_thread(self._frames.flush)
        if pending:
            log.error("%d frames still undelivered at shutdown", pending)
        closing = [connection.close(GOING_AWAY, SHUTDOWN_REASON) for connection in server.connections]
        await asyncio.gather(*closing, return_exceptions=True)
        await server.wait_closed()

    async def _housekeeping(self) -> None:
        """Serve delivery reports while sessions are quiet (sending does it otherwise) and count failures."""
        while True:
            await asyncio.sleep(0.5)
            self._frames.flush(0)
            failed = self._frames.report.failed
            DELIVERY_FAILURES.inc(failed - self._failed_seen)
            self._failed_seen = failed

    # -- HTTP -----------------------------------------------------------------------------

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            health = {"status": "ok", "sessions": len(self._sessions), "connections": self._open_sockets}
            return _response(connection, json.dumps(health), "application/json")
        if path == "/metrics":
            return _response(connection, generate_latest().decode(), CONTENT_TYPE_LATEST)
        if path == "/":
            return _response(connection, self._page, "text/html; charset=utf-8")
        if endpoint_of(path) is None:
            return connection.respond(404, f"no endpoint {path}: /, /twilio, /v1/stream, /v1/transcripts/{{session}}\n")
        return None

    # -- sockets --------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        target = urlsplit(connection.request.path)
        endpoint = endpoint_of(target.path)
        assert endpoint is not None  # process_request answered any other path with 404
        CONNECTIONS.labels(endpoint).inc()
        OPEN_CONNECTIONS.labels(endpoint).inc()
        self._open_sockets += 1
        code, reason = NORMAL, ""
        try:
            if self._open_sockets > self._config.max_connections:
                limit = self._config.max_connections
                raise Refusal(TRY_AGAIN, f"try again later: gateway at {limit} connections", "connection_limit")
            token = presented_token(connection.request.headers.get("Authorization"), target.query)
            if endpoint == "stream":
                code, reason = await self._stream(connection, token)
            elif endpoint == "twilio":
                code, reason = await self._twilio(connection, token)
            else:
                code, reason = await self._subscription(connection, token, target.path.rpartition("/")[2])
        except Refusal as refusal:
            REFUSALS.labels(refusal.label).inc()
            log.info("%s socket from %s closed %d: %s", endpoint, connection.remote_address, refusal.code, refusal)
            code, reason = refusal.code, refusal.reason
        except ConnectionClosed:
            pass
        finally:
            self._open_sockets -= 1
            OPEN_CONNECTIONS.labels(endpoint).dec()
        await connection.close(code, reason)
        CLOSES.labels(str(connection.close_code)).inc()

    async def _stream(self, connection: ServerConnection, token: str | None) -> tuple[int, str]:
        tenant = self._tokens.tenant_of(token)
        deadline = time.monotonic() + self._config.start_timeout_s
        stream = parse_stream_start(await _receive_by(connection, deadline, "no start message"))
        session = self._open_session(tenant, session_id(tenant, str(uuid.uuid4())), "stream", stream)
        outbox = self._follow(session.session_id, connection)
        try:
            await connection.send(session_event("session", session.session_id))
            while True:
                message = await self._receive_audio(connection, session)
                if isinstance(message, bytes):
                    session.audio(message)
                    continue
                expect_end(message)
                session.end("end message")
                break
            # The last transcripts come after the end-of-stream frame; the client closes when it has them.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.wait_closed(), self._config.end_linger_s)
            return NORMAL, "end of stream"
        finally:
            self._unfollow(session.session_id, outbox)
            self._close_session(session, "socket closed")

    async def _twilio(self, connection: ServerConnection, token: str | None) -> tuple[int, str]:
        # Twilio cannot send headers: its token usually comes in start.customParameters.
        tenant = self._tokens.tenant_of(token) if token is not None else None
        start = await _twilio_start(connection, time.monotonic() + self._config.start_timeout_s)
        start_ms = now_ms()
        if tenant is None:
            tenant = self._tokens.tenant_of(start.custom_parameters.get("token"))
        session = self._open_session(tenant, session_id(tenant, start.call_sid), "twilio", TWILIO_FORMAT, start_ms)
        log.info("session %s: Twilio stream %s", session.session_id, start.stream_sid)
        try:
            while True:
                event = parse_twilio(await self._receive_audio(connection, session))
                if isinstance(event, TwilioMedia):
                    if event.track == "inbound":
                        session.audio(event.payload, event.timestamp_ms)
                elif isinstance(event, TwilioStop):
                    session.end("stop message")
                    return NORMAL, "stream stopped"
                elif isinstance(event, TwilioStart):
                    raise Refusal(POLICY, "a second start message", "protocol")
        finally:
            self._close_session(session, "socket closed")

    async def _subscription(self, connection: ServerConnection, token: str | None, quoted: str) -> tuple[int, str]:
        session = subscription_session(self._tokens.tenant_of(token), quoted)
        outbox = self._follow(session, connection)
        try:
            await connection.send(session_event("subscribed", session))
            async for _message in connection:
                pass  # nothing to say to a subscription: the socket stays until the client closes it
        finally:
            self._unfollow(session, outbox)
        return NORMAL, ""

    async def _receive_audio(self, connection: ServerConnection, session: LiveSession) -> str | bytes:
        """The next message; ends the session (1000) when no audio came for ``idle_timeout_s``."""
        idle_s = self._config.idle_timeout_s
        deadline = session.last_audio + idle_s
        return await _receive_by(connection, deadline, f"idle: no audio for {idle_s:g} s", NORMAL, "idle")

    # -- sessions and transcript routes ---------------------------------------------------

    def _open_session(
        self, tenant: str, session: str, protocol: str, stream: StreamFormat, anchor_ms: float | None = None
    ) -> LiveSession:
        check_admission(self._control.knobs, self._control.reason)
        if session in self._sessions:
            raise Refusal(POLICY, f"session {session} is already streaming", "duplicate")
        self._capacity.open(tenant)
        live = LiveSession(self._settings, self._frames, session, tenant, protocol, stream, anchor_ms)
        self._sessions[session] = live
        SESSIONS.labels(protocol).inc()
        LIVE_SESSIONS.labels(protocol).inc()
        log.info("session %s started (%s, %s at %d Hz)", session, protocol, stream.codec, stream.sample_rate)
        return live

    def _close_session(self, session: LiveSession, why: str) -> None:
        session.end(why)
        del self._sessions[session.session_id]
        self._capacity.close(session.tenant)
        LIVE_SESSIONS.labels(session.protocol).dec()

    def _follow(self, session: str, connection: ServerConnection) -> Outbox:
        outbox = Outbox(connection, self._config.transcript_backlog)
        self._outboxes.setdefault(session, set()).add(outbox)
        self._fanout.watch(session)
        return outbox

    def _unfollow(self, session: str, outbox: Outbox) -> None:
        outbox.close()
        followers = self._outboxes[session]
        followers.discard(outbox)
        if not followers:
            del self._outboxes[session]
            self._fanout.unwatch(session)

    def _deliver(self, transcript: contracts.Transcript) -> None:
        followers = self._outboxes.get(transcript.session_id, ())
        if followers:
            message = transcript_message(transcript)
            for outbox in followers:
                outbox.put(transcript.kind, message)


async def _receive_by(
    connection: ServerConnection,
    deadline: float,
    late: str,
    code: int = POLICY,
    label: str = "timeout",
) -> str | bytes:
    """The next message if it comes before ``deadline`` (monotonic s), else a :class:`Refusal`."""
    try:
        return await asyncio.wait_for(connection.recv(), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise Refusal(code, late, label) from None


async def _twilio_start(connection: ServerConnection, deadline: float) -> TwilioStart:
    """Twilio's ``start`` (after its ``connected``): audio or a stop before it is a protocol error."""
    while True:
        event = parse_twilio(await _receive_by(connection, deadline, "no start message"))
        if isinstance(event, TwilioStart):
            return event
        if isinstance(event, TwilioMedia | TwilioStop):
            raise Refusal(POLICY, "media or stop before start", "protocol")


def _response(connection: ServerConnection, body: str, content_type: str) -> Response:
    response = connection.respond(200, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


def run(settings: Settings) -> int:
    """Serve until SIGTERM or Ctrl-C; prints the ready line once listening."""
    gateway = Gateway(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await gateway.serve(stop, lambda port: announce_ready(SERVICE))

    try:
        asyncio.run(main())
    finally:
        announce_stats(SERVICE, PRODUCE_STATS.summary())
    return 0
