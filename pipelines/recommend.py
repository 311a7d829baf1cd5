"""The content-recommendation job: predict clicks online from a stream of interactions.

    python -m pipelines.recommend                      # simulate, learn, report in out/recommend
    python -m pipelines.recommend --events FILE.avro   # your own interactions
    python -m pipelines.recommend --source kafka --bootstrap 127.0.0.1:19092 --streaming --kafka_out recs

Reads interactions (Avro, `schemas/interaction.avsc`), drops malformed ones to dead letters,
labels each impression by its outcome within the attribution window, predicts then learns
with a river model, and writes predictions, windowed metrics, dead letters, `summary.json`
and a report (`report.md`, `metrics.png`) to the output folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import uuid

import apache_beam as beam

import schemas
import simulator
from core.decoding import avro_values
from core.interactions import served_example
from core.kafka import commit_at_least, end_offsets
from core.profiles import is_entity_feature
from core.records import Example
from models import zoo
from pipelines import report
from pipelines.console import QUIET, Bar, UserError, main
from pipelines.options import name_endless_flink_job, pipeline_options, runner_name
from pipelines.recommend_args import check_kafka, parse_args, payloads
from transforms.evaluation.delayed_labels import ScoreDelayedLabels, unpaired_kind
from transforms.evaluation.metrics import ProgressiveMetrics, WindowedMetrics
from transforms.features.entity import AddEntityFeatures
from transforms.features.taste import SOURCE as TASTE, TasteAlarms, to_alert as taste_alert
from transforms.io.files import ReadRows
from transforms.io.kafka import WriteToKafka
from transforms.io.kafka_read import ReadFromKafka
from transforms.io.offsets import EVERY_LANE, CommitOffsets
from transforms.io.sinks import WriteRecords
from transforms.learning.learn_online import LearnOnline
from transforms.progress import CountTags
from transforms.recsys.labels import LabelImpressions
from transforms.recsys.validation import ValidateInteractions

MAIN = "recommender"
POPULARITY = "models.baselines:popularity"


def run(argv=None, console=QUIET) -> dict:
    """Runs the job; returns its summary (`summary.json`), or {} for an endless stream."""
    args, beam_args = parse_args(argv)
    out = args.output.rstrip("/")
    os.makedirs(out, exist_ok=True)
    events = args.events
    bounded = args.source == "file" or args.stop_at_end
    if args.source == "file" and events is None:
        events = f"{out}/events.avro"
        config = simulator.SimulatorConfig(seed=args.seed, impressions=args.impressions, users=args.users,
                                           attribution_window_ms=int(args.attribution_minutes * 60_000),
                                           **args.attack)
        written = simulator.write_avro(simulator.generate(config), events)
        console.say(f"simulated {written:,} interactions ({args.impressions:,} impressions of {args.users:,} "
                    f"users, seed {args.seed}) into {events}")
    if args.source == "kafka" or args.kafka_out:
        check_kafka(args)
    if args.source == "kafka" and args.stop_at_end:
        # The reader stops at the end offsets it finds, at or past these: once the job has
        # finished, every record below them has its results written.
        replayed_to = end_offsets(args.bootstrap, args.topic)

    options, models = pipeline_options(beam_args), _models(args.model, args.baselines, args.warm_spec, args.experiment)
    own_traffic = _own_traffic(args.experiment)
    try:  # an endless Flink job outlives this process: it runs until cancelled
        flink_job = None if bounded else name_endless_flink_job(options, "recommend")
    except ValueError as e:
        raise UserError(str(e)) from None
    endless = (f"endless: predictions to {args.kafka_out}.predictions; " if args.kafka_out else "endless; ") + (
        f"Flink job {flink_job} runs on when this client exits: stop it with bash scripts/flink.sh cancel {flink_job}"
        if flink_job else "Ctrl-C stops")
    if flink_job and console.enabled:
        console.stop_note = f"this client stopped; Flink job {flink_job} runs on (bash scripts/flink.sh cancel {flink_job})"
    console.say(f"learning {', '.join(sorted(models))} from "
                f"{events or f'Kafka topic {args.topic!r}'} on {runner_name(options)}"
                + ("" if bounded else f" ({endless})"))
    run_id = uuid.uuid4().hex  # this run's progress counters
    with console.progress(_bars(run_id, events, len(models))), beam.Pipeline(options=options) as p:
        if args.source == "kafka":
            source = p | "ReadKafka" >> ReadFromKafka(
                args.bootstrap, [args.topic], args.group, stop_at_end=args.stop_at_end,
                start_time_ms=args.start_time, payloads=payloads(args),
                allowed_lateness_s=args.allowed_lateness_s, max_clock_skew_s=args.max_clock_skew_s)
        else:
            source = p | "ReadEvents" >> ReadRows(events, "avro", timestamp_field="event_time",
                                                  id_field="event_id", reader_schema=schemas.load("interaction"))
        validated = source.rows | "Validate" >> ValidateInteractions()
        taste_alarms = validated.valid | "TasteAlarms" >> TasteAlarms() if args.taste_alarm == "reset" else None
        featured = validated.valid | "EntityFeatures" >> AddEntityFeatures(
            store=args.feature_store, progress=f"{run_id}:features", online=args.online_store,
            taste_alarms=taste_alarms)
        served = (featured
                  | "Impressions" >> beam.Filter(lambda r: r.fields["event_type"] == "impression")
                  | "Serve" >> beam.Map(served_example, MAIN))
        labelled = featured | "LabelImpressions" >> LabelImpressions(args.attribution_minutes * 60, MAIN,
                                                                     store=args.feature_store,
                                                                     progress=f"{run_id}:labels")
        examples = (served, labelled.examples) | "ServeAndLabel" >> beam.Flatten()
        learned = (examples
                   | "ForEachModel" >> beam.FlatMap(_for_models, sorted(models), own_traffic)
                   | "LearnOnline" >> LearnOnline(models, store=args.learner_store, registry=args.registry,
                                                  publish_every_s=args.publish_every_s,
                                                  guard=args.guard and {MAIN: args.guard},
                                                  progress=f"{run_id}:learning"))
        alerts = learned.alerts if taste_alarms is None else (
            learned.alerts, taste_alarms | "TasteAlerts" >> beam.Map(taste_alert)) | "AllAlerts" >> beam.Flatten()
        scored = (learned.predictions, learned.learned) | "Score" >> ScoreDelayedLabels(
            args.attribution_minutes * 60)
        predictions = scored.scored
        dead_letters = (source.dead_letters, validated.dead_letters, labelled.dead_letters, learned.dead_letters) \
            | "AllDeadLetters" >> beam.Flatten()

        windowed = predictions | "WindowedMetrics" >> WindowedMetrics("binary", args.metrics_minutes * 60)
        if args.kafka_out:
            prefix, servers, registry = args.kafka_out, args.bootstrap, args.schema_registry
            delivered = (  # each record's results: one per model (its lane), or a dead letter for all
                predictions | "PredictionsToKafka" >> WriteToKafka(
                    servers, f"{prefix}.predictions", "prediction", key=_model_key, registry=registry, lane=_lane),
                dead_letters | "DeadLettersToKafka" >> WriteToKafka(
                    servers, f"{prefix}.dead_letters", "dead_letter", key=_stage, registry=registry, lane=_lane),
                # Nothing to deliver for a prediction or label whose partner never came, nor for
                # the variants that an impression served by another variant never reaches.
                scored.unpaired | "UnpairedSpans" >> beam.FlatMap(_spans),
                examples | "SkippedSpans" >> beam.FlatMap(_skipped_spans, own_traffic),
            ) | "Delivered" >> beam.Flatten()
            windowed | "MetricsToKafka" >> WriteToKafka(servers, f"{prefix}.metrics", "metric", key=_scope,
                                                          registry=registry)
            if args.guard or taste_alarms:  # incidents and retrain signals (pipelines.retrain --on reads them)
                alerts | "AlertsToKafka" >> WriteToKafka(servers, f"{prefix}.alerts", "alert",
                                                                 key=_model_key, registry=registry)
            if args.source == "kafka":
                delivered | "CommitOffsets" >> CommitOffsets(servers, args.group, lanes=sorted(models))
        if not bounded:
            return {}  # a stream has no end: no files, summary or report
        predictions | "WritePredictions" >> WriteRecords(f"{out}/predictions", "prediction", args.output_format)
        windowed | "WriteWindowedMetrics" >> WriteRecords(f"{out}/windowed_metrics", "metric", args.output_format)
        dead_letters | "WriteDeadLetters" >> WriteRecords(f"{out}/dead_letters", "dead_letter", args.output_format)
        if args.guard or taste_alarms:
            alerts | "WriteAlerts" >> WriteRecords(f"{out}/alerts", "alert", args.output_format)

        counts = (
            source.rows | "TagRows" >> beam.Map(lambda _: "rows_read"),
            source.dead_letters | "TagUnreadable" >> beam.Map(lambda _: "rows_unreadable"),
            predictions | "TagPredictions" >> beam.FlatMap(
                lambda p: ["predictions"] if p.model_key == MAIN else []),
            labelled.joined_outcomes | "TagJoined" >> beam.Map(lambda _: "outcomes_joined"),
            dead_letters | "TagDead" >> beam.Map(lambda d: f"dead_letters.{d.stage}"),
            scored.unpaired | "TagUnpaired" >> beam.FlatMap(
                lambda r: [f"unpaired.{unpaired_kind(r)}"] if r.model_key == MAIN else []),
            learned.dead_letters | "TagGuarded" >> beam.FlatMap(_guard_tag),
            alerts | "TagAlerts" >> beam.Map(lambda a: f"{'taste' if a.model_key == TASTE else 'guard'}.{a.signal}.{a.kind}"),
            (learned.dead_letters | "Quarantines" >> beam.FlatMap(lambda d: [d.reason] if _guard_tag(d) == [
                "guard.quarantined_labels"] else []) | "BySource" >> beam.Distinct()
             | "TagSources" >> beam.Map(lambda _: "guard.quarantined_sources")),
        ) | "Count" >> CountTags()
        hashing = (served
                   | "IdTokens" >> beam.FlatMap(lambda e: [("user_id", e.x["user_id"]), ("item_id", e.x["item_id"])])
                   | "DistinctIds" >> beam.Distinct()
                   | "AllIds" >> beam.combiners.ToList()
                   | "Collisions" >> beam.Map(zoo.id_collisions, args.hash_size))
        (predictions
         | "ProgressiveMetrics" >> ProgressiveMetrics("binary", by_key=True)
         | "AllModels" >> beam.combiners.ToDict()
         | "WriteSummary" >> beam.Map(_write_summary, f"{out}/summary.json", beam.pvalue.AsDict(counts),
                                      beam.pvalue.AsSingleton(hashing)))

    if args.source == "kafka":
        # In-stream commits (CommitOffsets) stop where the stream ends: acks emitted as the
        # watermark jumps to the end arrive after it, and are dropped. Commit the rest here.
        commit_at_least(args.bootstrap, args.group, args.topic, replayed_to)
    summary = json.loads(open(f"{out}/summary.json").read())
    if not summary["counts"].get("rows_read"):
        raise UserError(f"read no records from {events or f'Kafka topic {args.topic!r}'}: nothing to learn from")
    report.write(out, summary)
    for line in report.summary_lines(summary, out, main=MAIN):
        console.say(line)
    for line in report.published_lines(args.registry, sorted(models), args.online_store):
        console.say(line)
    return summary


def _bars(run_id: str, events: str | None, models: int) -> list[Bar]:
    """The ordered stages' progress: every record is applied to a user and an item profile and
    joined by the labelling; every impression is served, then learned, by each model."""
    kinds = avro_values(events, "event_type") if events else None
    records, impressions = (sum(kinds.values()), kinds["impression"]) if kinds else (None, None)
    return [Bar(f"{run_id}:features", records and 2 * records, "records", "features"),
            Bar(f"{run_id}:labels", records, "records", "labels"),
            Bar(f"{run_id}:learning", impressions and 2 * models * impressions, "events", "learning")]


def _models(spec: str, baselines: bool, main_spec: str | None = None, experiment=None) -> dict:
    """Model key -> spec: the main model (`main_spec`, a warm start, else `spec`), the baselines,
    and an experiment's variants learned online."""
    return {MAIN: main_spec or spec, **({"no_features": spec, "popularity": POPULARITY} if baselines else {}),
            **(experiment.learned_online() if experiment else {})}


