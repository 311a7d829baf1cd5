"""The data lake: tables of files under a root (a local folder, or `s3://bucket/prefix` through
Beam's S3 file system), one folder per UTC date of event time, Hive style, so that DuckDB,
Spark or pyarrow read the date as a column:

    ROOT/raw/interactions/date=2026-01-01/served-1a2b3c4d-000.avro     (pipelines.land)
    ROOT/curated/parquet/labelled_impressions/date=2026-01-01/part-00000-of-00001.parquet
    ROOT/curated/avro/labelled_impressions/date=2026-01-01/part-00000-of-00001.avro  (pipelines.curate)

(one folder per format, so that a reader of one never meets the other's files).

`WriteRawPartitions` appends a source's records to the raw table under names derived from the
source, so that landing the same source again replaces its files instead of doubling them.
`WriteDatePartitions` writes whole partitions with Beam's Parquet and Avro sinks into a staging
folder; `replace_partitions` then swaps each staged partition in, once the job has succeeded.

>>> date_of(86_400_000), partition("out/lake", curated("parquet"), "1970-01-02")
('1970-01-02', 'out/lake/curated/parquet/labelled_impressions/date=1970-01-02')
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import re

import apache_beam as beam
import fastavro
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

import schemas
from transforms.shards import shard_of

RAW = "raw/interactions"
CURATED = "labelled_impressions"
FORMATS = ("parquet", "avro")
_DATE = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


def date_of(event_time_ms: int) -> str:
    """The UTC date of an event time, as its partition names it."""
    return datetime.datetime.fromtimestamp(event_time_ms / 1000, datetime.timezone.utc).date().isoformat()


def curated(fmt: str, table: str = CURATED) -> str:
    """The path of a curated table in one format, under the lake's root."""
    return f"curated/{fmt}/{table}"


def partition(root: str, table: str, date: str) -> str:
    return f"{root.rstrip('/')}/{table}/date={date}"


def dates(root: str, table: str) -> list[str]:
    """The dates that have files in `table`, oldest first."""
    found = FileSystems.match([f"{root.rstrip('/')}/{table}/date=*/*"])[0].metadata_list
    return sorted({m.group(1) for m in (_DATE.search(f.path) for f in found) if m})


def files(root: str, table: str, date: str) -> list[str]:
    return sorted(f.path for f in FileSystems.match([partition(root, table, date) + "/*"])[0].metadata_list)


class WriteRawPartitions(beam.PTransform):
    """Interaction `Row`s -> `ROOT/raw/interactions/date=D/<source>-<shard>.avro`, each file in
    (event time, event id) order; outputs `(date, records written)` per file."""

    def __init__(self, root: str, source: str, shards: int = 1):
        super().__init__()
        self.root, self.source, self.shards = root, source, shards

    def expand(self, rows):
        return (rows
                | "ByDateAndShard" >> beam.Map(lambda r, n=self.shards: (
                    (date_of(r.event_time), shard_of(r.event_id, n)), r.fields))
                | "Group" >> beam.GroupByKey()
                | "WriteFiles" >> beam.ParDo(_WriteAvroFileDoFn(self.root, self.source)))


class _WriteAvroFileDoFn(beam.DoFn):
    def __init__(self, root: str, source: str):
        self.root, self.source = root, source

    def process(self, element):
        (date, shard), records = element
        records = sorted(records, key=lambda r: (r["event_time"], r["event_id"]))
        path = f"{partition(self.root, RAW, date)}/{self.source}-{shard:03d}.avro"
        with FileSystems.create(path) as f:  # a retried bundle writes the same name again
            fastavro.writer(f, schemas.load("interaction"), records, codec="deflate")
        yield date, len(records)


