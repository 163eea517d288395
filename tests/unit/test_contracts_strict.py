"""The decoder is strict: bytes a correct Avro writer cannot produce are malformed, never a record.

Bodies are built by hand here (a zig-zag varint and a length prefix are all it takes) so each
test breaks exactly one thing a lenient reader would let through.
"""

from __future__ import annotations

import io
import struct
import time

import pytest
from fastavro import schemaless_writer

from pipeline import contracts
from pipeline.contracts.codec import HEADER_LEN, MAGIC, MAX_SESSION_ID_BYTES, MAX_WORKER_ID_BYTES, Contract, _compile
from tests.unit.test_contracts_interop import SAMPLES


def zz(n: int) -> bytes:
    """Avro's zig-zag varint of any Python int (also ones too large for a long)."""
    n = n << 1 if n >= 0 else ((-n) << 1) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string(value: bytes) -> bytes:
    return zz(len(value)) + value


def double(value: float) -> bytes:
    return struct.pack("<d", value)


def message(contract: Contract, body: bytes) -> bytes:
    return MAGIC + contract.fingerprint + body


def frame_body(
    *,
    session: bytes = string(b"call-1"),
    seq: bytes = zz(7),
    codec: bytes = zz(1),
    rate: bytes = zz(8000),
    payload: bytes = string(bytes(160)),
    eos: bytes = b"\x00",
) -> bytes:
    return session + seq + double(1.5) + codec + rate + payload + eos + double(2.5)


def raw_message(contract: Contract, record: dict[str, object]) -> bytes:
    """What a writer that skips our encode-side checks puts on the topic."""
    buf = io.BytesIO()
    schemaless_writer(buf, contract.schema, record)
    return message(contract, buf.getvalue())


def test_a_hand_built_body_decodes_to_the_record_it_spells() -> None:
    assert contracts.FRAME.decode(message(contracts.FRAME, frame_body())) == {
        "session_id": "call-1",
        "seq": 7,
        "capture_ts_ms": 1.5,
        "codec": "mulaw",
        "sample_rate": 8000,
        "payload": bytes(160),
        "end_of_stream": False,
        "sent_ts_ms": 2.5,
    }


@pytest.mark.parametrize("index", [-1, -3, 3, 2**40])
def test_an_enum_index_outside_the_symbols_is_malformed(index: int) -> None:
    with pytest.raises(contracts.MalformedMessageError, match=rf"codec: enum index {index} outside 0\.\.2"):
        contracts.FRAME.decode(message(contracts.FRAME, frame_body(codec=zz(index))))


@pytest.mark.parametrize("byte", [b"\x02", b"\x80", b"\xff"])
def test_a_boolean_byte_other_than_0_or_1_is_malformed(byte: bytes) -> None:
    with pytest.raises(contracts.MalformedMessageError, match="end_of_stream: boolean byte"):
        contracts.FRAME.decode(message(contracts.FRAME, frame_body(eos=byte)))


def dead_letter_body(key: bytes) -> bytes:
    tail = string(b"r") + string(b"E") + string(b"s") + double(0.0)
    return string(b"t") + zz(0) + zz(1) + key + zz(0) + tail


@pytest.mark.parametrize("index", [-1, 2, 2**33])
def test_a_union_index_outside_the_branches_is_malformed(index: int) -> None:
    assert contracts.DEAD_LETTER.decode(message(contracts.DEAD_LETTER, dead_letter_body(zz(1) + string(b"k"))))[
        "key"
    ] == (b"k")
    with pytest.raises(contracts.MalformedMessageError, match=rf"key: union index {index} outside 0\.\.1"):
        contracts.DEAD_LETTER.decode(message(contracts.DEAD_LETTER, dead_letter_body(zz(index) + string(b"k"))))


@pytest.mark.parametrize("rate", [2**31, -(2**31) - 1, 2**40])
def test_an_int_outside_32_bits_is_malformed(rate: int) -> None:
    with pytest.raises(contracts.MalformedMessageError, match=r"sample_rate: .*32-bit int"):
        contracts.FRAME.decode(message(contracts.FRAME, frame_body(rate=zz(rate))))


