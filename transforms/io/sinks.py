"""Writes records as JSON Lines or Avro files (schemas from `schemas/`).

One file per output, written once the input is complete (the end of the global window: in
streaming, when the watermark passes the end of a bounded stream). Not with Beam's
`WriteToText(num_shards=1)`: its keyed bundle writer stamps its results at MAX_TIMESTAMP, past
the end of the global window, and Flink's runner rejects them in streaming ("TimestampCombiner
moved element from TIMESTAMP_MAX_VALUE to earlier time ... (end of global window)").
"""
from __future__ import annotations

import base64
import json
import os

import apache_beam as beam
import fastavro
from apache_beam.io.filesystems import FileSystems

import schemas
from transforms.chunks import ChunkPerKey, flatten

FORMATS = ("jsonl", "avro")


class WriteRecords(beam.PTransform):
    """Writes records with a `to_avro()` method to one file `path` (`.jsonl` or `.avro`).

    Args:
        path: the output file, without extension.
        schema: name of the Avro schema in `schemas/`.
        fmt: 'jsonl' (bytes as base64 text) or 'avro'.
    """

    def __init__(self, path: str, schema: str, fmt: str = "jsonl"):
        super().__init__()
        if fmt not in FORMATS:
            raise ValueError(f"output format must be one of {FORMATS}, not {fmt!r}")
        self.path, self.schema, self.fmt = path, schema, fmt

    def expand(self, records):
        encode = _json_line if self.fmt == "jsonl" else _avro_record
        everything = (records
                      | "Encode" >> beam.Map(lambda r: (None, encode(r)))
                      | "Chunk" >> ChunkPerKey(windowfn=beam.window.GlobalWindows()))
        return (records.pipeline
                | "Once" >> beam.Create([None])
                | "WriteFile" >> beam.FlatMap(_write_file, f"{self.path}.{self.fmt}", self.fmt,
                                              self.schema, beam.pvalue.AsIter(everything)))


def _json_line(record) -> str:
    return json.dumps(record.to_avro(), default=_bytes_as_base64, sort_keys=True)


def _avro_record(record) -> dict:
    return record.to_avro()


def _write_file(_, path: str, fmt: str, schema: str, chunks):
    """Writes all records (chunks of them) to `path` through a temporary file beside it;
    yields the path."""
    records = flatten(chunk for _, chunk in chunks)
    tmp = f"{path}.tmp-{os.getpid()}"
    with FileSystems.create(tmp) as f:
        if fmt == "avro":
            fastavro.writer(f, fastavro.parse_schema(schemas.load(schema)), records, codec="deflate")
        else:
            for line in records:
                f.write(line.encode() + b"\n")
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    yield path


def _bytes_as_base64(value):
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
