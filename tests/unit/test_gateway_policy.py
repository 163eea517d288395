"""The gateway's pure rules (pipeline/gateway/policy.py): messages, tokens, re-framing, pacing, capacity."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import numpy as np
import pytest

from pipeline import audio, contracts
from pipeline.control.ladder import ladder
from pipeline.gateway.policy import (
    TWILIO_FORMAT,
    Capacity,
    RealtimeLimiter,
    Reframer,
    Refusal,
    StreamFormat,
    TokenBook,
    TwilioMedia,
    TwilioNotice,
    TwilioStart,
    TwilioStop,
    check_admission,
    expect_end,
    parse_stream_start,
    parse_twilio,
    presented_token,
    subscription_session,
    transcript_message,
)
from pipeline.settings import Settings
from tests.plugins.builders import words
from tests.plugins.clock import FakeClock

T0 = 1_700_000_000_000.0
PCM16K = StreamFormat("pcm16", 16000)

# Twilio Media Streams messages in the shapes Twilio documents (numbers sent as strings included).
CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC00000000000000000000000000000000",
        "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        "callSid": "CA11111111111111111111111111111111",
        "tracks": ["inbound"],
        "customParameters": {"token": "s3cret", "FirstName": "Jane"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
    "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
}
MEDIA = {
    "event": "media",
    "sequenceNumber": "3",
    "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": base64.b64encode(b"\xff" * 160).decode()},
    "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
}
MARK = {"event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", "mark": {"name": "my label"}}
DTMF = {"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "1"}}
STOP = {
    "event": "stop",
    "sequenceNumber": "5",
    "stop": {"accountSid": "AC00000000000000000000000000000000", "callSid": "CA11111111111111111111111111111111"},
    "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
}


def refusal(action: Any, *args: Any) -> Refusal:
    with pytest.raises(Refusal) as caught:
        action(*args)
    return caught.value


def changed(message: dict[str, Any], section: str, **fields: Any) -> str:
    """``message`` as JSON with some fields of ``section`` replaced (None: removed)."""
    body = {**message[section], **fields}
    return json.dumps({**message, section: {k: v for k, v in body.items() if v is not None}})


# -- re-framing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "chunks"),
    [
        (PCM16K, [640] * 5),
        (PCM16K, [1, 639, 3, 1277, 7, 2000, 333]),
        (StreamFormat("pcm16", 8000), [320, 100, 1, 1, 500]),
        (TWILIO_FORMAT, [160] * 3 + [100, 333, 7, 1]),
        (StreamFormat("alaw", 8000), [2000]),
    ],
)
def test_chunks_of_any_size_become_exact_frames_then_the_padded_tail_and_end_of_stream(
    stream: StreamFormat, chunks: list[int]
) -> None:
    data = random.Random(7).randbytes(sum(chunks))
    reframer = Reframer(stream, 20)
    frames, at = [], 0
    for size in chunks:
        frames += reframer.push(data[at : at + size], T0 + at)
        at += size
    frames += reframer.end(T0 + at)
    size = audio.frame_bytes(stream.codec, stream.sample_rate)
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert [f.end_of_stream for f in frames] == [False] * (len(frames) - 1) + [True]
    assert frames[-1].payload == b""
    assert {len(f.payload) for f in frames[:-1]} == {size}
    joined = b"".join(f.payload for f in frames)
    assert joined[: len(data)] == data
    assert len(frames) - 1 == -(-len(data) // size)


@pytest.mark.parametrize(("codec", "rate"), [("pcm16", 16000), ("mulaw", 8000), ("alaw", 8000)])
def test_the_tail_is_padded_with_the_codecs_silence(codec: str, rate: int) -> None:
    reframer = Reframer(StreamFormat(codec, rate), 20)
    loud = audio.encode(np.full(10, 20000, dtype=np.int16), codec)
    assert reframer.push(loud, T0) == []
    tail, eos = reframer.end(T0 + 20)
    padding = audio.decode(tail.payload[len(loud) :], codec)
    assert len(tail.payload) == audio.frame_bytes(codec, rate)
    assert np.abs(padding).max() <= 8  # mu-law and pcm16 silence decode to 0, A-law's to 8
    assert eos.end_of_stream and eos.seq == 1


def test_a_stream_ended_before_any_audio_is_one_end_of_stream_frame() -> None:
    (eos,) = Reframer(PCM16K, 20).end(T0)
    assert (eos.seq, eos.payload, eos.end_of_stream, eos.capture_ms) == (0, b"", True, T0)


def test_real_time_audio_is_stamped_from_the_first_receipt_at_its_stream_offset() -> None:
    reframer = Reframer(PCM16K, 20)
    frames = []
    for n in range(10):  # 20 ms chunks, each received 3 ms after its audio would end
        frames += reframer.push(bytes(640), T0 + 20 * n + 3)
    assert [f.capture_ms for f in frames] == [T0 + 3 + 20 * n for n in range(10)]
    (eos,) = reframer.end(T0 + 500)
    assert eos.capture_ms == T0 + 3 + 200


def test_capture_is_never_later_than_the_receipt_of_the_frames_first_byte() -> None:
    rng = random.Random(3)
    reframer = Reframer(PCM16K, 20)
    frames, first_byte_receipt = [], {}
    offset, received = 0, T0
    for _ in range(200):  # bursts faster than real time, stalls, odd chunk sizes
        size = rng.randint(1, 3000)
        received += rng.choice([0.0, 1.0, 5.0, 120.0])
        for seq in range(-(-offset // 640), -(-(offset + size) // 640)):
            first_byte_receipt[seq] = received
        frames += reframer.push(bytes(size), received)
        offset += size
    assert len(frames) > 100
    assert all(f.capture_ms <= first_byte_receipt[f.seq] for f in frames)
    assert any(f.capture_ms == first_byte_receipt[f.seq] for f in frames)  # bursts: clamped
    assert any(f.capture_ms < first_byte_receipt[f.seq] - 100 for f in frames)  # stalls: in the past
    assert [f.capture_ms for f in frames] == sorted(f.capture_ms for f in frames)


def test_twilio_capture_is_stream_start_plus_media_timestamp_clamped_to_the_receipt() -> None:
    start = T0
    reframer = Reframer(TWILIO_FORMAT, 20, anchor_ms=start)
    late = reframer.push(bytes(160), received_ms=start + 300, offset_ms=100)  # network delay: in the past
    early = reframer.push(bytes(160), received_ms=start + 310, offset_ms=400)  # would be 90 ms in the future
    split = reframer.push(bytes(80), received_ms=start + 500, offset_ms=440)
    split += reframer.push(bytes(80), received_ms=start + 530, offset_ms=450)
    assert [f.capture_ms for f in late + early + split] == [start + 100, start + 310, start + 440]


# -- Twilio messages ------------------------------------------------------------------------


def test_twilio_messages_as_twilio_documents_them() -> None:
    assert parse_twilio(json.dumps(CONNECTED)) == TwilioNotice("connected")
    assert parse_twilio(json.dumps(START)) == TwilioStart(
        stream_sid="MZ18ad3ab5a668481ce02b83e7395059f0",
        call_sid="CA11111111111111111111111111111111",
        custom_parameters={"token": "s3cret", "FirstName": "Jane"},
    )
    assert parse_twilio(json.dumps(MEDIA)) == TwilioMedia(track="inbound", timestamp_ms=5, payload=b"\xff" * 160)
    assert parse_twilio(json.dumps(MARK)) == TwilioNotice("mark")
    assert parse_twilio(json.dumps(DTMF)) == TwilioNotice("dtmf")
    assert parse_twilio(json.dumps(STOP)) == TwilioStop()


def test_twilio_outbound_media_is_labelled_and_both_tracks_are_accepted() -> None:
    outbound = parse_twilio(changed(MEDIA, "media", track="outbound", timestamp=40))
    assert isinstance(outbound, TwilioMedia) and (outbound.track, outbound.timestamp_ms) == ("outbound", 40)
    assert isinstance(parse_twilio(changed(START, "start", tracks=["inbound", "outbound"])), TwilioStart)


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        ('{"event": "media", "media": {', 1008, "malformed JSON"),
        ("[1, 2]", 1008, "must be a JSON object"),
        (json.dumps({"event": "clear", "streamSid": "MZ1"}), 1008, "unknown event 'clear'"),
        (json.dumps({"streamSid": "MZ1"}), 1008, "message without an 'event'"),
        (json.dumps({"event": "start", "streamSid": "MZ1"}), 1008, "start without a 'start' object"),
        (changed(START, "start", callSid=None), 1008, "start.callSid missing"),
        (changed(START, "start", callSid="CA1/../x"), 1008, "not a call id"),
        (changed(START, "start", streamSid=None), 1008, "start.streamSid missing"),
        (changed(START, "start", tracks=None), 1008, "start.tracks missing"),
        (changed(START, "start", mediaFormat=None), 1008, "without a 'mediaFormat' object"),
        (changed(START, "start", customParameters=["token"]), 1008, "customParameters is not an object"),
        (changed(START, "start", tracks=["outbound"]), 1003, "no inbound track"),
        (
            changed(START, "start", mediaFormat={"encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1}),
            1003,
            "audio/x-mulaw, 8000 Hz, 1 channel only",
        ),
        (changed(MEDIA, "media", payload=None), 1008, "media.payload missing"),
        (changed(MEDIA, "media", track=None), 1008, "media.track missing"),
        (changed(MEDIA, "media", timestamp=None), 1008, "media.timestamp missing or not a count"),
        (changed(MEDIA, "media", timestamp="-5"), 1008, "media.timestamp missing or not a count"),
        (changed(MEDIA, "media", payload="not base64!"), 1008, "not base64"),
        (b'{"event": "connected"}', 1003, "binary message"),
    ],
)
def test_anything_twilio_does_not_send_is_refused_with_a_reason(message: str | bytes, code: int, reason: str) -> None:
    refused = refusal(parse_twilio, message)
    assert refused.code == code and reason in refused.reason


# -- /v1/stream messages --------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "rate"), [("pcm16", 16000), ("pcm16", 8000), ("mulaw", 8000), ("alaw", 8000)])
def test_stream_start_takes_the_formats_hopline_takes(codec: str, rate: int) -> None:
    assert parse_stream_start(json.dumps({"codec": codec, "sample_rate": rate})) == StreamFormat(codec, rate)


@pytest.mark.parametrize(
    ("start", "code", "reason"),
    [
        ({"codec": "pcm16", "sample_rate": 44100}, 1003, "sample rate 44100 not supported"),
        ({"codec": "mulaw", "sample_rate": 16000}, 1003, "mulaw is G.711: 8000 Hz only"),
        ({"codec": "alaw", "sample_rate": 16000}, 1003, "alaw is G.711: 8000 Hz only"),
        ({"codec": "opus", "sample_rate": 8000}, 1003, "unknown codec 'opus'"),
        ({"codec": "pcm16", "sample_rate": "16000"}, 1008, '{"codec"'),
        ({"codec": "pcm16", "sample_rate": True}, 1008, '{"codec"'),
        ({"sample_rate": 8000}, 1008, '{"codec"'),
        ([], 1008, "must be a JSON object"),
    ],
)
def test_stream_start_refuses_each_wrong_codec_and_rate(start: Any, code: int, reason: str) -> None:
    refused = refusal(parse_stream_start, json.dumps(start))
    assert refused.code == code and reason in refused.reason


def test_stream_start_refuses_audio_and_broken_json_before_the_start() -> None:
    assert refusal(parse_stream_start, bytes(640)).code == 1003
    assert "malformed JSON" in refusal(parse_stream_start, '{"codec": ').reason


def test_after_the_start_only_the_end_event_is_taken() -> None:
    expect_end('{"event": "end"}')
    assert "unknown event 'pause'" in refusal(expect_end, '{"event": "pause"}').reason
    assert refusal(expect_end, "end").code == 1008


# -- tokens and tenancy ---------------------------------------------------------------------


def test_the_token_comes_from_the_bearer_header_else_the_query() -> None:
    assert presented_token("Bearer s3cret", "") == "s3cret"
    assert presented_token("bearer  s3cret ", "token=other") == "s3cret"
    assert presented_token(None, "a=1&token=s3cret") == "s3cret"
    assert presented_token("Basic dXNlcg==", "token=s3cret") == "s3cret"
    assert presented_token(None, "") is None


def test_a_token_names_its_tenant_and_nothing_else_gets_in() -> None:
    book = TokenBook({"acme": "s3cret", "globex": "hunter2"})
    assert book.tenant_of("s3cret") == "acme"
    assert book.tenant_of("hunter2") == "globex"
    for token, reason in [
        (None, "missing token"),
        ("", "missing token"),
        ("s3cre", "invalid token"),
        ("s3cret2", "invalid token"),
        ("S3CRET", "invalid token"),
    ]:
        refused = refusal(book.tenant_of, token)
        assert (refused.code, refused.reason.split(" (")[0], refused.label) == (1008, reason, "auth")


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        ({}, "no tenant tokens"),
        ({"a/b": "t"}, "tenant name"),
        ({"a": ""}, "empty token"),
        ({"a": "t", "b": "t"}, "share a token"),
    ],
)
def test_a_token_book_that_could_confuse_tenants_is_refused(tokens: dict[str, str], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        TokenBook(tokens)


def test_a_subscription_names_a_session_of_the_callers_tenant_only() -> None:
    assert subscription_session("acme", "acme%2FCA123") == "acme/CA123"
    assert subscription_session("acme", "acme/CA123") == "acme/CA123"
    other = refusal(subscription_session, "globex", "acme%2FCA123")
    assert (other.code, other.reason) == (1008, "session belongs to another tenant")
    for quoted in ["CA123", "acme%2F", "acme%2F..%2Fglobex%2FCA1"]:
        assert refusal(subscription_session, "acme", quoted).code == 1008


def test_admission_closed_by_the_controller_refuses_with_its_level_and_reason() -> None:
    steps = ladder(Settings())
    check_admission(steps[4], "")
    refused = refusal(check_admission, steps[5], "queue_wait p95 310 ms")
    assert refused.code == 1013
    assert refused.reason == "try again later: admission closed at degradation level 5 (queue_wait p95 310 ms)"


# -- limits ---------------------------------------------------------------------------------


def stream_at(limiter: RealtimeLimiter, clock: FakeClock, speed: float, seconds: float, chunk_s: float = 0.02) -> None:
    """Send ``seconds`` of audio in ``chunk_s`` chunks at ``speed`` x real time."""
    for _ in range(round(seconds / chunk_s)):
        limiter.take(chunk_s)
        clock.advance(chunk_s / speed)


def test_twice_real_time_passes_for_as_long_as_it_lasts() -> None:
    clock = FakeClock(0.0)
    stream_at(RealtimeLimiter(2.0, 1.0, clock), clock, 2.0, 600.0)


def test_two_and_a_half_times_real_time_is_refused_once_the_burst_is_spent() -> None:
    clock = FakeClock(0.0)
    limiter = RealtimeLimiter(2.0, 1.0, clock)
    stream_at(limiter, clock, 2.5, 4.5)  # 0.5 s of debt per 2.5 s of audio: the 1 s burst lasts 5 s of audio
    refused = refusal(stream_at, limiter, clock, 2.5, 1.0)
    assert (refused.code, refused.label) == (1008, "rate")
    assert "faster than real time" in refused.reason


def test_idle_time_does_not_bank_more_than_the_burst() -> None:
    clock = FakeClock(0.0)
    limiter = RealtimeLimiter(2.0, 1.0, clock)
    clock.advance(60.0)
    limiter.take(1.5)  # one message may overdraw what is left...
    with pytest.raises(Refusal):
        limiter.take(0.02)  # ...and the next waits until the debt is paid back (0.25 s at 2x)
    clock.advance(0.26)
    limiter.take(0.02)


def test_sessions_are_capped_per_tenant_and_per_replica() -> None:
    capacity = Capacity(max_sessions=3, max_per_tenant=2)
    capacity.open("acme")
    capacity.open("acme")
    assert refusal(capacity.open, "acme").label == "tenant_limit"
    capacity.open("globex")
    full = refusal(capacity.open, "initech")
    assert (full.code, full.label, full.reason) == (1013, "replica_limit", "try again later: gateway at 3 sessions")
    capacity.close("acme")
    capacity.open("initech")
    assert capacity.sessions == 3


def test_a_transcript_goes_out_as_the_documented_json() -> None:
    transcript = contracts.Transcript(
        session_id="acme/CA1",
        kind="final",
        segment=2,
        text="large queso",
        committed_text="large queso",
        tail_text="",
        words=words(("large", 100, 400), ("queso", 420, 800)),
        hop_seq=17,
        first_capture_ts_ms=T0,
        published_ts_ms=T0 + 300,
    )
    message = json.loads(transcript_message(transcript))
    assert message["event"] == "final" and "kind" not in message
    assert (message["session_id"], message["segment"], message["text"], message["hop_seq"]) == (
        "acme/CA1",
        2,
        "large queso",
        17,
    )
    assert message["words"][1] == {"word": "queso", "start_ms": 420.0, "end_ms": 800.0, "confidence": 0.9}


def test_a_close_reason_fits_the_websocket_limit() -> None:
    assert len(Refusal(1008, "é" * 100, "protocol").reason.encode()) <= 123
