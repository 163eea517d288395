"""Topic contracts: the Avro schemas in ``schemas/`` and their single-object encoding.

Every message starts with the Avro single-object header (``C3 01`` + the CRC-64-AVRO
fingerprint of the writer schema's canonical form, little-endian), so a reader can tell
which schema wrote it and reject anything else with a typed error instead of garbage.

Bodies are untrusted, so they are read by a strict reader of our own (fastavro's is lenient:
a negative enum index picks a symbol from the end, a boolean byte of 2 reads as true): every
enum and union index must name a symbol or branch, booleans are 0 or 1, ints and longs fit
32 and 64 bits, and no length or item count may promise more than the bytes left, so a
hostile message is rejected before anything is allocated for it.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8

#: Longest ``session_id`` (UTF-8 bytes) any contract carries: ids are Kafka keys and state keys,
#: and an unbounded one makes every record about its session, dead letters included, unbounded.
#: Room for the gateway's ``<tenant>/<call id>`` (up to 128 + 1 + 128 bytes) and more.
MAX_SESSION_ID_BYTES = 512
#: Longest ``worker_id``: a Kafka key of the capabilities topic and a label on every hypothesis.
MAX_WORKER_ID_BYTES = 256
#: String fields with a byte limit, by name, in every contract that has one (checked on encode and decode).
_FIELD_LIMITS = {"session_id": MAX_SESSION_ID_BYTES, "worker_id": MAX_WORKER_ID_BYTES}

Record = dict[str, Any]


class ContractError(ValueError):
    """A message does not match the contract it was read with."""


class MalformedMessageError(ContractError):
    """Not a single-object-encoded Avro message, or its body does not decode."""


class UnknownSchemaError(ContractError):
    """Well-formed header, but the fingerprint names a schema this reader does not expect."""


class _BodyError(Exception):
    """Why a body does not decode; each enclosing record field prefixes its name on the way out."""


#: Reads one value at a position of the message, returning it and the position after it.
_Read = Callable[[bytes, int], tuple[Any, int]]

_unpack_double = struct.Struct("<d").unpack_from
_unpack_float = struct.Struct("<f").unpack_from


def _varint(data: bytes, pos: int, bits: int, kind: str) -> tuple[int, int]:
    """The zig-zag varint at ``pos``, which must fit ``bits`` bits (and so (bits + 6) // 7 bytes)."""
    max_bytes = (bits + 6) // 7
    n = shift = 0
    end = pos + max_bytes
    while True:
        if pos == end:
            raise _BodyError(f"varint longer than {max_bytes} bytes of a {kind}")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    value = (n >> 1) ^ -(n & 1)
    if n >> bits:
        raise _BodyError(f"{value} outside a {kind}")
    return value, pos


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:  # the common case, inlined: one byte
        return (byte >> 1) ^ -(byte & 1), pos + 1
    return _varint(data, pos, 64, "64-bit long")


def _read_int(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    return _varint(data, pos, 32, "32-bit int")


def _read_double(data: bytes, pos: int) -> tuple[float, int]:
    return _unpack_double(data, pos)[0], pos + 8


def _read_float(data: bytes, pos: int) -> tuple[float, int]:
    return _unpack_float(data, pos)[0], pos + 4


def _read_boolean(data: bytes, pos: int) -> tuple[bool, int]:
    byte = data[pos]
    if byte > 1:
        raise _BodyError(f"boolean byte {byte:#04x} is neither 0 nor 1")
    return byte == 1, pos + 1


def _read_null(data: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def _span(data: bytes, pos: int, limit: int | None) -> tuple[int, int]:
    """The (start, end) of a length-prefixed string or bytes value, checked before anything is read."""
    size, pos = _read_long(data, pos)
    if size < 0:
        raise _BodyError(f"length {size} is negative")
    if limit is not None and size > limit:
        raise _BodyError(f"length {size} over the limit of {limit} bytes")
    if size > len(data) - pos:
        raise _BodyError(f"length {size} but the body ends early, {len(data) - pos} bytes left")
    return pos, pos + size


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    start, end = _span(data, pos, None)
    return data[start:end], end


def _string_reader(limit: int | None) -> _Read:
    def read(data: bytes, pos: int) -> tuple[str, int]:
        start, end = _span(data, pos, limit)
        try:
            return data[start:end].decode(), end
        except UnicodeDecodeError as exc:
            raise _BodyError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None

    return read


def _enum_reader(symbols: tuple[str, ...]) -> _Read:
    def read(data: bytes, pos: int) -> tuple[str, int]:
        index, pos = _read_long(data, pos)
        if not 0 <= index < len(symbols):
            raise _BodyError(f"enum index {index} outside 0..{len(symbols) - 1}")
        return symbols[index], pos

    return read


def _union_reader(branches: tuple[_Read, ...]) -> _Read:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        index, pos = _read_long(data, pos)
        if not 0 <= index < len(branches):
            raise _BodyError(f"union index {index} outside 0..{len(branches) - 1}")
        return branches[index](data, pos)

    return read


def _block(data: bytes, pos: int, min_size: int, noun: str) -> tuple[int, int | None, int]:
    """An array or map block header: (item count, end of the block if it states its size, position)."""
    count, pos = _read_long(data, pos)
    end = None
    if count < 0:  # a negative count is followed by the block's size in bytes
        count = -count
        size, pos = _read_long(data, pos)
        if size < 0:
            raise _BodyError(f"block size {size} is negative")
        end = pos + size
    if count * min_size > len(data) - pos:
        raise _BodyError(f"{count} {noun} cannot fit in the {len(data) - pos} bytes left")
    return count, end, pos


def _check_block_end(pos: int, end: int | None, count: int, noun: str) -> None:
    if end is not None and pos != end:
        raise _BodyError(f"block of {count} {noun} ends at byte {pos}, its header says {end}")


def _array_reader(read_item: _Read, min_size: int) -> _Read:
    def read(data: bytes, pos: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        while True:
            count, end, pos = _block(data, pos, min_size, "items")
            if not count:
                return items, pos
            for _ in range(count):
                item, pos = read_item(data, pos)
                items.append(item)
            _check_block_end(pos, end, count, "items")

    return read


def _map_reader(read_value: _Read, min_size: int) -> _Read:
    read_key = _string_reader(None)

    def read(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
        entries: dict[str, Any] = {}
        while True:
            count, end, pos = _block(data, pos, min_size, "entries")
            if not count:
                return entries, pos
            for _ in range(count):
                key, pos = read_key(data, pos)
                entries[key], pos = read_value(data, pos)
            _check_block_end(pos, end, count, "entries")

    return read


def _record_reader(fields: tuple[tuple[str, _Read], ...]) -> _Read:
    def read(data: bytes, pos: int) -> tuple[Record, int]:
        record: Record = {}
        for name, read_field in fields:
            try:
                record[name], pos = read_field(data, pos)
            except _BodyError as exc:
                raise _BodyError(f"{name}: {exc}") from None
            except (IndexError, struct.error):
                raise _BodyError(f"{name}: body ends early") from None
        return record, pos

    return read


_PRIMITIVES: dict[str, tuple[_Read, int]] = {
    "null": (_read_null, 0),
    "boolean": (_read_boolean, 1),
    "int": (_read_int, 1),
    "long": (_read_long, 1),
    "float": (_read_float, 4),
    "double": (_read_double, 8),
    "bytes": (_read_bytes, 1),
    "string": (_string_reader(None), 1),
}


def _compile(schema: Any) -> tuple[_Read, int]:
    """A strict reader for a parsed schema, and the fewest bytes a value of it takes.

    Only what our schemas use is supported; anything else (fixed, logical types, a named
    type used twice) fails here, when the contract loads, not on a message.
    """
    if isinstance(schema, list):
        branches = [_compile(branch) for branch in schema]
        return _union_reader(tuple(r for r, _ in branches)), 1 + min(size for _, size in branches)
    if isinstance(schema, str) and schema in _PRIMITIVES:
        return _PRIMITIVES[schema]
    kind = schema.get("type") if isinstance(schema, dict) and "logicalType" not in schema else None
    if kind == "record":
        fields = []
        for f in schema["fields"]:
            limit = _FIELD_LIMITS.get(f["name"])
            read, size = (_string_reader(limit), 1) if limit and f["type"] == "string" else _compile(f["type"])
            fields.append((f["name"], read, size))
        return _record_reader(tuple((name, read) for name, read, _ in fields)), sum(size for *_, size in fields)
    if kind == "enum":
        return _enum_reader(tuple(schema["symbols"])), 1
    if kind in ("array", "map"):
        read_item, size = _compile(schema["items"] if kind == "array" else schema["values"])
        if kind == "map":
            return _map_reader(read_item, size + 1), 1
        if not size:
            raise ValueError(f"unsupported Avro array of zero-size items: {schema!r}")
        return _array_reader(read_item, size), 1
    raise ValueError(f"unsupported Avro type: {schema!r}")


@dataclass(frozen=True)
class Contract:
    """One topic's schema, able to encode and strictly decode its messages."""

    name: str
    schema: Any
    fingerprint: bytes
    read: _Read = field(repr=False, compare=False)
    #: (field, most UTF-8 bytes) of this contract's top-level string fields with a limit.
    limits: tuple[tuple[str, int], ...] = ()

    @classmethod
    def load(cls, name: str) -> Contract:
        path = SCHEMA_DIR / f"{name}.avsc"
        schema = json.loads(path.read_text())
        parsed = parse_schema(schema, _write_hint=False)
        canonical = to_parsing_canonical_form(parsed)
        limits = tuple((f["name"], _FIELD_LIMITS[f["name"]]) for f in schema["fields"] if f["name"] in _FIELD_LIMITS)
        # fastavro's hex string is already the little-endian byte order the header carries.
        return cls(
            name=name,
            schema=parsed,
            fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
            read=_compile(parsed)[0],
            limits=limits,
        )

    def encode(self, record: Record) -> bytes:
        for name, limit in self.limits:
            value = record.get(name)
            if isinstance(value, str) and len(encoded := value.encode()) > limit:
                raise ContractError(f"{self.name}: cannot encode record: {name}: {len(encoded)} bytes, at most {limit}")
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
        try:
            record, end = self.read(data, HEADER_LEN)
        except _BodyError as exc:
            raise MalformedMessageError(f"{self.name}: body does not decode: {exc}") from None
        if end != len(data):
            raise MalformedMessageError(f"{self.name}: {len(data) - end} trailing bytes")
        return record


FRAME = Contract.load("audio_frame")
HOP = Contract.load("hop")
HYPOTHESIS = Contract.load("hypothesis")
TRANSCRIPT = Contract.load("transcript")
LATENCY = Contract.load("latency_event")
CONTROL = Contract.load("control_command")
DEAD_LETTER = Contract.load("dead_letter")
PROBE = Contract.load("broker_probe")
CAPABILITIES = Contract.load("worker_capabilities")

ALL = (FRAME, HOP, HYPOTHESIS, TRANSCRIPT, LATENCY, CONTROL, DEAD_LETTER, PROBE, CAPABILITIES)
_NAMES_BY_FINGERPRINT = {c.fingerprint: c.name for c in ALL}
