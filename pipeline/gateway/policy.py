"""The gateway's rules, pure: messages, tokens, re-framing, pacing and capacity; no socket, no Kafka.

The service (``pipeline.gateway.service``) hands this module what one socket received and does what
it answers: frames to send, or a :class:`Refusal` (a WebSocket close code, its reason and a metric
label) that ends only that socket. Times come in as arguments (receive times, wall-clock ms) or
through an injected clock (the rate limiter's, seconds), so every rule is tested without a network.

* Protocols: :func:`parse_stream_start` / :func:`expect_end` (``/v1/stream``) and
  :func:`parse_twilio` (Twilio Media Streams as Twilio sends them: every field it documents as a
  number may come as a string).
* Tenancy: :class:`TokenBook` maps a presented token to its tenant, comparing every token in
  constant time; session ids are ``<tenant>/<id>`` and :func:`subscription_session` never names
  another tenant's.
* :class:`Reframer`: chunks of any size -> exact 20 ms frames numbered from 0, the tail padded with
  the codec's silence, then the end-of-stream frame; each stamped with a capture time that is
  never later than the gateway received its audio.
* Limits: :class:`RealtimeLimiter` (audio faster than N x real time), :class:`Capacity`
  (sessions per tenant and per replica), :func:`check_admission` (the controller's level 5).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import numpy as np

from pipeline import audio, contracts
from pipeline.clock import Clock
from pipeline.control.ladder import Knobs, admission_refusal

NORMAL: Final = 1000
GOING_AWAY: Final = 1001
UNSUPPORTED: Final = 1003
POLICY: Final = 1008
TRY_AGAIN: Final = 1013

#: A WebSocket close reason is at most 123 bytes of UTF-8.
MAX_REASON_BYTES: Final = 123
#: The part of a session id after ``<tenant>/``: a Twilio CallSid, a uuid, an app's own call id.
SESSION_PART: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")


class Refusal(Exception):
    """Why one socket is closed: the close code, the reason sent with it, and the metric label."""

    def __init__(self, code: int, reason: str, label: str) -> None:
        self.code = code
        self.reason = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
        self.label = label
        super().__init__(self.reason)


# -- tenancy --------------------------------------------------------------------------------


def presented_token(authorization: str | None, query: str) -> str | None:
    """The token a client presents at the handshake: ``Authorization: Bearer <token>``, else ``?token=``."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    tokens = parse_qs(query).get("token")
    return tokens[0] if tokens else None


class TokenBook:
    """Tenant -> token. A presented token is compared with every tenant's (``hmac.compare_digest``, no
    early exit), so the time taken tells nothing about which tenant, or how much of a token, matched."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        if not tokens:
            raise ValueError("no tenant tokens: set HOPLINE_GATEWAY__TOKENS or HOPLINE_GATEWAY__TOKENS_FILE")
        for tenant, token in tokens.items():
            if not SESSION_PART.fullmatch(tenant):
                raise ValueError(f"tenant name {tenant!r}: 1-128 of A-Z a-z 0-9 . _ - (it starts every session id)")
            if not token:
                raise ValueError(f"tenant {tenant}: empty token")
        shared = [token for token, count in Counter(tokens.values()).items() if count > 1]
        if shared:
            raise ValueError("two tenants share a token: a token must name one tenant")
        self._tokens = {tenant: token.encode() for tenant, token in tokens.items()}

    def tenant_of(self, token: str | None) -> str:
        """The tenant ``token`` belongs to; a :class:`Refusal` (1008) when it is missing or no tenant's."""
        if not token:
            raise Refusal(POLICY, "missing token (Authorization: Bearer, ?token= or Twilio customParameters)", "auth")
        presented = token.encode()
        found = None
        for tenant, expected in self._tokens.items():
            if hmac.compare_digest(presented, expected):
                found = tenant
        if found is None:
            raise Refusal(POLICY, "invalid token", "auth")
        return found


def session_id(tenant: str, local_id: str) -> str:
    """``<tenant>/<local_id>``: the tenant is part of the key, so two tenants' call ids never collide."""
    return f"{tenant}/{local_id}"


