"""Writes records as JSON Lines or Avro files (schemas from `schemas/`)."""
from __future__ import annotations

import base64
import json

import apache_beam as beam

import schemas

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
        dicts = records | "ToAvro" >> beam.Map(lambda r: r.to_avro())
        if self.fmt == "avro":
            return dicts | "WriteAvro" >> beam.io.WriteToAvro(
                self.path, schema=schemas.load(self.schema), file_name_suffix=".avro",
                num_shards=1, shard_name_template="")
        return (
            dicts
            | "ToJson" >> beam.Map(lambda d: json.dumps(d, default=_bytes_as_base64, sort_keys=True))
            | "WriteJsonl" >> beam.io.WriteToText(
                self.path, file_name_suffix=".jsonl", num_shards=1, shard_name_template="")
        )


def _bytes_as_base64(value):
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
