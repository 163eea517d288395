"""The gateway client's pure parts (pipeline/gateway/client.py): messages both ways, chunks, when a session is done."""

from __future__ import annotations

import json

from pipeline import contracts
from pipeline.gateway.client import (
    StreamResult,
    TranscriptMessage,
    chunks,
    parse_transcript,
    settled,
    twilio_media,
    twilio_message,
    twilio_start,
)
from pipeline.gateway.policy import (
    TWILIO_FORMAT,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
    parse_twilio,
    session_event,
    transcript_message,
)
from tests.plugins.builders import words


def message(event: str, segment: int, text: str, received_ms: float = 0.0) -> TranscriptMessage:
    return TranscriptMessage(received_ms, event, "acme/1", segment, text, 3, 1000.0, 1200.0)


def test_the_gateways_transcript_messages_parse_with_their_receive_time() -> None:
    record = contracts.Transcript(
        session_id="acme/CA1",
        kind="final",
        segment=2,
        text="large queso",
        committed_text="large queso",
        tail_text="",
        words=words(("large", 100, 400), ("queso", 400, 800)),
        hop_seq=41,
        first_capture_ts_ms=1_000.5,
        published_ts_ms=1_250.25,
    )
    parsed = parse_transcript(transcript_message(record), received_ms=1_300.0)
    assert parsed == TranscriptMessage(1_300.0, "final", "acme/CA1", 2, "large queso", 41, 1_000.5, 1_250.25)


def test_session_and_subscription_events_are_not_transcripts() -> None:
    assert parse_transcript(session_event("session", "acme/1"), 0.0) is None
    assert parse_transcript(session_event("subscribed", "acme/1"), 0.0) is None


def test_audio_is_cut_into_20_ms_chunks_of_its_codec() -> None:
    pcm = bytes(range(256)) * 5  # 1280 bytes: 40 ms of 16 kHz PCM16, then 2 bytes more
    cut = chunks(pcm + b"xy", "pcm16", 16000)
    assert [len(c) for c in cut] == [640, 640, 2]
    assert b"".join(cut) == pcm + b"xy"
    assert [len(c) for c in chunks(bytes(400), "mulaw", 8000)] == [160, 160, 80]


def test_twilio_messages_are_what_the_gateway_takes_from_twilio() -> None:
    start = parse_twilio(twilio_start("run1-s01", "MZrun1-s01", "s3cret"))
    assert start == TwilioStart(stream_sid="MZrun1-s01", call_sid="run1-s01", custom_parameters={"token": "s3cret"})
    assert json.loads(twilio_start("c", "MZc", "t"))["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": TWILIO_FORMAT.sample_rate,
        "channels": 1,
    }
    media = parse_twilio(twilio_media("MZ1", 7, b"\xff\x7f" * 80))
    assert media == TwilioMedia(track="inbound", timestamp_ms=140, payload=b"\xff\x7f" * 80)
    assert isinstance(parse_twilio(twilio_message("stop", "MZ1", 9, stop={"callSid": "c"})), TwilioStop)


def test_a_session_has_settled_once_its_newest_message_is_a_final_and_quiet() -> None:
    partial, final = message("partial", 0, "large", 1_000.0), message("final", 0, "large queso", 1_400.0)
    assert not settled([], ended_ms=1_000.0, now=9_000.0, quiet_s=1.5)
    assert not settled([final, partial], ended_ms=1_000.0, now=9_000.0, quiet_s=1.5), "words still open"
    assert not settled([partial, final], ended_ms=1_000.0, now=2_800.0, quiet_s=1.5), "the final is too recent"
    assert not settled([partial, final], ended_ms=2_000.0, now=3_400.0, quiet_s=1.5), "the end is too recent"
    assert settled([partial, final], ended_ms=1_000.0, now=2_900.0, quiet_s=1.5)


def test_the_transcript_is_the_first_final_of_each_segment_in_order() -> None:
    result = StreamResult(
        "s01",
        messages=[
            message("partial", 0, "can i"),
            message("final", 1, "do you have"),
            message("final", 0, "can i get"),
            message("final", 1, "do you have it"),  # repeated after a restart: the first one counts
            message("final", 2, ""),  # a silent segment
        ],
    )
    assert result.transcript() == "can i get do you have"
    assert not result.refused
    assert StreamResult("s02", close_code=1013).refused
