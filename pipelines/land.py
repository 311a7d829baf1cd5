"""Landing: raw interaction events into the data lake's raw table, partitioned by UTC date.

    python -m pipelines.land --events out/recommend/served.avro --lake out/lake
    python -m pipelines.land --events 'history/*.avro' --lake s3://lake/streamml \\
        --s3_endpoint_url http://127.0.0.1:19000 --s3_access_key_id ... --s3_secret_access_key ...

The records land as they came (Avro, `schemas/interaction.avsc`), in
`LAKE/raw/interactions/date=YYYY-MM-DD/<source>-<shard>.avro`. `<source>` is named after
`--events` (or `--source`): landing the same source again (a log that has grown) replaces its
files instead of doubling its records. Records that cannot be decoded go to
`LAKE/dead_letters/land-<source>.jsonl` with their bytes. `python -m pipelines.curate` makes the
training set of record from the raw table.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

import schemas
from pipelines.console import QUIET, ArgumentParser, UserError, add_verbose_flag, main
from pipelines.options import pipeline_options, runner_name
from core.interactions import dead_letter
from transforms.io.files import DEAD_LETTERS, ReadRows
from transforms.io.lake import RAW, WriteRawPartitions, WriteTally, discard, read_tally, staging
from transforms.io.sinks import WriteRecords


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m pipelines.land", description=__doc__.split("\n\n")[0],
                            epilog="Any other flag goes to Beam (e.g. --runner, or --s3_endpoint_url for s3://).")
    parser.add_argument("--events", required=True, action="append",
                        help="Interactions, Avro files: a path or glob (any Beam file system); repeatable.")
    parser.add_argument("--lake", default="out/lake", help="The lake's root: a folder or s3://BUCKET/PREFIX "
                                                           "(default: %(default)s).")
    parser.add_argument("--source", help="Name of the source's files in the lake (default: from --events).")
    parser.add_argument("--shards", type=int, default=1, help="Files per date and source (default: %(default)s).")
    add_verbose_flag(parser)
    args, beam_args = parser.parse_job_args(argv)
    if args.shards < 1:
        parser.error("--shards must be >= 1")
    if args.source is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.source):
        parser.error("--source: letters, digits, '_', '.' and '-' only")
    args.source = args.source or source_name(args.events)
    if "://" not in args.lake:
        args.lake = os.path.abspath(args.lake)
    return args, beam_args


def source_name(events: list[str]) -> str:
    """`<first file's stem>-<hash of the paths>`: the same for the same --events.

    >>> source_name(["s3://logs/served.avro"])
    'served-4d4eece7'
    """
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(events[0]).removesuffix(".avro")) or "events"
    paths = [e if "://" in e else os.path.abspath(e) for e in events]
    return f"{stem}-{hashlib.sha1(json.dumps(paths).encode()).hexdigest()[:8]}"


def _dated(row):
    """A row with a date to land under; one from before 1970 is a dead letter."""
    if row.event_time < 0:
        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter("Land", f"event_time {row.event_time} before 1970",
                                                                 row))
    else:
        yield row


def run(argv=None, console=QUIET) -> dict:
    args, beam_args = parse_args(argv)
    options = pipeline_options(beam_args)
    FileSystems.set_options(options)  # the launcher lists the lake too (s3:// needs the endpoint)
    staged = staging(args.lake, f"land-{uuid.uuid4().hex}")
    console.say(f"landing {', '.join(args.events)} in {args.lake}/{RAW} as {args.source}, on {runner_name(options)}")
    try:
        with beam.Pipeline(options=options) as p:
            rows = p | "ReadEvents" >> ReadRows(args.events, "avro", timestamp_field="event_time",
                                                id_field="event_id", reader_schema=schemas.load("interaction"))
            dated = rows.rows | "Dated" >> beam.ParDo(_dated).with_outputs(DEAD_LETTERS, main="rows")
            (dated.rows
             | "Land" >> WriteRawPartitions(args.lake, args.source, args.shards)
             | "WriteTally" >> WriteTally(staged))
            ((rows.dead_letters, dated[DEAD_LETTERS]) | "DeadLetters" >> beam.Flatten()
             | "WriteDeadLetters" >> WriteRecords(f"{args.lake}/dead_letters/land-{args.source}", "dead_letter"))
        landed = dict(sorted(read_tally(staged).items()))
    finally:
        discard(staged)
    if not landed:
        raise UserError(f"no record read from {', '.join(args.events)}: nothing landed")
    console.say(f"landed {sum(landed.values()):,} records: "
                + ", ".join(f"{date} {n:,}" for date, n in landed.items()))
    return {"lake": args.lake, "source": args.source, "landed": landed}


if __name__ == "__main__":
    raise SystemExit(main(run))