@pytest.mark.parametrize("seq", [2**63, -(2**63) - 1, 2**69])
def test_a_long_outside_64_bits_is_malformed(seq: int) -> None:
    with pytest.raises(contracts.MalformedMessageError, match=r"seq: .*64-bit long"):
        contracts.FRAME.decode(message(contracts.FRAME, frame_body(seq=zz(seq))))


def test_the_extreme_longs_and_ints_decode() -> None:
    body = frame_body(seq=zz(-(2**63)), rate=zz(2**31 - 1))
    record = contracts.FRAME.decode(message(contracts.FRAME, body))
    assert (record["seq"], record["sample_rate"]) == (-(2**63), 2**31 - 1)


def test_a_varint_that_never_ends_is_malformed() -> None:
    with pytest.raises(contracts.MalformedMessageError, match="seq: varint longer than 10 bytes"):
        contracts.FRAME.decode(message(contracts.FRAME, frame_body(seq=b"\x80" * 11 + b"\x00")))


@pytest.mark.parametrize("length", [-1, 200, 2**40])
def test_a_string_or_bytes_length_past_the_end_is_malformed_at_once(length: int) -> None:
    for body, field in (
        (frame_body(session=zz(length) + b"call-1"), "session_id"),
        (frame_body(payload=zz(length) + bytes(160)), "payload"),
    ):
        with pytest.raises(contracts.MalformedMessageError, match=f"{field}: length {length} "):
            contracts.FRAME.decode(message(contracts.FRAME, body))


def test_a_string_that_is_not_utf8_is_malformed() -> None:
    with pytest.raises(contracts.MalformedMessageError, match="session_id: not UTF-8"):
        contracts.FRAME.decode(message(contracts.FRAME, frame_body(session=string(b"\xff\xfe"))))


def test_a_body_that_ends_early_is_malformed() -> None:
    body = frame_body()
    for cut in (0, 3, len(body) - 9, len(body) - 1):
        with pytest.raises(contracts.MalformedMessageError, match="ends early"):
            contracts.FRAME.decode(message(contracts.FRAME, body[:cut]))


def hypothesis_with_words_count(count: bytes) -> bytes:
    """A valid Hypothesis message whose ``words`` array starts with ``count`` instead of its end marker."""
    record = contracts.Hypothesis(
        session_id="s",
        hop_seq=0,
        text="",
        words=(),
        confidence=0.5,
        window_start_ms=0.0,
        window_end_ms=1.0,
        is_final=False,
        beam=1,
        window_secs=1.0,
        batch_size=1,
        worker_id="w",
        first_capture_ts_ms=0.0,
        ready_ts_ms=0.0,
        hop_published_ts_ms=0.0,
        received_ts_ms=0.0,
        batch_closed_ts_ms=0.0,
        infer_start_ts_ms=0.0,
        infer_end_ts_ms=0.0,
    ).encode()
    words_at = HEADER_LEN + len(string(b"s") + zz(0) + string(b""))
    assert record[words_at] == 0
    return record[:words_at] + count + record[words_at + 1 :]


def test_an_array_count_larger_than_the_bytes_left_is_malformed_at_once() -> None:
    started = time.perf_counter()
    with pytest.raises(contracts.MalformedMessageError, match="words: 1099511627776 items cannot fit"):
        contracts.HYPOTHESIS.decode(hypothesis_with_words_count(zz(2**40)))
    assert time.perf_counter() - started < 0.1


def word(text: bytes) -> bytes:
    return string(text) + double(0.0) + double(1.0) + struct.pack("<f", 0.5)