class WriteDatePartitions(beam.PTransform):
    """Record dicts -> one partition per date of `dates` (from each record's `event_time`) of the
    curated `table` under `staging`, in each of `formats`; outputs the paths written. A record
    of another date fails the job: the caller picks the dates and filters the records."""

    def __init__(self, staging: str, table: str, schema: str, dates: list[str], formats=FORMATS):
        super().__init__()
        unknown = set(formats) - set(FORMATS)
        if unknown or not formats:
            raise ValueError(f"formats must be some of {FORMATS}, not {sorted(formats)}")
        self.staging, self.table, self.schema, self.dates, self.formats = staging, table, schema, dates, formats

    def expand(self, records):
        index = {d: i for i, d in enumerate(self.dates)}
        parts = records | "ByDate" >> beam.Partition(lambda r, n: index[date_of(r["event_time"])], len(self.dates))
        avro_schema = schemas.load(self.schema)
        sinks = {"parquet": lambda prefix, table=arrow_schema(avro_schema): beam.io.WriteToParquet(
                     prefix, table, file_name_suffix=".parquet"),
                 "avro": lambda prefix: beam.io.WriteToAvro(prefix, avro_schema, file_name_suffix=".avro")}
        written = [part | f"{fmt} {date}" >> sinks[fmt](f"{partition(self.staging, curated(fmt, self.table), date)}/part")
                   for date, part in zip(self.dates, parts) for fmt in self.formats]
        return written | "Written" >> beam.Flatten()


class WriteTally(beam.PTransform):
    """`(key, n)` pairs -> their sums per key, in a small file beside a staging folder, for the
    launcher to report once the job is done (`read_tally`)."""

    def __init__(self, staged: str):
        super().__init__()
        self.staged = staged

    def expand(self, pairs):
        return (pairs
                | "Sum" >> beam.CombinePerKey(sum)
                | "AsJson" >> beam.MapTuple(lambda key, n: json.dumps([key, n]))
                | "Write" >> beam.io.WriteToText(f"{self.staged}.tally", ".jsonl", shard_name_template=""))


def read_tally(staged: str) -> dict:
    """{key: sum} from `WriteTally(staged)`: a key that was a tuple is one again; {} for no pairs."""
    path = f"{staged}.tally.jsonl"
    if not FileSystems.exists(path):
        return {}
    with FileSystems.open(path) as f:
        pairs = [json.loads(line) for line in f.read().decode().splitlines()]
    return {tuple(key) if isinstance(key, list) else key: n for key, n in pairs}


def replace_partitions(staging: str, root: str, tables: list[str], dates: list[str]) -> None:
    """Each staged partition of `tables` replaces the lake's (its old files deleted, the new ones
    moved in); the caller then `discard`s the staging folder. Not atomic across files: a reader during the swap
    may miss a partition's rows, never see them twice."""
    for table in tables:
        for date in dates:
            old, new = files(root, table, date), files(staging, table, date)
            if old:
                FileSystems.delete(old)
            target = partition(root, table, date)
            if FileSystems.get_scheme(target) in (None, "file") and not FileSystems.exists(target):
                FileSystems.mkdirs(target)
            FileSystems.rename(new, [f"{target}/{path.rsplit('/', 1)[1]}" for path in new])


def staging(root: str, name: str) -> str:
    """A job's own folder for files that are not part of the lake yet."""
    return f"{root.rstrip('/')}/_staging/{name}"


def discard(path: str) -> None:
    """Deletes a staging folder with whatever it holds, and the lake's `_staging` folder once
    no job uses it."""
    if FileSystems.get_scheme(path) not in (None, "file"):  # an object store: no folders, only keys
        found = FileSystems.match([f"{path}/*", f"{path}.*"])
        doomed = [f.path for result in found for f in result.metadata_list]
        if doomed:
            FileSystems.delete(doomed)
        return
    for one in (path, *glob.glob(f"{path}.*")):
        if os.path.exists(one):
            FileSystems.delete([one])
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "_staging" and os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)


def arrow_schema(avro_schema: dict) -> pa.Schema:
    """The Parquet (Arrow) schema of a flat Avro record schema of primitives, optional
    primitives, arrays of strings and maps of doubles."""
    return pa.schema([pa.field(f["name"], _arrow_type(f["type"]), nullable=_nullable(f["type"]))
                      for f in avro_schema["fields"]])


_PRIMITIVES = {"string": pa.string(), "long": pa.int64(), "int": pa.int32(), "double": pa.float64(),
               "boolean": pa.bool_()}


def _arrow_type(avro_type):
    if isinstance(avro_type, list):
        (inner,) = [t for t in avro_type if t != "null"]
        return _arrow_type(inner)
    if isinstance(avro_type, dict):
        if avro_type["type"] == "array":
            return pa.list_(_arrow_type(avro_type["items"]))
        if avro_type["type"] == "map":
            return pa.map_(pa.string(), _arrow_type(avro_type["values"]))
        return _arrow_type(avro_type["type"])
    return _PRIMITIVES[avro_type]


def _nullable(avro_type) -> bool:
    return isinstance(avro_type, list) and "null" in avro_type