def subscription_session(tenant: str, quoted: str) -> str:
    """The session ``/v1/transcripts/{quoted}`` names: ``<tenant>/<id>`` URL-encoded, of the caller's tenant only."""
    owner, slash, local_id = unquote(quoted).partition("/")
    if not slash or not SESSION_PART.fullmatch(local_id):
        raise Refusal(POLICY, "name the session as /v1/transcripts/<tenant>%2F<id>", "protocol")
    if owner != tenant:
        raise Refusal(POLICY, "session belongs to another tenant", "auth")
    return session_id(tenant, local_id)


def check_admission(knobs: Knobs, reason: str) -> None:
    """A :class:`Refusal` (1013) while the controller refuses new sessions; running sessions go on."""
    refusal = admission_refusal(knobs, reason)
    if refusal is not None:
        raise Refusal(TRY_AGAIN, refusal, "admission")


# -- protocols ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamFormat:
    codec: str
    sample_rate: int

    @property
    def bytes_per_s(self) -> int:
        return self.sample_rate * audio.bytes_per_sample(self.codec)

    def seconds(self, data: bytes) -> float:
        return len(data) / self.bytes_per_s


#: What Twilio Media Streams carry: G.711 mu-law, 8 kHz, mono.
TWILIO_FORMAT: Final = StreamFormat("mulaw", 8000)


def _json_object(message: str | bytes, what: str) -> dict[str, Any]:
    if not isinstance(message, str):
        raise Refusal(UNSUPPORTED, f"binary message where the {what} (JSON text) was due", "protocol")
    try:
        value = json.loads(message)
    except ValueError as exc:
        raise Refusal(POLICY, f"malformed JSON: {exc}", "protocol") from None
    if not isinstance(value, dict):
        raise Refusal(POLICY, f"the {what} must be a JSON object", "protocol")
    return value


def parse_stream_start(message: str | bytes) -> StreamFormat:
    """``/v1/stream``'s first message, ``{"codec": "pcm16"|"mulaw"|"alaw", "sample_rate": 8000|16000}``."""
    start = _json_object(message, "start message")
    codec, rate = start.get("codec"), start.get("sample_rate")
    if not isinstance(codec, str) or not isinstance(rate, int) or isinstance(rate, bool):
        raise Refusal(POLICY, 'start with {"codec": "pcm16"|"mulaw"|"alaw", "sample_rate": 8000|16000}', "protocol")
    problem = audio.format_error(codec, rate)
    if problem is not None:
        raise Refusal(UNSUPPORTED, problem, "unsupported")
    return StreamFormat(codec, rate)


def expect_end(message: str) -> None:
    """The only text message ``/v1/stream`` takes after its start: ``{"event": "end"}``."""
    event = _json_object(message, "message").get("event")
    if event != "end":
        raise Refusal(POLICY, f"unknown event {str(event)[:40]!r} (only 'end' after the start)", "protocol")


def session_event(event: str, session: str) -> str:
    """The gateway's first reply: ``session`` (the id it minted, on ``/v1/stream``) or ``subscribed``."""
    return json.dumps({"event": event, "session_id": session})


def transcript_message(transcript: contracts.Transcript) -> str:
    """A Transcript record as the JSON text message clients receive; ``event`` is ``partial`` or ``final``."""
    record = transcript.to_avro()
    return json.dumps({"event": record.pop("kind"), **record}, separators=(",", ":"))


@dataclass(frozen=True)
class TwilioStart:
    stream_sid: str
    call_sid: str
    custom_parameters: dict[str, str]


@dataclass(frozen=True)
class TwilioMedia:
    track: str
    #: ms from the start of the stream to the chunk's first sample.
    timestamp_ms: int
    payload: bytes


@dataclass(frozen=True)
class TwilioStop:
    pass


@dataclass(frozen=True)
class TwilioNotice:
    """``connected``, ``mark``, ``dtmf``: nothing for the pipeline."""

    event: str


