"""Offline training: a model learned from history files over a training range, evaluated on a
later held-out range, registered with its evaluation and lineage.

    python -m pipelines.train --events history.avro --split 2026-01-01T02:00:00Z
    python -m pipelines.train --events history.avro --train_from 2026-01-01T00:00:00Z \\
        --split 2026-01-01T02:00:00Z --eval_until 2026-01-01T03:00:00Z --promote_if_better
    python -m pipelines.train --lake out/lake --split 2026-01-02T00:00:00Z --passes 3

The features are the online ones (point in time, the same transforms) and the model learns the
training range's labelled impressions in event-time order, as the online learner does. The
split leaks nothing: a training impression is one whose attribution window closed before the
split (its label is known then), and no feature is computed from anything later than the
impression it belongs to; events after the split reach only the held-out examples (tested: the
registered model is the same whatever happens after the split). The held-out examples are the
impressions from the split to `--eval_until`, labelled as online, and predicted by the frozen
model.

From the data lake (`--lake`, the curated table of `pipelines.curate`), the examples are its
rows: the labels the same labelling gave, with the features as served; nothing is recomputed,
and the model is the one `--events` learns from the same events (tested). `--passes N` learns
the training range N times, pass after pass, each in event-time order.

The model is registered (`--registry`, key `--model_key`) with its held-out scores and its
lineage (events file and ranges, code version, model spec), pinned, and put in the `candidate`
stage. `--promote_if_better` also makes it `production` when it beats the production version on
the same held-out examples (log loss), or when there is none.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import apache_beam as beam

from apache_beam.io.filesystems import FileSystems

from core import avro
from core.decoding import event_time_arg
from core.interactions import invalid_reason
from core.publishing import load_version
from core.records import LEARN, Prediction
from core.scoring import score
from models import factory, serde
from pipelines.console import QUIET, ArgumentParser, UserError, add_verbose_flag, main
from pipelines.options import pipeline_options, runner_name
from stores.registry import open_registry
from transforms.io.lake import CURATED, curated, date_of, dates
from transforms.io.sinks import WriteRecords
from transforms.learning.learn_online import LearnOnline
from pipelines.train_examples import EventExamples, LakeExamples, Passes

def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m pipelines.train", description=__doc__.split("\n\n")[0],
                            epilog="Any other flag goes to Beam (e.g. --runner).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", help="History of interactions, an Avro file.")
    source.add_argument("--lake", help="Or the data lake's curated table (python -m pipelines.curate): its root, a "
                                       "folder or s3://BUCKET/PREFIX; its labels and served features, as they are.")
    parser.add_argument("--split", required=True, type=event_time_arg,
                        help="Train before it, evaluate from it: epoch ms or ISO-8601.")
    parser.add_argument("--train_from", type=event_time_arg, help="Impressions before it are not learned "
                                                                  "(default: the start of the history).")
    parser.add_argument("--eval_until", type=event_time_arg, help="End of the held-out range (default: the end "
                                                                  "of the history).")
    parser.add_argument("--model", default="models.zoo:recommender",
                        help="MODULE:FUNCTION[?ARG=VALUE&...], a river binary classifier (default: %(default)s).")
    parser.add_argument("--model_key", default="recommender", help="Registered as (default: %(default)s).")
    parser.add_argument("--registry", default="out/recommend/registry.sqlite",
                        help="The registry: a SQLite file or postgresql:// URL (default: %(default)s).")
    parser.add_argument("--attribution_minutes", type=float, default=30.0,
                        help="An outcome counts for its impression within this time (default: %(default)s).")
    parser.add_argument("--passes", type=int, default=1,
                        help="Passes over the training range, each in event-time order (default: %(default)s).")
    parser.add_argument("--evaluate", metavar="VERSION", type=int,
                        help="Learn nothing: evaluate this registered version on the held-out range (e.g. an "
                             "offline model on later traffic), and register nothing.")
    parser.add_argument("--promote_if_better", action="store_true",
                        help="Also promote it to production when it beats production on the held-out range.")
    parser.add_argument("--output", default="out/train",
                        help="Folder for held_out.jsonl (the held-out examples: features, label), dead_letters.jsonl "
                             "and summary.json (default: %(default)s).")
    add_verbose_flag(parser)
    args, beam_args = parser.parse_job_args(argv)
    if args.events and not os.path.isfile(args.events):
        parser.error(f"no such file: --events {args.events}")
    if args.passes < 1:
        parser.error("--passes must be >= 1")
    if args.lake and "://" not in args.lake:
        args.lake = os.path.abspath(args.lake)
    if args.train_from is not None and args.train_from >= args.split:
        parser.error("--train_from must be before --split")
    if args.eval_until is not None and args.eval_until <= args.split:
        parser.error("--eval_until must be after --split")
    try:
        if factory.task_of(factory.build(args.model)) != "binary":
            parser.error(f"--model {args.model} must build a binary classifier (click or not)")
    except (ValueError, TypeError) as e:
        parser.error(f"--model: {e}")
    if "://" not in args.registry:
        args.registry = os.path.abspath(args.registry)
    return args, beam_args


def run(argv=None, console=QUIET) -> dict:
    args, beam_args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    window_ms = int(args.attribution_minutes * 60_000)
    options = pipeline_options(beam_args)
    FileSystems.set_options(options)
    lake_dates = _lake_dates(args) if args.lake else _check_ranges(args, window_ms)
    registry = open_registry(args.registry)
    before = registry.latest(args.model_key)
    if args.evaluate is not None:
        try:
            registry.get(args.model_key, args.evaluate)
        except LookupError as e:
            raise UserError(str(e)) from None
    where = args.events or f"{args.lake} ({lake_dates[0]} to {lake_dates[-1]})"
    console.say((f"learning {args.model_key} from {where} before {args.split} ms"
                 + (f" in {args.passes} passes" if args.passes > 1 else "") + ", evaluating from it"
                 if args.evaluate is None else f"evaluating {args.model_key} v{args.evaluate} on {where} from "
                                               f"{args.split} ms") + f", on {runner_name(options)}")
    with beam.Pipeline(options=options) as p:
        if args.lake:
            labels, served = p | "ReadLake" >> LakeExamples(args.lake, lake_dates, args.model_key), None
        else:
            source = p | "Examples" >> EventExamples(args.events, args.model_key, args.attribution_minutes * 60)
            labels, served = source.labels, source.served
            source.dead_letters | "WriteDeadLetters" >> WriteRecords(f"{args.output}/dead_letters", "dead_letter")
        training = [labels | "KnownBeforeSplit" >> beam.Filter(_labelled_in, window_ms, args.train_from,
                                                               args.split - window_ms)
                    | "Passes" >> Passes(args.passes, args.split)]
        if served is not None:  # predictions only: they change no model, but the learner logs them
            training.append(served | "ServedBeforeSplit" >> beam.Filter(_in, args.train_from, args.split - window_ms))
        training = training | "Training" >> beam.Flatten()
        if args.evaluate is None:
            training | "Learn" >> LearnOnline({args.model_key: args.model}, registry=args.registry, publish_every_s=None,
                                              publish_every_events=sys.maxsize)
        (labels | "HeldOut" >> beam.Filter(_labelled_in, window_ms, args.split, args.eval_until)
         | "AsJson" >> beam.Map(lambda e: json.dumps({"event_id": e.event_id, "event_time": e.event_time - window_ms,
                                                      "x": e.x, "y": e.y}))
         | "WriteHeldOut" >> beam.io.WriteToText(f"{args.output}/held_out", ".jsonl", shard_name_template=""))
    held_out = _read_held_out(f"{args.output}/held_out.jsonl")
    if not held_out:
        raise UserError(f"no labelled impression in {where} from --split {args.split} to --eval_until: nothing to "
                        "evaluate on")
    keys = serde.KeySource(store=args.registry).resolve()
    if args.evaluate is not None:
        version = registry.get(args.model_key, args.evaluate)
        scores = evaluate(load_version(registry, version, keys), held_out)
        registry.close()
        summary = {"model_key": args.model_key, "version": version.version, "held_out": scores, "evaluated_only": True}
        with open(f"{args.output}/summary.json", "w") as f:
            json.dump(summary, f, indent=2)
        console.say(f"{args.model_key} v{version.version}, frozen, held out: " + _scores_text(scores))
        return summary
    version = registry.latest(args.model_key)
    if version is None or (before is not None and version.version == before.version):
        raise UserError(f"no impression before --split {args.split} with its label known by then: nothing learned")
    scores = evaluate(load_version(registry, version, keys), held_out)
    lineage = {**({"events": os.path.abspath(args.events)} if args.events else
                  {"lake": args.lake, "dates": [lake_dates[0], lake_dates[-1]]}),
               "train_from_ms": args.train_from, "split_ms": args.split, "eval_until_ms": args.eval_until,
               "passes": args.passes, "model": args.model, "code": _code_version(),
               "attribution_minutes": args.attribution_minutes}
    registry.annotate(args.model_key, version.version, {"held_out": scores, "lineage": lineage})
    registry.pin(args.model_key, version.version, "offline")
    registry.promote(args.model_key, version.version, "candidate")
    promoted = _promote_if_better(registry, args.model_key, version, scores, held_out, keys) \
        if args.promote_if_better else None
    registry.close()
    summary = {"model_key": args.model_key, "version": version.version, "step": version.step, "held_out": scores,
               "lineage": lineage, "production": promoted}
    with open(f"{args.output}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    console.say(f"registered {args.model_key} v{version.version} ({version.step:,} labels learned), held out: "
                + _scores_text(scores) + "; pinned, candidate"
                + ("" if promoted is None else f"; production: {promoted}"))
    return summary


def _scores_text(scores: dict) -> str:
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.4f}" for k, v in scores.items())


def evaluate(model, held_out: list) -> dict:
    """The frozen `model`'s scores over the held-out examples, in event order."""
    predictions = []
    for e in held_out:
        proba = model.predict_proba_one(e["x"])
        predictions.append(Prediction(e["event_id"], "held_out", e["event_time"], e["y"], proba.get(True, 0.0) >= 0.5,
                                      proba, 0))
    return {"examples": len(held_out), **{k: round(v, 6) for k, v in score(predictions, "binary").items()}}


