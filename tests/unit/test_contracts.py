import pytest

from pipeline import contracts


def frame(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "session_id": "call-1",
        "seq": 7,
        "capture_ts_ms": 1_700_000_000_123.5,
        "codec": "mulaw",
        "sample_rate": 8000,
        "payload": bytes(range(160)),
        "end_of_stream": False,
        "sent_ts_ms": 1_700_000_000_150.25,
    }
    record.update(changes)
    return record


def test_round_trip_keeps_every_field() -> None:
    assert contracts.FRAME.decode(contracts.FRAME.encode(frame())) == frame()


def test_header_is_single_object_encoding_with_crc64_fingerprint() -> None:
    data = contracts.FRAME.encode(frame())
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == contracts.FRAME.fingerprint
    assert len({c.fingerprint for c in contracts.ALL}) == len(contracts.ALL)


def test_message_of_another_schema_is_named_in_the_error() -> None:
    with pytest.raises(contracts.UnknownSchemaError, match="audio_frame"):
        contracts.HOP.decode(contracts.FRAME.encode(frame()))


def test_unknown_fingerprint_is_a_typed_error() -> None:
    data = contracts.FRAME.encode(frame())
    with pytest.raises(contracts.UnknownSchemaError, match="unknown fingerprint"):
        contracts.FRAME.decode(data[:2] + b"\x00" * 8 + data[10:])


@pytest.mark.parametrize("data", [None, b"", b"garbage", b"\xc3\x01"])
def test_garbage_is_malformed(data: bytes | None) -> None:
    with pytest.raises(contracts.MalformedMessageError):
        contracts.FRAME.decode(data)


def test_truncated_and_padded_bodies_are_malformed() -> None:
    data = contracts.FRAME.encode(frame())
    with pytest.raises(contracts.MalformedMessageError):
        contracts.FRAME.decode(data[:-5])
    with pytest.raises(contracts.MalformedMessageError, match="trailing"):
        contracts.FRAME.decode(data + b"\x00")


def test_encoding_a_record_that_breaks_the_schema_is_a_contract_error() -> None:
    with pytest.raises(contracts.ContractError):
        contracts.FRAME.encode(frame(codec="opus"))


def test_typed_record_round_trip_and_schema_defaults() -> None:
    record = contracts.AudioFrame(**frame())
    assert contracts.AudioFrame.decode(record.encode()) == record
    assert record.to_avro() == frame()
    without_default = {k: v for k, v in frame().items() if k != "end_of_stream"}
    assert contracts.AudioFrame(**without_default).end_of_stream is False
    letter = contracts.DeadLetter(
        source_topic="t", partition=0, offset=1, reason="r", error_type="E", service="s", failed_ts_ms=0.0
    )
    assert (letter.key, letter.value) == (None, None)
    assert contracts.DeadLetter.decode(letter.encode()) == letter


def test_typed_record_nests_words_as_records_and_avro_as_lists() -> None:
    word = contracts.Word(word="hi", start_ms=0.0, end_ms=100.0, confidence=0.5)
    transcript = contracts.Transcript(
        session_id="s",
        kind="partial",
        segment=0,
        text="hi",
        committed_text="hi",
        tail_text="",
        words=(word,),
        hop_seq=1,
        first_capture_ts_ms=0.0,
        published_ts_ms=1.0,
    )
    assert transcript.to_avro()["words"] == [{"word": "hi", "start_ms": 0.0, "end_ms": 100.0, "confidence": 0.5}]
    assert contracts.Transcript.decode(transcript.encode()).words == (word,)
    with pytest.raises(AttributeError):
        transcript.text = "changed"


def test_typed_record_decode_raises_the_contract_errors() -> None:
    with pytest.raises(contracts.UnknownSchemaError, match="audio_frame"):
        contracts.Hop.decode(contracts.FRAME.encode(frame()))
    with pytest.raises(contracts.MalformedMessageError):
        contracts.Hop.decode(b"garbage")
    with pytest.raises(contracts.ContractError):
        contracts.AudioFrame(**frame(codec="opus")).encode()