TwilioEvent = TwilioStart | TwilioMedia | TwilioStop | TwilioNotice


def _object(data: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise Refusal(POLICY, f"{where} without a {name!r} object", "protocol")
    return value


def _text(data: Mapping[str, Any], name: str, where: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise Refusal(POLICY, f"{where}.{name} missing or not a string", "protocol")
    return value


def _count(data: Mapping[str, Any], name: str, where: str) -> int:
    value = data.get(name)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise Refusal(POLICY, f"{where}.{name} missing or not a count", "protocol")


def parse_twilio(message: str | bytes) -> TwilioEvent:
    """One Twilio Media Streams message; a :class:`Refusal` for anything Twilio does not send."""
    data = _json_object(message, "Twilio message")
    event = data.get("event")
    if not isinstance(event, str):
        raise Refusal(POLICY, "message without an 'event'", "protocol")
    if event in ("connected", "mark", "dtmf"):
        return TwilioNotice(event)
    if event == "start":
        return _twilio_start(_object(data, "start", "start"))
    if event == "media":
        return _twilio_media(_object(data, "media", "media"))
    if event == "stop":
        return TwilioStop()
    raise Refusal(POLICY, f"unknown event {event[:40]!r}", "protocol")


def _twilio_start(start: dict[str, Any]) -> TwilioStart:
    call_sid = _text(start, "callSid", "start")
    if not SESSION_PART.fullmatch(call_sid):
        raise Refusal(POLICY, "start.callSid is not a call id", "protocol")
    tracks = start.get("tracks")
    if not isinstance(tracks, list):
        raise Refusal(POLICY, "start.tracks missing or not a list", "protocol")
    if "inbound" not in tracks:
        raise Refusal(UNSUPPORTED, "no inbound track: the gateway transcribes the caller", "unsupported")
    media_format = _object(start, "mediaFormat", "start")
    shape = (media_format.get("encoding"), media_format.get("sampleRate"), media_format.get("channels"))
    if shape != ("audio/x-mulaw", 8000, 1):
        raise Refusal(UNSUPPORTED, f"media format {shape}: audio/x-mulaw, 8000 Hz, 1 channel only", "unsupported")
    parameters = start.get("customParameters") or {}
    if not isinstance(parameters, dict):
        raise Refusal(POLICY, "start.customParameters is not an object", "protocol")
    return TwilioStart(
        stream_sid=_text(start, "streamSid", "start"),
        call_sid=call_sid,
        custom_parameters={str(k): str(v) for k, v in parameters.items()},
    )


def _twilio_media(media: dict[str, Any]) -> TwilioMedia:
    try:
        payload = base64.b64decode(_text(media, "payload", "media"), validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(POLICY, "media.payload is not base64", "protocol") from None
    return TwilioMedia(_text(media, "track", "media"), _count(media, "timestamp", "media"), payload)


# -- frames ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    seq: int
    payload: bytes
    capture_ms: float
    end_of_stream: bool = False


class Reframer:
    """One session's audio, in chunks of any size, as exact frames of ``frame_ms``, numbered from 0.

    Capture time (the gateway's clock, not the client's): the stream's anchor plus the stream
    offset of the frame's first byte, but never later than the receive time of the message that
    carried that byte, since a frame cannot have been captured after the gateway had it. The anchor
    is the receive time of the stream's start when the protocol has one (Twilio's ``start``, with
    ``media.timestamp`` as offsets), else of the first audio (offsets counted from the bytes).
    """

    def __init__(self, stream: StreamFormat, frame_ms: int, anchor_ms: float | None = None) -> None:
        self._stream = stream
        self._frame_bytes = audio.frame_bytes(stream.codec, stream.sample_rate, frame_ms)
        self._silence = audio.encode(np.zeros(stream.sample_rate * frame_ms // 1000, dtype=np.int16), stream.codec)
        self._anchor_ms = anchor_ms
        self._pending = bytearray()
        self._pending_capture_ms = 0.0
        self._next_offset_ms = 0.0
        self._seq = 0

    def push(self, data: bytes, received_ms: float, offset_ms: float | None = None) -> list[Frame]:
        """The frames ``data`` completes; ``offset_ms`` is its stream time when the protocol says it."""
        if self._anchor_ms is None:
            self._anchor_ms = received_ms
        start_ms = self._next_offset_ms if offset_ms is None else offset_ms
        ms_per_byte = 1000.0 / self._stream.bytes_per_s
        frames = []
        taken = 0
        while taken < len(data):
            if not self._pending:
                self._pending_capture_ms = self._capture(start_ms + taken * ms_per_byte, received_ms)
            take = min(self._frame_bytes - len(self._pending), len(data) - taken)
            self._pending += data[taken : taken + take]
            taken += take
            if len(self._pending) == self._frame_bytes:
                frames.append(self._frame(bytes(self._pending), self._pending_capture_ms))
                self._pending.clear()
        self._next_offset_ms = start_ms + len(data) * ms_per_byte
        return frames

    def end(self, received_ms: float) -> list[Frame]:
        """The last partial frame padded with the codec's silence, then the end-of-stream frame."""
        frames = []
        if self._pending:
            padding = self._frame_bytes - len(self._pending)
            frames.append(self._frame(bytes(self._pending) + self._silence[-padding:], self._pending_capture_ms))
            self._next_offset_ms += padding * 1000.0 / self._stream.bytes_per_s
            self._pending.clear()
        if self._anchor_ms is None:
            self._anchor_ms = received_ms
        frames.append(self._frame(b"", self._capture(self._next_offset_ms, received_ms), end_of_stream=True))
        return frames

    def _capture(self, offset_ms: float, received_ms: float) -> float:
        assert self._anchor_ms is not None
        return min(self._anchor_ms + offset_ms, received_ms)

    def _frame(self, payload: bytes, capture_ms: float, end_of_stream: bool = False) -> Frame:
        frame = Frame(self._seq, payload, capture_ms, end_of_stream)
        self._seq += 1
        return frame


# -- limits ---------------------------------------------------------------------------------


class RealtimeLimiter:
    """A token bucket over audio seconds: it refills at ``factor`` seconds of audio per second and
    holds at most ``burst_s``. A message is taken while the bucket has credit, so one message may
    overdraw it by its own length (``max_message_bytes`` bounds that); the next waits for the debt.
    ``clock``: monotonic seconds.
    """

    def __init__(self, factor: float, burst_s: float, clock: Clock) -> None:
        self._factor = factor
        self._burst_s = burst_s
        self._clock = clock
        self._credit_s = burst_s
        self._at = clock()

    def take(self, audio_s: float) -> None:
        """Account for ``audio_s`` seconds of audio received now; a :class:`Refusal` (1008) when too fast."""
        now = self._clock()
        self._credit_s = min(self._burst_s, self._credit_s + (now - self._at) * self._factor)
        self._at = now
        if self._credit_s <= 0:
            raise Refusal(POLICY, f"faster than real time: audio arrives above {self._factor:g}x real time", "rate")
        self._credit_s -= audio_s


class Capacity:
    """Live sessions per tenant and per replica: one past either limit is refused with 1013."""

    def __init__(self, max_sessions: int, max_per_tenant: int) -> None:
        self._max_sessions = max_sessions
        self._max_per_tenant = max_per_tenant
        self._by_tenant: Counter[str] = Counter()

    @property
    def sessions(self) -> int:
        return self._by_tenant.total()

    def open(self, tenant: str) -> None:
        if self.sessions >= self._max_sessions:
            raise Refusal(TRY_AGAIN, f"try again later: gateway at {self._max_sessions} sessions", "replica_limit")
        if self._by_tenant[tenant] >= self._max_per_tenant:
            raise Refusal(TRY_AGAIN, f"try again later: tenant at {self._max_per_tenant} sessions", "tenant_limit")
        self._by_tenant[tenant] += 1

    def close(self, tenant: str) -> None:
        self._by_tenant[tenant] -= 1
        if self._by_tenant[tenant] <= 0:
            del self._by_tenant[tenant]
