"""Properties of every contract's codec: valid records round-trip, and no bytes make a decoder misbehave.

Records are drawn from the schema itself, so a field added to a schema is covered here without
a test change. Whatever bytes a decoder is given, it returns a record that encodes again or
raises :class:`~pipeline.contracts.ContractError`: never another exception. And what it accepts
fastavro's own reader decodes to the same record, so strictness never changes what a message says.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import schemaless_reader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import contracts
from pipeline.contracts.codec import HEADER_LEN, MAGIC, MAX_SESSION_ID_BYTES, Contract
from tests.unit.test_contracts_strict import dead_letter_body, frame_body, message, string, zz

DECODER_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TYPED: dict[str, type[Any]] = {
    "audio_frame": contracts.AudioFrame,
    "hop": contracts.Hop,
    "hypothesis": contracts.Hypothesis,
    "transcript": contracts.Transcript,
    "latency_event": contracts.LatencyEvent,
    "control_command": contracts.ControlCommand,
    "dead_letter": contracts.DeadLetter,
    "broker_probe": contracts.BrokerProbe,
    "worker_capabilities": contracts.WorkerCapabilities,
}

PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32),
    "double": st.floats(),
    "string": st.text(max_size=20),
    "bytes": st.binary(max_size=64),
}


def values(schema: Any) -> st.SearchStrategy[Any]:
    """Every value the (parsed) Avro ``schema`` allows, sized for speed; ``session_id`` within its limit."""
    if isinstance(schema, list):
        return st.one_of([values(branch) for branch in schema])
    if isinstance(schema, str):
        return PRIMITIVES[schema]
    kind = schema["type"]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(values(schema["items"]), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), values(schema["values"]), max_size=4)
    assert kind == "record", schema
    # A character is at most 4 UTF-8 bytes: always within MAX_SESSION_ID_BYTES.
    session_ids = st.text(max_size=MAX_SESSION_ID_BYTES // 4)
    return st.fixed_dictionaries(
        {f["name"]: session_ids if f["name"] == "session_id" else values(f["type"]) for f in schema["fields"]}
    )


def messages(contract: Contract) -> st.SearchStrategy[bytes]:
    return values(contract.schema).map(contract.encode)


def fastavro_decode(contract: Contract, data: bytes) -> Any:
    return schemaless_reader(io.BytesIO(data[HEADER_LEN:]), contract.schema, None)


def check_decoding(contract: Contract, data: bytes) -> None:
    """Decoding ``data`` raises a contract error, or gives a record that encodes again and that fastavro agrees on."""
    try:
        record = contract.decode(data)
    except contracts.ContractError:
        return
    again = contract.encode(record)
    assert contract.encode(fastavro_decode(contract, data)) == again
    assert contract.decode(again) is not None
    typed = TYPED[contract.name]
    assert typed.decode(data).encode() == again


contract_param = pytest.mark.parametrize("contract", contracts.ALL, ids=lambda c: c.name)


def test_every_contract_has_a_typed_record() -> None:
    assert {c.name for c in contracts.ALL} == set(TYPED)


@contract_param
@DECODER_SETTINGS
@given(data=st.data())
def test_a_valid_record_round_trips_and_reads_as_fastavro_reads_it(contract: Contract, data: st.DataObject) -> None:
    message = data.draw(messages(contract))
    record = contract.decode(message)
    assert contract.encode(record) == message
    assert contract.encode(fastavro_decode(contract, message)) == message
    assert TYPED[contract.name].decode(message).encode() == message


@contract_param
@DECODER_SETTINGS
@given(body=st.binary(max_size=200))
def test_random_bytes_after_a_valid_header_never_raise_anything_else(contract: Contract, body: bytes) -> None:
    check_decoding(contract, MAGIC + contract.fingerprint + body)


@contract_param
@DECODER_SETTINGS
@given(data=st.binary(max_size=64))
def test_random_bytes_never_raise_anything_else(contract: Contract, data: bytes) -> None:
    check_decoding(contract, data)


@st.composite
def damaged(draw: st.DrawFn, contract: Contract) -> bytes:
    """A valid message with bytes flipped, cut off or inserted (the header left alone: that has its own tests)."""
    data = bytearray(draw(messages(contract)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(HEADER_LEN, max(HEADER_LEN, len(data) - 1)))
        if action == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=9))
    return bytes(data)


@contract_param
@DECODER_SETTINGS
@given(data=st.data())
def test_damaged_messages_never_raise_anything_else(contract: Contract, data: st.DataObject) -> None:
    check_decoding(contract, data.draw(damaged(contract)))


# One field of a hand-built message at a time takes any value its encoding can spell: the
# decoder accepts exactly the values the schema allows and reads them as the writer meant.

FIELD_SETTINGS = settings(max_examples=200, deadline=None)
#: Any long, the small ones around the valid indexes often.
INDEXES = st.one_of(st.integers(-8, 8), st.integers(-(2**63), 2**63 - 1))


def frame_message(**parts: bytes) -> bytes:
    return message(contracts.FRAME, frame_body(**parts))


def decodes(contract: Contract, data: bytes) -> dict[str, Any] | None:
    """The record, or None when the decoder calls the message malformed."""
    try:
        return contract.decode(data)
    except contracts.MalformedMessageError:
        return None


@FIELD_SETTINGS
@given(index=INDEXES)
def test_an_enum_index_decodes_only_to_its_own_symbol(index: int) -> None:
    record = decodes(contracts.FRAME, frame_message(codec=zz(index)))
    symbols = ("pcm16", "mulaw", "alaw")
    assert (record["codec"] if record else None) == (symbols[index] if 0 <= index < len(symbols) else None)


@FIELD_SETTINGS
@given(byte=st.integers(0, 255))
def test_a_boolean_decodes_only_from_0_or_1(byte: int) -> None:
    record = decodes(contracts.FRAME, frame_message(eos=bytes([byte])))
    assert (record["end_of_stream"] if record else None) == {0: False, 1: True}.get(byte)


@FIELD_SETTINGS
@given(index=INDEXES)
def test_a_union_index_decodes_only_to_its_own_branch(index: int) -> None:
    record = decodes(contracts.DEAD_LETTER, message(contracts.DEAD_LETTER, dead_letter_body(zz(index) + string(b"k"))))
    expected = {0: "null", 1: "bytes"}.get(index)
    if expected == "null":  # the null branch reads nothing: the bytes meant for the key are trailing
        assert record is None
    else:
        assert (record["key"] if record else None) == (b"k" if expected else None)


@FIELD_SETTINGS
@given(rate=st.integers(-(2**40), 2**40), seq=st.integers(-(2**70), 2**70))
def test_ints_and_longs_decode_only_within_their_bits(rate: int, seq: int) -> None:
    record = decodes(contracts.FRAME, frame_message(rate=zz(rate), seq=zz(seq)))
    fits = -(2**31) <= rate < 2**31 and -(2**63) <= seq < 2**63
    assert ((record["sample_rate"], record["seq"]) if record else None) == ((rate, seq) if fits else None)


@FIELD_SETTINGS
@given(length=st.integers(-(2**62), 2**62))
def test_a_length_prefix_decodes_only_when_it_is_the_true_length(length: int) -> None:
    record = decodes(contracts.FRAME, frame_message(payload=zz(length) + bytes(160)))
    assert (record is not None) == (length == 160)
