"""Our single-object messages against the Apache Avro reference library and the spec.

A consumer with its own tools (Java ``BinaryMessageDecoder``, Apache avro for Python/Rust)
must recognise the header and decode the body; and what such a producer writes, we read.
"""

from __future__ import annotations

import io

import avro.io
import avro.schema
import pytest

from pipeline import contracts
from pipeline.contracts.codec import SCHEMA_DIR

WORDS = (
    contracts.Word(word="turn", start_ms=200.0, end_ms=420.0, confidence=0.75),
    contracts.Word(word="off", start_ms=1020.0, end_ms=1300.0, confidence=0.5),
)

#: One record per schema, exercising every field type (exactly representable floats: Word.confidence is 32-bit).
SAMPLES = {
    "audio_frame": contracts.AudioFrame(
        session_id="call-1",
        seq=7,
        capture_ts_ms=1_700_000_000_123.5,
        codec="mulaw",
        sample_rate=8000,
        payload=bytes(range(160)),
        sent_ts_ms=1_700_000_000_150.25,
    ),
    "hop": contracts.Hop(
        session_id="call-1",
        hop_seq=3,
        first_capture_ts_ms=1_700_000_000_000.0,
        ready_ts_ms=1_700_000_000_160.0,
        published_ts_ms=1_700_000_000_162.5,
        sample_rate=16000,
        audio=b"\x01\x00" * 320,
        window_start_sample=-5120,
        window_secs=0.96,
        gap_frames=1,
        duplicate_frames=0,
        is_final=True,
        control_level=2,
    ),
    "hypothesis": contracts.Hypothesis(
        session_id="call-1",
        hop_seq=3,
        text="turn off",
        words=WORDS,
        confidence=0.625,
        window_start_ms=0.0,
        window_end_ms=1280.0,
        is_final=False,
        beam=4,
        window_secs=1.28,
        batch_size=8,
        worker_id="w-1",
        first_capture_ts_ms=1.0,
        ready_ts_ms=2.0,
        hop_published_ts_ms=3.0,
        received_ts_ms=4.0,
        batch_closed_ts_ms=5.0,
        infer_start_ts_ms=6.0,
        infer_end_ts_ms=7.0,
        skipped_before=2,
    ),
    "transcript": contracts.Transcript(
        session_id="call-1",
        kind="final",
        segment=1,
        text="turn off",
        committed_text="turn off",
        tail_text="",
        words=WORDS,
        hop_seq=16,
        first_capture_ts_ms=1_700_000_002_560.0,
        published_ts_ms=1_700_000_003_001.0,
    ),
    "latency_event": contracts.LatencyEvent(
        session_id="call-1",
        hop_seq=3,
        worker_id="w-1",
        event_ts_ms=1_700_000_000_500.0,
        hop_buffer_ms=160.0,
        net_ms=2.5,
        queue_wait_ms=-0.25,
        batch_wait_ms=10.0,
        gpu_infer_ms=30.0,
        post_ms=5.0,
        e2e_ms=207.25,
        batch_size=8,
        beam=4,
        window_secs=1.28,
        control_level=0,
        emitted=True,
    ),
    "control_command": contracts.ControlCommand(
        scope="global",
        seq=12,
        level=3,
        emit_interval_ms=320,
        window_secs=0.96,
        beam=2,
        admit_new_sessions=True,
        reason="queue_wait p95 above 200 ms",
        metrics={"queue_wait_ms_p95": 215.5, "events": 40.0},
        issued_ts_ms=1_700_000_000_000.0,
    ),
    "dead_letter": contracts.DeadLetter(
        source_topic="hopline.hops",
        partition=2,
        offset=41,
        value=b"\x00garbage",
        reason="not an Avro single-object message",
        error_type="MalformedMessageError",
        service="worker",
        failed_ts_ms=1_700_000_000_000.0,
    ),
    "broker_probe": contracts.BrokerProbe(
        prober="controller-host-7-a1b2c3",
        seq=42,
        sent_ts_ms=1_700_000_000_000.5,
        previous_rtt_ms=6.25,
        lookup_ms=-1.0,
    ),
    "worker_capabilities": contracts.WorkerCapabilities(
        worker_id="gpu-node-3:4121",
        device="cuda:0",
        measured_ts_ms=1_700_000_000_000.25,
        batch_size=8,
        base_batch_ms=12.5,
        savings={"window": 0.25, "beam2": 0.125, "greedy": 0.375, "int8": 0.0},
        tiers=("full",),
    ),
}

CONTRACTS = {contract.name: contract for contract in contracts.ALL}

#: CRC-64-AVRO as the Avro specification ("Schema Fingerprints") writes it.
EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp)
    return table


TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    fp = EMPTY
    for byte in data:
        fp = (fp >> 8) ^ TABLE[(fp ^ byte) & 0xFF]
    return fp


def reference_schema(name: str) -> avro.schema.Schema:
    return avro.schema.parse((SCHEMA_DIR / f"{name}.avsc").read_text())


def test_every_schema_has_a_sample_and_the_samples_use_their_own_contract() -> None:
    assert sorted(SAMPLES) == sorted(path.stem for path in SCHEMA_DIR.glob("*.avsc")) == sorted(CONTRACTS)
    assert all(sample.contract is CONTRACTS[name] for name, sample in SAMPLES.items())


def test_spec_algorithm_agrees_with_the_reference_library_on_a_primitive() -> None:
    assert crc64_avro(b'"int"').to_bytes(8, "little") == avro.schema.parse('"int"').fingerprint("CRC-64-AVRO")


def test_transcript_header_is_the_known_vector() -> None:
    assert contracts.TRANSCRIPT.fingerprint.hex() == "f7c801019d400876"
    assert SAMPLES["transcript"].encode()[:10].hex() == "c301f7c801019d400876"


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_header_fingerprint_matches_the_reference_library_and_the_spec(name: str) -> None:
    schema = reference_schema(name)
    header = SAMPLES[name].encode()[:10]
    assert header[:2] == b"\xc3\x01"
    assert header[2:] == schema.fingerprint("CRC-64-AVRO")
    assert header[2:] == crc64_avro(schema.canonical_form.encode()).to_bytes(8, "little")


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_reference_library_decodes_what_we_encode(name: str) -> None:
    schema = reference_schema(name)
    data = SAMPLES[name].encode()
    assert data[2:10] == schema.fingerprint("CRC-64-AVRO")
    body = io.BytesIO(data[10:])
    decoded = avro.io.DatumReader(schema, schema).read(avro.io.BinaryDecoder(body))
    assert body.tell() == len(data) - 10
    assert decoded == SAMPLES[name].to_avro()


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_we_decode_what_the_reference_library_encodes(name: str) -> None:
    schema = reference_schema(name)
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(SAMPLES[name].to_avro(), avro.io.BinaryEncoder(body))
    data = b"\xc3\x01" + crc64_avro(schema.canonical_form.encode()).to_bytes(8, "little") + body.getvalue()
    assert CONTRACTS[name].decode(data) == SAMPLES[name].to_avro()
    assert type(SAMPLES[name]).decode(data) == SAMPLES[name]


def test_a_message_with_the_old_byte_reversed_fingerprint_is_an_unknown_schema() -> None:
    data = SAMPLES["transcript"].encode()
    reversed_header = data[:2] + data[2:10][::-1] + data[10:]
    with pytest.raises(contracts.UnknownSchemaError, match="unknown fingerprint"):
        contracts.Transcript.decode(reversed_header)
