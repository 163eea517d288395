"""The topic contracts: Avro schemas (``schemas/``), their single-object codec and typed records."""

from pipeline.contracts.codec import (
    ALL,
    CONTROL,
    DEAD_LETTER,
    FRAME,
    HOP,
    HYPOTHESIS,
    LATENCY,
    TRANSCRIPT,
    Contract,
    ContractError,
    MalformedMessageError,
    Record,
    UnknownSchemaError,
)

__all__ = [
    "ALL",
    "CONTROL",
    "DEAD_LETTER",
    "FRAME",
    "HOP",
    "HYPOTHESIS",
    "LATENCY",
    "TRANSCRIPT",
    "Contract",
    "ContractError",
    "MalformedMessageError",
    "Record",
    "UnknownSchemaError",
]