def _own_traffic(experiment) -> frozenset:
    """The model keys that learn only from the impressions they served: an experiment's
    variants, but a shadow's (it serves nothing, so it learns from all, like control)."""
    if experiment is None or experiment.kind == "shadow":
        return frozenset()
    return frozenset(experiment.model_keys())


def _spans(record):
    """A record's source spans as `CommitOffsets` takes them."""
    for topic, partition, first, last in record.origin:
        yield (topic, partition), {_lane(record): [(first, last)]}


def _skipped_spans(example: Example, own_traffic):
    """The spans of an example in the lanes of the variants `_for_models` does not give it to."""
    if example.served_by in own_traffic:
        for lane in sorted(own_traffic - {example.served_by}):
            for topic, partition, first, last in example.origin:
                yield (topic, partition), {lane: [(first, last)]}


def _lane(result) -> str:
    """The model a result belongs to; a dead letter refused before the models stands for all."""
    return getattr(result, "model_key", None) or EVERY_LANE


def _model_key(prediction):
    return prediction.model_key


def _scope(metric):
    return metric.scope


def _stage(dead_letter):
    return dead_letter.stage


def _for_models(example: Example, keys, own_traffic=frozenset()):
    """The example for each model: baselines see no entity features; an impression served by
    one of `own_traffic` (an experiment's variants) goes to that one of them only, so that each
    variant learns from what it served. Each keeps the origin: a source offset is done when
    every model's result of it is out."""
    for key in keys:
        if key in own_traffic and example.served_by in own_traffic and key != example.served_by:
            continue
        if key == MAIN:
            yield example
        elif key == "no_features":
            yield dataclasses.replace(example, model_key=key,
                                      x={k: v for k, v in example.x.items() if not is_entity_feature(k)})
        else:
            yield dataclasses.replace(example, model_key=key)


def _guard_tag(dead_letter) -> list:
    """The main model's guard's refusals, by kind."""
    if dead_letter.stage != "LearnOnline" or dead_letter.model_key != MAIN:
        return []
    kind = dead_letter.reason.split(":", 1)[0]
    return {"quarantined": ["guard.quarantined_labels"], "over budget": ["guard.over_budget_labels"]}.get(kind, [])


def _write_summary(scores: dict, path: str, counts: dict, hashing: dict):
    summary = {"progressive": scores.get(MAIN, {}), "models": dict(sorted(scores.items())),
               "counts": dict(sorted(counts.items())), "hashing": hashing}
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    # Run the importable module, not __main__: the functions the pipeline pickles then refer to
    # `pipelines.recommend`, which workers in another process (Flink's worker pool) can import.
    from pipelines import recommend
    sys.exit(main(recommend.run))
