"""A small asyncio client of ``hopline gateway``: streams sessions in real time, keeps what comes back.

The demo's gateway mode (and through it ``hopline bench gateway``) streams its sessions with it, so
their figures are what a real client sees:

* ``/v1/stream`` sessions get their transcripts on their own socket;
* a Twilio call goes to ``/twilio`` exactly as Twilio sends it (``connected``, ``start`` with the token
  in ``customParameters``, 20 ms ``media`` chunks, ``stop``), and is followed on
  ``/v1/transcripts/<tenant>%2F<callSid>``, subscribed before the call starts, as a Twilio app would.

Audio leaves like a live source's: chunk k (20 ms) is sent once its audio has been "captured", k+1
chunk lengths after the stream's start, so the audio at t s exists at the client at ``started_ms +
1000 t``; every transcript message is kept with its receive time on the same clock (epoch ms).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from pipeline import audio
from pipeline.clock import now_ms
from pipeline.gateway.policy import TRY_AGAIN, TWILIO_FORMAT, session_id

STREAM: Final = "stream"
TWILIO: Final = "twilio"
CHUNK_MS: Final = 20


@dataclass(frozen=True)
class ClientSession:
    """One session to stream: ``payload`` is the audio already in ``codec`` at ``sample_rate``.

    ``name`` is the caller's own; a Twilio call uses it as its callSid (session ``<tenant>/<name>``).
    """

    name: str
    protocol: str
    payload: bytes
    codec: str
    sample_rate: int
    #: Seconds after the run starts that this session connects (a burst joining later).
    start_offset_s: float = 0.0


@dataclass(frozen=True)
class TranscriptMessage:
    """A partial or final as the client got it."""

    received_ms: float
    event: str
    session_id: str
    segment: int
    text: str
    hop_seq: int
    first_capture_ts_ms: float
    published_ts_ms: float


def parse_transcript(message: str | bytes, received_ms: float) -> TranscriptMessage | None:
    """A ``partial``/``final`` message of the gateway, or None for anything else (``session``, ``subscribed``)."""
    data = json.loads(message)
    if not isinstance(data, dict) or data.get("event") not in ("partial", "final"):
        return None
    return TranscriptMessage(
        received_ms=received_ms,
        event=str(data["event"]),
        session_id=str(data["session_id"]),
        segment=int(data["segment"]),
        text=str(data["text"]),
        hop_seq=int(data["hop_seq"]),
        first_capture_ts_ms=float(data["first_capture_ts_ms"]),
        published_ts_ms=float(data["published_ts_ms"]),
    )


@dataclass
class StreamResult:
    """What one session's client saw: its session id, stream start, transcripts, and how it ended."""

    name: str
    session_id: str | None = None
    #: Epoch ms at which the first sample counts as captured (see the module docstring); None before audio.
    started_ms: float | None = None
    messages: list[TranscriptMessage] = field(default_factory=list)
    #: The close code and reason the gateway sent, when it closed a socket first.
    close_code: int | None = None
    close_reason: str = ""
    error: str | None = None

    @property
    def refused(self) -> bool:
        """Closed with 1013 (``try again later``): admission, or a sessions/connections limit."""
        return self.close_code == TRY_AGAIN

    def transcript(self) -> str:
        """The final segments in order; the first final of a segment counts (a repeat after a restart does not)."""
        finals: dict[int, str] = {}
        for message in self.messages:
            if message.event == "final":
                finals.setdefault(message.segment, message.text)
        return " ".join(text for _, text in sorted(finals.items()) if text)


def chunks(payload: bytes, codec: str, sample_rate: int, chunk_ms: int = CHUNK_MS) -> list[bytes]:
    """``payload`` cut into ``chunk_ms`` chunks (the last one may be shorter)."""
    size = audio.frame_bytes(codec, sample_rate, chunk_ms)
    return [payload[at : at + size] for at in range(0, len(payload), size)]


def settled(messages: Sequence[TranscriptMessage], ended_ms: float, now: float, quiet_s: float) -> bool:
    """After the end of the audio: the newest message is a final and nothing came for ``quiet_s``.

    The last speech is followed by its endpoint's final; a partial as the newest message means words are
    still open, so the client keeps listening.
    """
    if not messages or messages[-1].event != "final":
        return False
    return now - max(ended_ms, messages[-1].received_ms) >= quiet_s * 1000.0


def twilio_message(event: str, stream_sid: str, sequence: int, **body: Any) -> str:
    return json.dumps({"event": event, "sequenceNumber": str(sequence), "streamSid": stream_sid, **body})


def twilio_start(call_sid: str, stream_sid: str, token: str) -> str:
    """Twilio's ``start``: mu-law 8 kHz mono, inbound track, the tenant token as a custom parameter."""
    start = {
        "accountSid": "AC" + "0" * 32,
        "callSid": call_sid,
        "streamSid": stream_sid,
        "tracks": ["inbound"],
        "customParameters": {"token": token},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": TWILIO_FORMAT.sample_rate, "channels": 1},
    }
    return twilio_message("start", stream_sid, 1, start=start)


def twilio_media(stream_sid: str, index: int, chunk: bytes, chunk_ms: int = CHUNK_MS) -> str:
    """Media chunk ``index`` (from 0): its stream timestamp in ms, as Twilio writes it (a string)."""
    media = {
        "track": "inbound",
        "chunk": str(index + 1),
        "timestamp": str(index * chunk_ms),
        "payload": base64.b64encode(chunk).decode(),
    }
    return twilio_message("media", stream_sid, index + 2, media=media)


