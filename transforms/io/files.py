"""Bounded sources: Avro container files, CSV and JSON Lines, as timestamped rows.

Every source yields `Row`s with their event time as the element timestamp, so everything
downstream is the same code whether the rows came from a file or a stream. Lines that cannot
be parsed, Avro blocks that cannot be decoded (with their bytes), and rows without a usable
timestamp leave through the dead-letter output.

An Avro file of any size is read in bounded memory: a first pass over its block headers
(`core.avro.split`, no decompression) cuts it into ranges of whole blocks that know their
first row index, the ranges are spread over workers (`Reshuffle`), and each is decoded one
block at a time. A file that is not a readable Avro container at all fails the job at
construction (`core.avro.UnreadableAvroFile`, a `ValueError`), when it is a local file.
"""
from __future__ import annotations

import datetime
import json
from typing import NamedTuple

import apache_beam as beam
import fastavro
from apache_beam.io import fileio, filesystems

from core import avro
from core.decoding import format_of, parse_event_time, records, required_text
from core.records import DeadLetter, Row
from transforms import coders  # noqa: F401  (registers the record coders)

DEAD_LETTERS = "dead_letters"
BYTES_PER_RANGE = 64 << 20  # a range per 64 MiB of blocks: enough to keep workers busy
UNCOMPRESSED = filesystems.CompressionTypes.UNCOMPRESSED  # Avro compresses inside its blocks


class SourceOutputs(NamedTuple):
    rows: beam.PCollection
    dead_letters: beam.PCollection


class ReadRows(beam.PTransform):
    """Reads a file as `Row`s in file order.

    Args:
        path: a file path or glob (any Beam filesystem); for Avro also a list of them.
        fmt: 'avro', 'csv' or 'jsonl'; None guesses from the extension.
        timestamp_field: field holding the event time (ISO-8601 text, epoch milliseconds as
            a number, or an Avro timestamp-millis / timestamp-micros, which the row then
            holds as epoch milliseconds); None means event time = row index in seconds, the
            file order.
        id_field: field holding a unique event id; None means the zero-padded row index.
        reader_schema: for Avro, the schema the rows should have (e.g.
            `schemas.load("interaction")`): each file's records are resolved from the schema
            they were written with (extra fields dropped, missing ones given their default,
            any field order, any record name); None keeps the writer's fields.
        bytes_per_range: Avro files are decoded in ranges of whole blocks of about this size.
    """

    def __init__(self, path: str | list[str], fmt: str | None = None, timestamp_field: str | None = None,
                 id_field: str | None = None, reader_schema: dict | None = None,
                 bytes_per_range: int = BYTES_PER_RANGE):
        super().__init__()
        self.paths = [path] if isinstance(path, str) else list(path)
        if not self.paths or (len(self.paths) > 1 and format_of(self.paths[0], fmt) != "avro"):
            raise ValueError(f"expected one path, or a list of Avro paths, not {path!r}")
        self.path, self.fmt = self.paths[0], format_of(self.paths[0], fmt)
        self.timestamp_field, self.id_field = timestamp_field, id_field
        if reader_schema is not None and self.fmt != "avro":
            raise ValueError(f"a reader schema is for Avro files, not {self.fmt} ({path})")
        self.reader_schema = None if reader_schema is None else fastavro.parse_schema(reader_schema)
        self.bytes_per_range = bytes_per_range
        for one in self.paths if self.fmt == "avro" else ():
            if _local_file(one):
                with open(one.removeprefix("file://"), "rb") as f:  # fail now, in one line, not in a worker
                    avro.read_header(f, one)

    def expand(self, pbegin):
        if self.fmt == "avro":
            results = (
                pbegin
                | "Paths" >> beam.Create(self.paths)
                | "Match" >> fileio.MatchAll()
                | "Open" >> fileio.ReadMatches(compression=UNCOMPRESSED)
                | "Split" >> beam.FlatMap(_split, self.bytes_per_range)
                | "Spread" >> beam.Reshuffle()
                | "Decode" >> beam.ParDo(_DecodeRangeDoFn(self.reader_schema, self.timestamp_field,
                                                          self.id_field))
                .with_outputs(DEAD_LETTERS, main="rows")
            )
        else:
            results = (
                pbegin
                | "Path" >> beam.Create([self.path])
                | "Read" >> beam.ParDo(_ReadFileDoFn(self.fmt, self.timestamp_field, self.id_field))
                .with_outputs(DEAD_LETTERS, main="rows")
            )
        return SourceOutputs(results.rows, results[DEAD_LETTERS])


def _local_file(path: str) -> bool:
    """A path of the local filesystem, not a glob."""
    return filesystems.FileSystems.get_scheme(path) in (None, "file") and not any(c in path for c in "*?[")


def _split(readable: fileio.ReadableFile, bytes_per_range: int):
    """`(path, core.avro.Range)` per range of whole blocks of an Avro file."""
    path = readable.metadata.path
    with readable.open() as f:
        for span in avro.split(f, avro.read_header(f, path), bytes_per_range):
            yield path, span


class _DecodeRangeDoFn(beam.DoFn):
    def __init__(self, reader_schema, timestamp_field, id_field):
        self.reader_schema, self.timestamp_field, self.id_field = reader_schema, timestamp_field, id_field

    def process(self, element):
        path, span = element
        with filesystems.FileSystems.open(path, compression_type=UNCOMPRESSED) as f:
            header = avro.read_header(f, path)
            yield from _rows(path, avro.records(f, header, span, self.reader_schema),
                             self.timestamp_field, self.id_field)


class _ReadFileDoFn(beam.DoFn):
    def __init__(self, fmt, timestamp_field, id_field):
        self.fmt, self.timestamp_field, self.id_field = fmt, timestamp_field, id_field

    def process(self, path):
        with filesystems.FileSystems.open(path) as f:
            data = f.read()
        yield from _rows(path, records(self.fmt, data), self.timestamp_field, self.id_field)


def _rows(path, items, timestamp_field, id_field):
    """Timestamped `Row`s, or dead letters, from `(index, fields, error, raw)` items."""
    for index, fields, error, raw in items:
        if error is not None:
            yield _dead(path, error, raw)
            continue
        try:
            event_time = (index * 1000 if timestamp_field is None
                          else parse_event_time(fields.get(timestamp_field)))
            event_id = f"{index:012d}" if id_field is None else required_text(fields, id_field)
        except ValueError as e:
            yield _dead(path, f"row {index}: {e}", raw or json.dumps(fields, default=str).encode())
            continue
        if isinstance(fields.get(timestamp_field), datetime.datetime):
            # An Avro timestamp logical type: rows hold event times as epoch ms, as the
            # project's records (and their validation) do.
            fields = {**fields, timestamp_field: event_time}
        yield beam.window.TimestampedValue(Row(event_id, event_time, fields), event_time / 1000)


def _dead(path, reason, raw) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
        stage="ReadRows", reason=reason, payload=raw or b"", source=path))
