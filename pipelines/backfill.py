"""The feature backfill: entity profiles from history files, up to a cut-off, into a store.

    python -m pipelines.backfill --events history.avro --cutoff 2026-01-01T06:00:00Z \\
        --store out/backfill/features.sqlite
    python -m pipelines.recommend --streaming --events from-cutoff.avro \\
        --feature_store out/backfill/features.sqlite

Applies every valid interaction strictly before the cut-off to its user and item profiles (the
same code as the streaming feature stage, in one sorted pass per key) and writes each profile
with its clock to the store. A streaming job given that store as its feature store starts from
these profiles: over the events from the cut-off on, it computes the same features as a stream
over the whole history. The streaming job then keeps the store up to date; copy the file
first to keep the snapshot itself.

Writes `summary.json` (counts) and `dead_letters.jsonl` (malformed interactions) to --output.
"""
from __future__ import annotations

import json
import os
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

import schemas
from core.decoding import event_time_arg
from pipelines.console import QUIET, ArgumentParser, UserError, add_verbose_flag, main
from pipelines.options import pipeline_options, runner_name
from stores import snapshots
from transforms.features.backfill import SnapshotProfiles
from transforms.io.files import ReadRows
from transforms.io.sinks import WriteRecords
from transforms.progress import CountTags
from transforms.recsys.validation import ValidateInteractions


def parse_args(argv=None):
    parser = ArgumentParser(
        prog="python -m pipelines.backfill", description=__doc__.split("\n\n")[0],
        epilog="Any other flag goes to Beam (e.g. --runner).")
    parser.add_argument("--events", required=True, help="History of interactions, an Avro file.")
    parser.add_argument("--cutoff", required=True, type=event_time_arg,
                        help="Apply events strictly before this event time: epoch milliseconds or ISO-8601.")
    parser.add_argument("--store", default="out/backfill/features.sqlite",
                        help="Snapshot store to write, a new SQLite file (default: %(default)s).")
    parser.add_argument("--replace", action="store_true", help="Delete an existing --store first.")
    parser.add_argument("--output", default="out/backfill",
                        help="Folder for summary.json and dead letters (default: %(default)s).")
    add_verbose_flag(parser)
    args, beam_args = parser.parse_job_args(argv)
    if not FileSystems.exists(args.events):
        parser.error(f"no such file: --events {args.events}")
    if os.path.exists(args.store) and not args.replace:
        # Older profiles written over newer ones would silently rewind a live job's features.
        parser.error(f"{args.store} exists: give a new --store, or --replace to delete it first")
    return args, beam_args


def run(argv=None, console=QUIET) -> dict:
    """Runs the backfill; returns its summary (`summary.json`)."""
    args, beam_args = parse_args(argv)
    out = args.output.rstrip("/")
    os.makedirs(out, exist_ok=True)
    if args.replace and os.path.exists(args.store):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(args.store + suffix):
                os.remove(args.store + suffix)
    os.makedirs(os.path.dirname(args.store) or ".", exist_ok=True)
    snapshots.open_store(args.store).close()  # fail here, not in a worker, on a bad location

    options = pipeline_options(beam_args)
    console.say(f"applying the events of {args.events} before {args.cutoff} ms to user and item profiles, "
                f"into {args.store}, on {runner_name(options)}")
    with beam.Pipeline(options=options) as p:
        source = p | "ReadEvents" >> ReadRows(args.events, "avro", timestamp_field="event_time",
                                              id_field="event_id", reader_schema=schemas.load("interaction"))
        validated = source.rows | "Validate" >> ValidateInteractions()
        saved = validated.valid | "Snapshot" >> SnapshotProfiles(args.store, args.cutoff)
        dead_letters = (source.dead_letters, validated.dead_letters) | "AllDeadLetters" >> beam.Flatten()
        dead_letters | "WriteDeadLetters" >> WriteRecords(f"{out}/dead_letters", "dead_letter")
        counts = (
            validated.valid | "TagEvents" >> beam.Map(
                lambda r, cut=args.cutoff: "events_applied" if r.event_time < cut else "events_after_cutoff"),
            saved | "TagProfiles" >> beam.Map(lambda key: f"profiles.{key.split(':', 1)[0]}"),
            dead_letters | "TagDead" >> beam.Map(lambda d: f"dead_letters.{d.stage}"),
        ) | "Count" >> CountTags()
        (counts | "AllCounts" >> beam.combiners.ToDict()
         | "WriteSummary" >> beam.Map(_write_summary, f"{out}/summary.json", args))
    summary = json.loads(open(f"{out}/summary.json").read())
    counts = summary["counts"]
    if not counts.get("events_applied") and not counts.get("events_after_cutoff"):
        raise UserError(f"no valid interaction in {args.events}: nothing to backfill (see {out}/dead_letters.jsonl)")
    console.say(", ".join(f"{k} {v:,}" for k, v in counts.items()))
    console.say(f"profiles in {args.store}; summary and dead letters in {out}/")
    return summary


def _write_summary(counts: dict, path: str, args):
    summary = {"cutoff_ms": args.cutoff, "events": args.events, "store": args.store,
               "counts": dict(sorted(counts.items()))}
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    # Run the importable module, not __main__: the functions the pipeline pickles then refer to
    # `pipelines.backfill`, which workers in another process (Flink's worker pool) can import.
    from pipelines import backfill
    sys.exit(main(backfill.run))
