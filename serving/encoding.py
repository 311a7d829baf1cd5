"""Schemaless Avro bytes of the records the server logs, encoded with cavro.

The server encodes what it logs on its event loop, in the request that served it: ten
interaction records for a list of ten. fastavro, which the jobs use and which reads these bytes
everywhere, took 8.4 us for an interaction record, most of it spent choosing the branch of each
of the record's fourteen unions; cavro (a Cython Avro codec) takes 3.7 us for the same bytes.
The bytes are fastavro's to the bit: `tests/test_encoding.py` checks it on records drawn from
each schema of the project.

>>> encode = record_encoder("dead_letter")
>>> from core.kafka import decode
>>> decode(encode({"stage": "s", "reason": "r", "payload": b"x"}), "dead_letter")["reason"]
'r'
>>> encode({"stage": "s"})
Traceback (most recent call last):
...
ValueError: does not fit the dead_letter schema: ...
"""
from __future__ import annotations

import functools
from typing import Callable

import cavro

from core.kafka import schema_text

# fastavro's leniency, so that what fastavro encodes is encoded here, the same: a nullable field
# left out of a record is null, whether or not the schema gives it a default.
OPTIONS = cavro.DEFAULT_OPTIONS.replace(missing_values_can_be_null=True)


@functools.lru_cache(maxsize=None)
def record_encoder(schema: str) -> Callable[[dict], bytes]:
    """record -> its schemaless Avro bytes under the project's schema `schemas/<schema>.avsc`;
    a ValueError for a record that does not fit it. Stricter than fastavro there: a long out of
    range is a ValueError (fastavro: an OverflowError), and so is a float for a long (fastavro
    writes it truncated)."""
    encode = cavro.Schema(schema_text(schema), options=OPTIONS).binary_encode

    def encoded(record: dict) -> bytes:
        try:
            return encode(record)
        except (ValueError, TypeError, KeyError, cavro.CavroException) as e:  # KeyError: not a symbol of the enum
            raise ValueError(f"does not fit the {schema} schema: {e}") from None

    return encoded
