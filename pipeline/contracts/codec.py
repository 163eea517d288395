"""Topic contracts: the Avro schemas in ``schemas/`` and their single-object encoding.

Every message starts with the Avro single-object header (``C3 01`` + the CRC-64-AVRO
fingerprint of the writer schema's canonical form, little-endian), so a reader can tell
which schema wrote it and reject anything else with a typed error instead of garbage.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8

Record = dict[str, Any]


class ContractError(ValueError):
    """A message does not match the contract it was read with."""


class MalformedMessageError(ContractError):
    """Not a single-object-encoded Avro message, or its body does not decode."""


class UnknownSchemaError(ContractError):
    """Well-formed header, but the fingerprint names a schema this reader does not expect."""


@dataclass(frozen=True)
class Contract:
    """One topic's schema, able to encode and strictly decode its messages."""

    name: str
    schema: Any
    fingerprint: bytes

    @classmethod
    def load(cls, name: str) -> Contract:
        path = SCHEMA_DIR / f"{name}.avsc"
        parsed = parse_schema(json.loads(path.read_text()), _write_hint=False)
        canonical = to_parsing_canonical_form(parsed)
        # fastavro's hex string is already the little-endian byte order the header carries.
        return cls(name=name, schema=parsed, fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")))

    def encode(self, record: Record) -> bytes:
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(self.fingerprint)
        try:
            schemaless_writer(buf, self.schema, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ContractError(f"{self.name}: cannot encode record: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes | None) -> Record:
        if data is None or len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise MalformedMessageError(f"{self.name}: not an Avro single-object message")
        if data[2:HEADER_LEN] != self.fingerprint:
            known = _NAMES_BY_FINGERPRINT.get(data[2:HEADER_LEN])
            detail = f"written with schema {known!r}" if known else f"unknown fingerprint {data[2:10].hex()}"
            raise UnknownSchemaError(f"{self.name}: {detail}")
        body = io.BytesIO(data[HEADER_LEN:])
        try:
            record = schemaless_reader(body, self.schema, None)
        except (EOFError, ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
            raise MalformedMessageError(f"{self.name}: body does not decode: {exc}") from exc
        if body.tell() != len(data) - HEADER_LEN:
            raise MalformedMessageError(f"{self.name}: {len(data) - HEADER_LEN - body.tell()} trailing bytes")
        if not isinstance(record, dict):
            raise MalformedMessageError(f"{self.name}: not a record")
        return record


FRAME = Contract.load("audio_frame")
HOP = Contract.load("hop")
HYPOTHESIS = Contract.load("hypothesis")
TRANSCRIPT = Contract.load("transcript")
LATENCY = Contract.load("latency_event")
CONTROL = Contract.load("control_command")
DEAD_LETTER = Contract.load("dead_letter")
PROBE = Contract.load("broker_probe")

ALL = (FRAME, HOP, HYPOTHESIS, TRANSCRIPT, LATENCY, CONTROL, DEAD_LETTER, PROBE)
_NAMES_BY_FINGERPRINT = {c.fingerprint: c.name for c in ALL}
