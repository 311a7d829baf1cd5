"""Records from bytes and text, without Beam: text formats (CSV, JSON Lines) as field dicts,
and event times from numbers, ISO-8601 text or datetimes. Avro container files are read
block by block (`core.avro`); `avro_records` and `avro_values` summarise one. CSV files
are split into records, each kept with its bytes, before pandas types them (`core.csvfile`).

Each `records(fmt, data)` item is `(index, fields, error, raw)`: a record's index in the file
and its fields, or an error and the raw bytes it concerns (a dead letter's payload).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import math

import pandas as pd

from core import avro, csvfile

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
    """Epoch milliseconds from a number (already ms), ISO-8601 text or a datetime (as Avro's
    timestamp-millis and timestamp-micros decode; naive means UTC).

    >>> parse_event_time(1500), parse_event_time("1970-01-01T00:00:02Z")
    (1500, 2000)
    >>> parse_event_time(datetime.datetime(1970, 1, 1, 0, 0, 3, 999, tzinfo=datetime.timezone.utc))
    3000
    >>> parse_event_time(datetime.time(12, 30))
    Traceback (most recent call last):
    ...
    ValueError: event time 12:30:00 is a time of day without a date
    """
    if isinstance(value, bool) or value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"no event time (got {value!r})")
    if isinstance(value, (int, float)):
        return _in_range(value)
    if isinstance(value, datetime.datetime):
        utc = value if value.tzinfo is not None else value.replace(tzinfo=datetime.timezone.utc)
        return _in_range((utc - _EPOCH) // datetime.timedelta(milliseconds=1))  # exact: no float seconds
    if isinstance(value, datetime.time):  # Avro's time-millis / time-micros
        raise ValueError(f"event time {value} is a time of day without a date")
    try:
        ts = pd.Timestamp(value)
        if ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        return _in_range(ts.value // 1_000_000)
    except (ValueError, TypeError, OverflowError) as e:
        try:  # pandas' nanoseconds end in 1677 and 2262; ISO-8601 goes from year 1 to 9999
            return parse_event_time(datetime.datetime.fromisoformat(value))
        except (ValueError, TypeError):
            raise ValueError(f"unparseable event time {value!r}") from e


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# Years 1 to 9999: what datetimes, ISO-8601 and Beam's timestamps all carry.
MIN_EVENT_TIME_MS, MAX_EVENT_TIME_MS = -62_135_596_800_000, 253_402_300_799_999


def _in_range(ms) -> int:
    if not MIN_EVENT_TIME_MS <= ms <= MAX_EVENT_TIME_MS:  # (also refuses inf; NaN never gets here)
        raise ValueError(f"event time {ms!r} ms is outside years 1-9999")
    return int(ms)


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


def _jsonl_records(data: bytes):
    index = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            if not isinstance(fields, dict):
                raise ValueError(f"expected a JSON object, got {type(fields).__name__}")
        except (ValueError, RecursionError) as e:  # (nesting deeper than the parser goes)
            yield index, None, f"line {index}: {e}", line
        else:
            yield index, fields, None, line
        index += 1


_RECORDS = {"jsonl": _jsonl_records, "csv": csvfile.csv_records}


def records(fmt: str, data: bytes):
    """`(index, fields, error, raw)` for each record of a text file's bytes in format `fmt`."""
    return _RECORDS[fmt](data)


def avro_records(path: str) -> int:
    """How many records an Avro container file's well-framed blocks hold, from their headers
    (no decoding); `core.avro.UnreadableAvroFile` if it cannot be read at all.

    >>> import tempfile, fastavro
    >>> with tempfile.NamedTemporaryFile(suffix=".avro") as f:
    ...     fastavro.writer(f, {"type": "record", "name": "r", "fields": [{"name": "a", "type": "int"}]},
    ...                     [{"a": 1}, {"a": 2}, {"a": 2}]); f.flush()
    ...     avro_records(f.name), avro_values(f.name, "a")
    (3, Counter({2: 2, 1: 1}))
    """
    with open(path, "rb") as f:
        header = avro.read_header(f, path)
        return sum(block.count for block in avro.blocks(f, header) if isinstance(block, avro.Block))


def avro_values(path: str, field: str) -> collections.Counter:
    """How many records of an Avro container file hold each value of `field` (one pass over
    the blocks that decode)."""
    with open(path, "rb") as f:
        header = avro.read_header(f, path)
        return collections.Counter(fields.get(field) for _, fields, error, _ in avro.records(f, header)
                                   if error is None)
