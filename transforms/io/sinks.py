"""Writes records as JSON Lines or Avro files (schemas from `schemas/`).

One file per output, written once the input is complete (the end of the global window: in
streaming, when the watermark passes the end of a bounded stream), in two steps that keep memory
bounded whatever the output's size:

1. each bundle writes its records to a part file of its own, where it runs, and passes on only
   the part's path;
2. once the input is complete, one worker concatenates the parts into the output file byte by
   byte (a temporary file beside it, then a rename) and deletes them.

Avro parts share their header (schema, codec, sync marker), so a part's blocks move into the
output as they are, without decoding. A part of a failed bundle is never listed and goes with
the parts' directory. Not with Beam's `WriteToText(num_shards=1)`: its keyed bundle writer stamps
its results at MAX_TIMESTAMP, past the end of the global window, and Flink's runner rejects them
in streaming ("TimestampCombiner moved element from TIMESTAMP_MAX_VALUE to earlier time ... (end
of global window)").
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import uuid

import apache_beam as beam
import fastavro
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.windowed_value import WindowedValue

import schemas
from transforms.tempfiles import delete_folder

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
        output = f"{self.path}.{self.fmt}"
        # Named once, where the pipeline is built, so that every worker writes beside the others.
        part_format = PartFormat(self.fmt, self.schema, parts_dir=f"{output}.parts-{uuid.uuid4().hex}")
        parts = (records
                 | "WriteParts" >> beam.ParDo(_WritePartsDoFn(part_format))
                 | "AllWindows" >> beam.WindowInto(beam.window.GlobalWindows()))
        return (records.pipeline
                | "Once" >> beam.Create([None])
                | "Concatenate" >> beam.FlatMap(_concatenate, output, part_format, beam.pvalue.AsList(parts)))


class PartFormat:
    """How the parts of one output are written: where, and with which header.

    >>> import tempfile
    >>> parts = PartFormat("avro", "metric", parts_dir=tempfile.mkdtemp())
    >>> parts.header() == parts.header()  # a sync marker shared by all parts
    True
    """

    def __init__(self, fmt: str, schema: str, parts_dir: str):
        self.fmt, self.schema, self.parts_dir = fmt, schema, parts_dir
        self.sync_marker = os.urandom(16)

    def open(self, f):
        """A writer of records into the open binary file `f`: `(write(record), close())`."""
        if self.fmt == "jsonl":
            return (lambda record: f.write(_json_line(record).encode() + b"\n")), f.close

        writer = fastavro.write.Writer(f, schemas.load(self.schema), codec="deflate", sync_marker=self.sync_marker)

        def close():
            writer.flush()
            f.close()
        return (lambda record: writer.write(record.to_avro())), close

    def header(self) -> bytes:
        """What every part starts with: an Avro container's header; nothing for JSON Lines."""
        if self.fmt == "jsonl":
            return b""
        f = io.BytesIO()
        fastavro.writer(f, schemas.load(self.schema), [], codec="deflate", sync_marker=self.sync_marker)
        return f.getvalue()


class _WritePartsDoFn(beam.DoFn):
    """Records -> `(earliest timestamp, path)` of each bundle's part, stamped at that timestamp."""

    def __init__(self, part_format: PartFormat):
        self.part_format = part_format

    def start_bundle(self):
        self._part = None  # [path, write, close, earliest timestamp, a window]

    def process(self, record, wv=beam.DoFn.WindowedValueParam):
        if self._part is None:
            path = FileSystems.join(self.part_format.parts_dir, f"part-{uuid.uuid4().hex}")
            write, close = self.part_format.open(FileSystems.create(path))
            self._part = [path, write, close, wv.timestamp, wv.windows[0]]
        elif wv.timestamp < self._part[3]:
            self._part[3] = wv.timestamp
        self._part[1](record)

    def finish_bundle(self):
        if self._part is not None:
            path, _, close, timestamp, window = self._part
            close()
            self._part = None
            # Any one of the bundle's windows will do: the path is moved to the global window next.
            yield WindowedValue((timestamp.micros, path), timestamp, (window,))


def _concatenate(_, output: str, part_format: PartFormat, parts: list):
    """Concatenates the parts `[(earliest timestamp, path)]`, earliest first, into `output` through
    a temporary file beside it and deletes them; yields `output`."""
    header = part_format.header()
    tmp = f"{output}.tmp-{os.getpid()}"
    with FileSystems.create(tmp) as out:
        out.write(header)
        for _, path in sorted(set(parts)):
            with FileSystems.open(path) as part:
                if part.read(len(header)) != header:
                    raise IOError(f"{path}: not a part of {output} (its header differs)")
                shutil.copyfileobj(part, out, 1 << 20)
    if FileSystems.exists(output):
        FileSystems.delete([output])
    FileSystems.rename([tmp], [output])
    delete_folder(part_format.parts_dir)
    yield output



def _json_line(record) -> str:
    return json.dumps(record.to_avro(), default=_bytes_as_base64, sort_keys=True)


def _bytes_as_base64(value):
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