def _promote_if_better(registry, key, version, scores, held_out, keys) -> str:
    current = registry.latest(key, "production")
    if current is not None and current.version != version.version:
        theirs = evaluate(load_version(registry, current, keys), held_out)
        if theirs["logloss"] <= scores["logloss"]:
            return f"v{current.version} kept (held-out log loss {theirs['logloss']} <= {scores['logloss']})"
    registry.promote(key, version.version, "production")
    return f"v{version.version}" + ("" if current is None else f" (was v{current.version})")


def _lake_dates(args) -> list[str]:
    """The curated dates that hold the training and held-out ranges."""
    table = curated("parquet", CURATED)
    found = [d for d in dates(args.lake, table)
             if (args.train_from is None or d >= date_of(args.train_from))
             and (args.eval_until is None or d <= date_of(args.eval_until))]
    if not found:
        raise UserError(f"no curated date in {args.lake}/{table} for these ranges (python -m pipelines.curate)")
    return found


def _check_ranges(args, window_ms: int) -> None:
    """Impressions to learn and to evaluate on, or a clear error before anything is registered."""
    shown = impression_times(args.events)
    if args.evaluate is None and not any((args.train_from is None or t >= args.train_from)
                                         and t < args.split - window_ms for t in shown):
        raise UserError(f"no impression in {args.events} whose label is known by --split {args.split} (shown an "
                        f"attribution window before it): nothing to learn")
    if not any(t >= args.split and (args.eval_until is None or t < args.eval_until) for t in shown):
        raise UserError(f"no impression in {args.events} from --split {args.split} to --eval_until: nothing to "
                        "evaluate on")


def impression_times(path: str) -> list:
    """The event times of the valid impressions of an Avro file of interactions."""
    with open(path, "rb") as f:
        header = avro.read_header(f, path)
        return [fields["event_time"] for _, fields, error, _ in avro.records(f, header)
                if error is None and fields.get("event_type") == "impression" and invalid_reason(fields) is None]


def _in(example, start, end) -> bool:
    return (start is None or example.event_time >= start) and example.event_time < end


def _labelled_in(example, window_ms, start, end) -> bool:
    """A label whose impression (its window's start) is in [start, end)."""
    shown = example.event_time - window_ms
    return example.mode == LEARN and (start is None or shown >= start) and (end is None or shown < end)


def _read_held_out(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return sorted((json.loads(line) for line in f), key=lambda e: (e["event_time"], e["event_id"]))


def _code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    from pipelines import train
    sys.exit(main(train.run))
