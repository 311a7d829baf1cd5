"""Records from bytes and text, without Beam: file formats (Avro container, CSV, JSON Lines)
as field dicts, and event times from numbers or ISO-8601 text.

Each `records(fmt, data)` item is `(index, fields, error, raw)`: a record's index in the file
and its fields, or an error and the raw bytes it concerns (a dead letter's payload).
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import math

import fastavro
import pandas as pd

FORMATS = ("avro", "csv", "jsonl")


def format_of(path: str, fmt: str | None = None) -> str:
    """The file format, given or from the extension.

    >>> format_of("data/events.avro"), format_of("x.json", "jsonl")
    ('avro', 'jsonl')
    """
    fmt = fmt or {"avro": "avro", "csv": "csv", "jsonl": "jsonl", "json": "jsonl",
                  "ndjson": "jsonl"}.get(path.rsplit(".", 1)[-1].lower())
    if fmt not in FORMATS:
        raise ValueError(f"cannot tell the format of {path!r}: give one of {FORMATS}")
    return fmt


def parse_event_time(value) -> int:
    """Epoch milliseconds from a number (already ms) or ISO-8601 text.

    >>> parse_event_time(1500), parse_event_time("1970-01-01T00:00:02Z")
    (1500, 2000)
    """
    if isinstance(value, bool) or value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"no event time (got {value!r})")
    if isinstance(value, (int, float)):
        return int(value)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"unparseable event time {value!r}") from e
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1_000_000)


def event_time_arg(text: str) -> int:
    """`parse_event_time` for a command-line flag: epoch milliseconds or ISO-8601 text.

    >>> event_time_arg("1500"), event_time_arg("1970-01-01T00:00:02Z")
    (1500, 2000)
    """
    try:
        return parse_event_time(int(text) if text.lstrip("-").isdigit() else text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def required_text(fields: dict, name: str) -> str:
    value = fields.get(name)
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"missing {name!r}")
    return str(value)


def _avro_records(data: bytes):
    try:
        for index, record in enumerate(fastavro.reader(io.BytesIO(data))):
            yield index, record, None, None
    except Exception as e:  # a corrupt block: keep what came before, dead-letter the rest
        yield -1, None, f"corrupt Avro container: {e}", b""


def _jsonl_records(data: bytes):
    index = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            if not isinstance(fields, dict):
                raise ValueError(f"expected a JSON object, got {type(fields).__name__}")
        except ValueError as e:
            yield index, None, f"line {index}: {e}", line
        else:
            yield index, fields, None, line
        index += 1


def _csv_records(data: bytes):
    bad = []
    # The python engine parses floats exactly (round trip) and reports malformed lines.
    frame = pd.read_csv(io.BytesIO(data), engine="python", on_bad_lines=bad.append)
    for index, fields in enumerate(frame.to_dict("records")):
        yield index, fields, None, None
    for line in bad:
        yield -1, None, f"malformed CSV line ({len(line)} fields, header has {len(frame.columns)})", \
            ",".join(line).encode()


_RECORDS = {"avro": _avro_records, "jsonl": _jsonl_records, "csv": _csv_records}


def records(fmt: str, data: bytes):
    """`(index, fields, error, raw)` for each record of a file's bytes in format `fmt`."""
    return _RECORDS[fmt](data)


def avro_records(path: str) -> int:
    """How many records an Avro container file holds, from its block headers (no decoding).

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(suffix=".avro") as f:
    ...     fastavro.writer(f, {"type": "record", "name": "r", "fields": [{"name": "a", "type": "int"}]},
    ...                     [{"a": 1}, {"a": 2}, {"a": 2}]); f.flush()
    ...     avro_records(f.name), avro_values(f.name, "a")
    (3, Counter({2: 2, 1: 1}))
    """
    with open(path, "rb") as f:
        return sum(block.num_records for block in fastavro.block_reader(f))


def avro_values(path: str, field: str) -> collections.Counter:
    """How many records of an Avro container file hold each value of `field` (one pass)."""
    with open(path, "rb") as f:
        return collections.Counter(record.get(field) for record in fastavro.reader(f))