def test_an_array_block_with_a_byte_size_decodes_only_when_the_size_is_right() -> None:
    items = word(b"hi") + word(b"yo")
    good = hypothesis_with_words_count(zz(-2) + zz(len(items)) + items + zz(0))
    assert [w["word"] for w in contracts.HYPOTHESIS.decode(good)["words"]] == ["hi", "yo"]
    for size in (len(items) - 1, len(items) + 1, -1):
        bad = hypothesis_with_words_count(zz(-2) + zz(size) + items + zz(0))
        with pytest.raises(contracts.MalformedMessageError, match="words: block"):
            contracts.HYPOTHESIS.decode(bad)


def control_body(metrics: bytes) -> bytes:
    head = string(b"global") + zz(1) + zz(0) + zz(160) + double(1.28) + zz(4) + b"\x01" + string(b"r")
    return head + metrics + double(0.0) + string(b"full")


def test_a_map_count_larger_than_the_bytes_left_is_malformed_at_once() -> None:
    good = control_body(zz(1) + string(b"p95") + double(3.0) + zz(0))
    assert contracts.CONTROL.decode(message(contracts.CONTROL, good))["metrics"] == {"p95": 3.0}
    with pytest.raises(contracts.MalformedMessageError, match="metrics: 4294967296 entries cannot fit"):
        contracts.CONTROL.decode(message(contracts.CONTROL, control_body(zz(2**32) + string(b"p95") + double(3.0))))


SESSION_CONTRACTS = (contracts.FRAME, contracts.HOP, contracts.HYPOTHESIS, contracts.TRANSCRIPT, contracts.LATENCY)


def with_session(contract: Contract, session_id: str) -> dict[str, object]:
    return {**SAMPLES[contract.name].to_avro(), "session_id": session_id}


@pytest.mark.parametrize("contract", SESSION_CONTRACTS, ids=lambda c: c.name)
def test_a_session_id_is_at_most_the_contract_limit(contract: Contract) -> None:
    longest = "é" * (MAX_SESSION_ID_BYTES // 2)
    assert contract.decode(contract.encode(with_session(contract, longest)))["session_id"] == longest
    too_long = longest + "x"
    with pytest.raises(contracts.ContractError, match=f"session_id: {MAX_SESSION_ID_BYTES + 1} bytes, at most"):
        contract.encode(with_session(contract, too_long))
    with pytest.raises(contracts.MalformedMessageError, match=f"session_id: length {MAX_SESSION_ID_BYTES + 1} "):
        contract.decode(raw_message(contract, with_session(contract, too_long)))


@pytest.mark.parametrize("contract", (contracts.HYPOTHESIS, contracts.CAPABILITIES), ids=lambda c: c.name)
def test_a_worker_id_is_at_most_the_contract_limit(contract: Contract) -> None:
    longest = {**SAMPLES[contract.name].to_avro(), "worker_id": "w" * MAX_WORKER_ID_BYTES}
    assert contract.decode(contract.encode(longest))["worker_id"] == longest["worker_id"]
    too_long = {**longest, "worker_id": "w" * (MAX_WORKER_ID_BYTES + 1)}
    with pytest.raises(contracts.ContractError, match=f"worker_id: {MAX_WORKER_ID_BYTES + 1} bytes, at most"):
        contract.encode(too_long)
    with pytest.raises(contracts.MalformedMessageError, match=f"worker_id: length {MAX_WORKER_ID_BYTES + 1} "):
        contract.decode(raw_message(contract, too_long))


def test_a_huge_session_id_is_rejected_before_it_is_read() -> None:
    data = message(contracts.FRAME, frame_body(session=string(b"s" * 500_000)))
    limit = f"session_id: length 500000 over the limit of {MAX_SESSION_ID_BYTES} bytes"
    with pytest.raises(contracts.MalformedMessageError, match=limit):
        contracts.FRAME.decode(data)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "fixed", "name": "F", "size": 4},
        {"type": "array", "items": "null"},
        "hopline.Word",
        {"type": "long", "logicalType": "timestamp-millis"},
    ],
)
def test_a_schema_the_strict_reader_does_not_know_fails_when_it_loads(schema: object) -> None:
    with pytest.raises(ValueError, match="unsupported Avro"):
        _compile(schema)
