"""Bounded sources: Avro container files, CSV and JSON Lines, as timestamped rows.

Every source yields `Row`s with their event time as the element timestamp, so everything
downstream is the same code whether the rows came from a file or a stream. Lines that cannot
be parsed, and rows without a usable timestamp, leave through the dead-letter output.
"""
from __future__ import annotations

import json
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io import filesystems

from core.decoding import format_of, parse_event_time, records, required_text
from core.records import DeadLetter, Row
from transforms import coders  # noqa: F401  (registers the record coders)

DEAD_LETTERS = "dead_letters"


class SourceOutputs(NamedTuple):
    rows: beam.PCollection
    dead_letters: beam.PCollection


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
        for index, fields, error, raw in records(self.fmt, data):
            if error is not None:
                yield _dead(path, error, raw)
                continue
            try:
                event_time = (index * 1000 if self.timestamp_field is None
                              else parse_event_time(fields.get(self.timestamp_field)))
                event_id = (f"{index:012d}" if self.id_field is None
                            else required_text(fields, self.id_field))
            except ValueError as e:
                yield _dead(path, f"row {index}: {e}", raw or json.dumps(fields, default=str).encode())
                continue
            yield beam.window.TimestampedValue(Row(event_id, event_time, fields), event_time / 1000)


def _dead(path, reason, raw) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
        stage="ReadRows", reason=reason, payload=raw or b"", source=path))
