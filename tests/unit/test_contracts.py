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
