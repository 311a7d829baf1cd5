"""Bounded sources: Avro container files, CSV and JSON Lines, as timestamped rows.

Every source yields `Row`s with their event time as the element timestamp, so everything
downstream is the same code whether the rows came from a file or a stream. Lines that cannot
be parsed, and rows without a usable timestamp, leave through the dead-letter output.
"""
from __future__ import annotations

import argparse
import io
import json
import math
from typing import NamedTuple

import apache_beam as beam
import fastavro
import pandas as pd
from apache_beam.io import filesystems

from transforms import coders  # noqa: F401  (registers the record coders)
from transforms.records import DeadLetter, Row

FORMATS = ("avro", "csv", "jsonl")
DEAD_LETTERS = "dead_letters"


class SourceOutputs(NamedTuple):
    rows: beam.PCollection
    dead_letters: beam.PCollection


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


class ReadRows(beam.PTransform):
    """Reads a file as `Row`s in file order.

    Args:
        path: a file path (any Beam filesystem).
        fmt: 'avro', 'csv' or 'jsonl'; None guesses from the extension.
        timestamp_field: field holding the event time (ISO-8601 text, or epoch milliseconds
            as a number); None means event time = row index in seconds, the file order.
        id_field: field holding a unique event id; None means the zero-padded row index.
    """

    def __init__(self, path: str, fmt: str | None = None, timestamp_field: str | None = None,
                 id_field: str | None = None):
        super().__init__()
        self.path, self.fmt = path, format_of(path, fmt)
        self.timestamp_field, self.id_field = timestamp_field, id_field

    def expand(self, pbegin):
        results = (
            pbegin
            | "Path" >> beam.Create([self.path])
            | "Read" >> beam.ParDo(_ReadFileDoFn(self.fmt, self.timestamp_field, self.id_field))
            .with_outputs(DEAD_LETTERS, main="rows")
        )
        return SourceOutputs(results.rows, results[DEAD_LETTERS])


class _ReadFileDoFn(beam.DoFn):
    def __init__(self, fmt, timestamp_field, id_field):
        self.fmt, self.timestamp_field, self.id_field = fmt, timestamp_field, id_field

    def process(self, path):
        with filesystems.FileSystems.open(path) as f:
            data = f.read()
        for index, fields, error, raw in _RECORDS[self.fmt](data):
            if error is not None:
                yield _dead(path, error, raw)
                continue
            try:
                event_time = (index * 1000 if self.timestamp_field is None
                              else parse_event_time(fields.get(self.timestamp_field)))
                event_id = (f"{index:012d}" if self.id_field is None
                            else _required_text(fields, self.id_field))
            except ValueError as e:
                yield _dead(path, f"row {index}: {e}", raw or json.dumps(fields, default=str).encode())
                continue
            yield beam.window.TimestampedValue(Row(event_id, event_time, fields), event_time / 1000)


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


def _required_text(fields: dict, name: str) -> str:
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


def _dead(path, reason, raw) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
        stage="ReadRows", reason=reason, payload=raw or b"", source=path))
