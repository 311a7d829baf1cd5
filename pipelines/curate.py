"""Curation (the lake's ETL step): the raw table's events -> the training set of record,
labelled impressions partitioned by UTC date, as Parquet and Avro.

    python -m pipelines.curate --lake out/lake                      # every landed date
    python -m pipelines.curate --lake out/lake --from 2026-01-01 --until 2026-01-01

Each impression of the dates chosen is written with the features it was served with, the
prediction served, the model version and its label (`transforms.recsys.curation`,
`schemas/labelled_impression.avsc`) to
`LAKE/curated/{parquet,avro}/labelled_impressions/date=YYYY-MM-DD/part-*`. A date's partition is
replaced whole, once the job has succeeded: curating a date again gives the same files.

The raw dates read are the ones chosen, `--history_days` before them (features of impressions
that were not logged with their served features are computed from the events read) and the day
after (outcomes of the last impressions). An impression whose attribution window ends after the
newest valid event read is left out and counted as pending: its label is not known yet; curate the
date again once the next day has landed. Invalid records go to
`LAKE/dead_letters/curate-<from>-<until>.jsonl` with their bytes.
"""
from __future__ import annotations

import datetime
import os
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

import schemas
from pipelines.console import QUIET, ArgumentParser, UserError, add_verbose_flag, main
from pipelines.options import pipeline_options, runner_name
from transforms.features.entity import AddEntityFeatures
from transforms.io.files import ReadRows
from transforms.io.lake import (CURATED, FORMATS, RAW, WriteDatePartitions, WriteTally, curated, date_of, dates,
                                discard, partition, read_tally, replace_partitions, staging)
from transforms.io.sinks import WriteRecords
from transforms.recsys.curation import CurateImpressions
from transforms.recsys.validation import ValidateInteractions


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m pipelines.curate", description=__doc__.split("\n\n")[0],
                            epilog="Any other flag goes to Beam (e.g. --runner, or --s3_endpoint_url for s3://).")
    parser.add_argument("--lake", default="out/lake", help="The lake's root: a folder or s3://BUCKET/PREFIX "
                                                           "(default: %(default)s).")
    parser.add_argument("--from", dest="first", type=_date, help="First date to curate, YYYY-MM-DD "
                                                                 "(default: the first landed).")
    parser.add_argument("--until", dest="last", type=_date, help="Last date to curate (default: the last landed).")
    parser.add_argument("--attribution_minutes", type=float, default=30.0,
                        help="An outcome counts for its impression within this time (default: %(default)s).")
    parser.add_argument("--history_days", type=int, default=1,
                        help="Days read before --from for point-in-time features (default: %(default)s).")
    parser.add_argument("--formats", default="parquet,avro", help="Comma-separated, of: " + ", ".join(FORMATS)
                                                                  + " (default: %(default)s).")
    add_verbose_flag(parser)
    args, beam_args = parser.parse_job_args(argv)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not args.formats or set(args.formats) - set(FORMATS):
        parser.error(f"--formats: some of {', '.join(FORMATS)}, not {','.join(args.formats)!r}")
    if args.first and args.last and args.first > args.last:
        parser.error("--from must not be after --until")
    if args.attribution_minutes <= 0 or args.history_days < 0:
        parser.error("--attribution_minutes must be positive and --history_days >= 0")
    if "://" not in args.lake:
        args.lake = os.path.abspath(args.lake)
    return args, beam_args


def _date(text: str) -> str:
    return datetime.date.fromisoformat(text).isoformat()


def _shift(date: str, days: int) -> str:
    return (datetime.date.fromisoformat(date) + datetime.timedelta(days=days)).isoformat()


def run(argv=None, console=QUIET) -> dict:
    args, beam_args = parse_args(argv)
    options = pipeline_options(beam_args)
    FileSystems.set_options(options)  # the launcher lists and swaps the lake's files too
    landed = dates(args.lake, RAW)
    if not landed:
        raise UserError(f"nothing landed in {args.lake}/{RAW} (python -m pipelines.land puts events there)")
    first, last = args.first or landed[0], args.last or landed[-1]
    chosen = [d for d in landed if first <= d <= last]
    if not chosen:
        raise UserError(f"no landed date from {first} to {last}; landed: {landed[0]} to {landed[-1]}")
    read = [d for d in landed if _shift(first, -args.history_days) <= d <= _shift(last, 1)]
    window_ms = int(args.attribution_minutes * 60_000)
    staged = staging(args.lake, f"curate-{uuid.uuid4().hex}")
    console.say(f"curating {first} to {last} ({len(chosen)} dates, {len(read)} read) in {args.lake}, "
                f"on {runner_name(options)}")
    try:
        with beam.Pipeline(options=options) as p:
            rows = p | "ReadRaw" >> ReadRows([f"{partition(args.lake, RAW, d)}/*.avro" for d in read], "avro",
                                             timestamp_field="event_time", id_field="event_id",
                                             reader_schema=schemas.load("interaction"))
            validated = rows.rows | "Validate" >> ValidateInteractions()
            featured = validated.valid | "EntityFeatures" >> AddEntityFeatures()
            labelled = featured | "Curate" >> CurateImpressions(args.attribution_minutes * 60)
            newest = beam.pvalue.AsSingleton(validated.valid | "EventTimes" >> beam.Map(lambda r: r.event_time)
                                             | "Newest" >> beam.CombineGlobally(lambda ts: max(ts, default=-1)))
            records = labelled.records | "Chosen" >> beam.Filter(lambda r: date_of(r["event_time"]) in chosen)
            (records | "LabelKnown" >> beam.Filter(lambda r, newest: r["event_time"] + window_ms <= newest, newest)
             | "Write" >> WriteDatePartitions(staged, CURATED, "labelled_impression", chosen, args.formats))
            (records
             | "Tally" >> beam.Map(lambda r, newest: ((date_of(r["event_time"]), _state(r, window_ms, newest)), 1),
                                   newest)
             | "WriteTally" >> WriteTally(staged))
            ((rows.dead_letters, validated.dead_letters, labelled.dead_letters) | "DeadLetters" >> beam.Flatten()
             | "OfChosenDates" >> beam.Filter(lambda d: date_of(d.event_time) in chosen)
             | "WriteDeadLetters" >> WriteRecords(f"{args.lake}/dead_letters/curate-{first}-{last}", "dead_letter"))
        replace_partitions(staged, args.lake, [curated(fmt) for fmt in args.formats], chosen)
        counts = {d: {"clicked": 0, "not_clicked": 0, "pending": 0} for d in chosen}
        for (date, state), n in read_tally(staged).items():
            counts[date][state] = n
    finally:
        discard(staged)
    if not any(c["clicked"] + c["not_clicked"] for c in counts.values()):
        raise UserError(f"no impression from {first} to {last} with its label known: nothing curated")
    for date, c in counts.items():
        shown = c["clicked"] + c["not_clicked"]
        console.say(f"{date}: {shown:,} labelled impressions (CTR {c['clicked'] / max(shown, 1):.4f})"
                    + (f", {c['pending']:,} pending" if c["pending"] else ""))
    return {"lake": args.lake, "from": first, "until": last, "dates": counts, "formats": args.formats}


def _state(record: dict, window_ms: int, newest: int) -> str:
    if record["event_time"] + window_ms > newest:
        return "pending"
    return "clicked" if record["label"] else "not_clicked"


if __name__ == "__main__":
    raise SystemExit(main(run))