class GatewayClient:
    """Streams :class:`ClientSession` s to the gateway at ``url`` (``ws://host:port``) as ``tenant``.

    After the audio, a session's client waits until its transcripts have :func:`settled` (at most
    ``linger_s``), then closes. :attr:`results` grows as sessions start, so another thread may
    follow progress.
    """

    def __init__(
        self, url: str, tenant: str, token: str, quiet_s: float = 1.5, linger_s: float = 15.0, timeout_s: float = 10.0
    ) -> None:
        self._url = url.rstrip("/")
        self._tenant = tenant
        self._token = token
        self._quiet_s = quiet_s
        self._linger_s = linger_s
        self._timeout_s = timeout_s
        self.results: list[StreamResult] = []

    def run(self, sessions: Sequence[ClientSession], stop: threading.Event) -> list[StreamResult]:
        """Stream every session concurrently (each from its ``start_offset_s``); ``stop`` ends them early."""
        return asyncio.run(self._run(sessions, stop))

    async def _run(self, sessions: Sequence[ClientSession], stop: threading.Event) -> list[StreamResult]:
        return list(await asyncio.gather(*(self._session(session, stop) for session in sessions)))

    async def _session(self, session: ClientSession, stop: threading.Event) -> StreamResult:
        await asyncio.sleep(session.start_offset_s)
        result = StreamResult(session.name)
        self.results.append(result)
        try:
            if session.protocol == TWILIO:
                await self._twilio(session, result, stop)
            else:
                await self._stream(session, result, stop)
        except ConnectionClosed as closed:
            if closed.rcvd is not None:
                result.close_code, result.close_reason = closed.rcvd.code, closed.rcvd.reason
            if not result.refused:
                result.error = f"{session.name}: socket closed {closed}"
        except (OSError, InvalidHandshake, TimeoutError, ValueError) as exc:
            result.error = f"{session.name}: {type(exc).__name__} {exc}"
        return result

    async def _stream(self, session: ClientSession, result: StreamResult, stop: threading.Event) -> None:
        async with connect(
            f"{self._url}/v1/stream", additional_headers=self._auth(), open_timeout=self._timeout_s
        ) as ws:
            await ws.send(json.dumps({"codec": session.codec, "sample_rate": session.sample_rate}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), self._timeout_s))
            if reply.get("event") != "session":
                raise ValueError(f"expected the session event, got {reply}")
            result.session_id = str(reply["session_id"])
            receiver = asyncio.create_task(_receive(ws, result))
            await self._paced(session, result, stop, lambda index, chunk: ws.send(chunk))
            await ws.send(json.dumps({"event": "end"}))
            await self._settle(result, receiver)

    async def _twilio(self, session: ClientSession, result: StreamResult, stop: threading.Event) -> None:
        result.session_id = session_id(self._tenant, session.name)
        follow = f"{self._url}/v1/transcripts/{quote(result.session_id, safe='')}"
        async with connect(follow, additional_headers=self._auth(), open_timeout=self._timeout_s) as subscriber:
            reply = json.loads(await asyncio.wait_for(subscriber.recv(), self._timeout_s))
            if reply.get("event") != "subscribed":
                raise ValueError(f"expected the subscribed event, got {reply}")
            receiver = asyncio.create_task(_receive(subscriber, result))
            stream_sid = "MZ" + session.name
            async with connect(f"{self._url}/twilio", open_timeout=self._timeout_s) as call:
                await call.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                await call.send(twilio_start(session.name, stream_sid, self._token))
                sent = await self._paced(
                    session, result, stop, lambda index, chunk: call.send(twilio_media(stream_sid, index, chunk))
                )
                await call.send(twilio_message("stop", stream_sid, sent + 2, stop={"callSid": session.name}))
                await asyncio.wait_for(call.wait_closed(), self._timeout_s)
            await self._settle(result, receiver)

    async def _paced(
        self,
        session: ClientSession,
        result: StreamResult,
        stop: threading.Event,
        send: Callable[[int, bytes], Awaitable[None]],
    ) -> int:
        """Send the session's chunks in real time; returns how many were sent."""
        chunk_s = CHUNK_MS / 1000.0
        started = time.monotonic()
        result.started_ms = now_ms()
        sent = 0
        for index, chunk in enumerate(chunks(session.payload, session.codec, session.sample_rate)):
            if stop.is_set():
                break
            delay = started + (index + 1) * chunk_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await send(index, chunk)
            sent += 1
        return sent

    async def _settle(self, result: StreamResult, receiver: asyncio.Task[None]) -> None:
        ended = now_ms()
        deadline = time.monotonic() + self._linger_s
        while not receiver.done() and time.monotonic() < deadline:
            if settled(result.messages, ended, now_ms(), self._quiet_s):
                break
            await asyncio.sleep(0.05)
        receiver.cancel()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}


async def _receive(ws: ClientConnection, result: StreamResult) -> None:
    """Keep every transcript message of the socket, stamped when it arrived, until it closes."""
    try:
        async for message in ws:
            transcript = parse_transcript(message, now_ms())
            if transcript is not None:
                result.messages.append(transcript)
    except ConnectionClosed as closed:
        if closed.rcvd is not None:
            result.close_code, result.close_reason = closed.rcvd.code, closed.rcvd.reason
