"""Prequential (predict-then-learn) evaluation of any river model over a file, on Beam.

    python -m pipelines.prequential --input data.csv --target y \\
        --model models.zoo:logistic_regression --output out/ [--streaming]

Rows in file order are the stream order (event time = row index in seconds) unless
`--timestamp COLUMN` names the event time. The task (binary, multiclass or regression) comes
from the target's values, read in a first pass over the file (`core/tasks.py`: the rules and
the positive class of a binary target), unless `--task` gives it; a model that cannot learn it
(a regressor over classes, a classifier over a quantity, a binary-only classifier over more
than two classes) is refused. Writes to the output folder:

- `metrics.json`: final progressive metrics (binary: accuracy, rocauc, logloss; multiclass:
  accuracy, macro_f1; regression: mae, rmse), the counts of predictions and dead letters;
- `predictions.jsonl`, `windowed_metrics.jsonl`, `dead_letters.jsonl`.

The final metrics equal river's `evaluate.progressive_val_score` over the same rows (not with
`--mini_batch N`, which predicts and learns N events of a key at a time: faster, different).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import uuid

import apache_beam as beam
from apache_beam.io import filesystems

from core import tasks
from core.avro import UnreadableAvroFile
from core.decoding import FORMATS, avro_records, format_of
from core.records import Example
from core.scoring import METRICS
from models import factory
from pipelines.console import QUIET, ArgumentParser, Bar, UserError, add_verbose_flag, main
from pipelines.options import pipeline_options, runner_name
from transforms.evaluation.metrics import ProgressiveMetrics, WindowedMetrics
from transforms.io.files import ReadRows
from transforms.io.sinks import WriteRecords
from transforms.learning.examples import RowsToExamples
from transforms.learning.learn_online import LearnOnline
from transforms.progress import CountTags


def parse_args(argv=None):
    parser = ArgumentParser(
        prog="python -m pipelines.prequential", description=__doc__.split("\n\n")[0],
        epilog="Any other flag goes to Beam (e.g. --runner, --streaming, --direct_num_workers).")
    parser.add_argument("--input", required=True, help="CSV, JSONL or Avro file.")
    parser.add_argument("--target", required=True, help="Label column.")
    parser.add_argument("--model", default="models.zoo:logistic_regression",
                        help="MODULE:FUNCTION returning a fresh river model (default: %(default)s).")
    parser.add_argument("--output", required=True, help="Output folder.")
    parser.add_argument("--format", choices=FORMATS, help="Input format (default: from the extension).")
    parser.add_argument("--task", choices=tasks.TASKS,
                        help="The task (default: from the target's values; see core/tasks.py).")
    parser.add_argument("--positive", metavar="CLASS",
                        help="Binary: the positive class, as text (default: True or 1 for bool-like "
                             "classes, else the last of the two in sorted order).")
    parser.add_argument("--timestamp", help="Event-time column (ISO-8601 or epoch ms); default: row index.")
    parser.add_argument("--id", dest="id_field", help="Unique event-id column; default: row index.")
    parser.add_argument("--model_key", help="Column whose value picks one model per value; default: one model.")
    parser.add_argument("--window", type=float, default=1000.0,
                        help="Windowed-metrics window, seconds of event time (default: %(default)s).")
    parser.add_argument("--mini_batch", type=int, default=0,
                        help="Opt-in mini-batch learning: per model key, predict N events with "
                             "predict_proba_many, then learn them with learn_many (pandas). Faster, "
                             "but NOT the same as per-event learning (see LearnOnline). 0 (default): "
                             "exact per-event predict-then-learn.")
    parser.add_argument("--output_format", choices=("jsonl", "avro"), default="jsonl",
                        help="Format of predictions, windowed metrics and dead letters.")
    add_verbose_flag(parser)
    args, beam_args = parser.parse_job_args(argv)
    if not filesystems.FileSystems.exists(args.input):
        parser.error(f"no such file: --input {args.input}")
    try:
        model_task = factory.task_of(factory.build(args.model))
    except (ValueError, TypeError) as e:
        parser.error(f"--model: {e}")
    try:
        args.format = format_of(args.input, args.format)
    except ValueError as e:
        parser.error(str(e))
    _target_task(parser, args, model_task)
    return args, beam_args


def _target_task(parser, args, model_task: str) -> None:
    """Sets `args.task` (from the target's values unless given) and, for a binary task,
    `args.positive` (the positive class) and `args.encode` (whether the target is learned as
    `value == positive`, i.e. is not already boolean); a model that cannot learn it is an error."""
    try:
        with filesystems.FileSystems.open(args.input) as f:
            values, complete = tasks.distinct_values(f, args.format, args.target)
    except UnreadableAvroFile as e:
        parser.error(str(e))
    # No target value at all: every row is a dead letter; the model's own task, for the report.
    args.task = args.task or tasks.infer(values, complete) or model_task
    try:
        if values:
            tasks.check(model_task, args.task, values)
        positive = tasks.positive_class(values, args.positive) if args.task == "binary" else None
    except ValueError as e:
        parser.error(f"--model {args.model}, --target {args.target}: {e}")
    if args.task != "binary" and args.positive is not None:
        parser.error(f"--positive is for a binary task; the task is {args.task}")
    args.positive = True if args.task == "binary" and not values else positive
    args.encode = args.task == "binary" and not (
        args.positive is True and all(isinstance(v, bool) for v in values))


def run(argv=None, console=QUIET) -> dict:
    """Runs the job; returns `metrics.json`'s content."""
    args, beam_args = parse_args(argv)
    task = args.task
    out = args.output.rstrip("/")
    if not filesystems.FileSystems.exists(out):
        filesystems.FileSystems.mkdirs(out)

    options = pipeline_options(beam_args)
    positive = f", positive class {args.positive!r}" if task == "binary" else ""
    console.say(f"prequential evaluation ({task}{positive}) of {args.model} over {args.input} "
                f"on {runner_name(options)}")
    learning = f"prequential:{uuid.uuid4().hex}:learning"
    rows = avro_records(args.input) if args.format == "avro" else None
    with console.progress([Bar(learning, rows, "events", "learning")]), beam.Pipeline(options=options) as p:
        source = p | "ReadRows" >> ReadRows(args.input, args.format, args.timestamp, args.id_field)
        examples = source.rows | "ToExamples" >> RowsToExamples(
            args.target, exclude=[f for f in (args.timestamp, args.id_field) if f],
            model_key_field=args.model_key)
        labelled = examples.examples
        if args.encode:  # a binary target is learned and scored as `value == positive`
            labelled = labelled | "IsPositive" >> beam.Map(_is_positive, args.positive).with_output_types(Example)
        learned = labelled | "LearnOnline" >> LearnOnline(args.model, mini_batch=args.mini_batch,
                                                          progress=learning)
        dead_letters = (source.dead_letters, examples.dead_letters, learned.dead_letters) \
            | "AllDeadLetters" >> beam.Flatten()

        learned.predictions | "WritePredictions" >> WriteRecords(
            f"{out}/predictions", "prediction", args.output_format)
        (learned.predictions
         | "WindowedMetrics" >> WindowedMetrics(task, args.window)
         | "WriteWindowedMetrics" >> WriteRecords(f"{out}/windowed_metrics", "metric", args.output_format))
        dead_letters | "WriteDeadLetters" >> WriteRecords(
            f"{out}/dead_letters", "dead_letter", args.output_format)

        # Predictions are counted by ProgressiveMetrics (its `count`); only dead letters here.
        counts = (dead_letters | "TagDeadLetters" >> beam.Map(lambda _: "dead_letters"),) | "Count" >> CountTags()
        (learned.predictions
         | "ProgressiveMetrics" >> ProgressiveMetrics(task)
         | "WriteMetricsJson" >> beam.Map(
             _write_json, f"{out}/metrics.json", beam.pvalue.AsDict(counts),
             task=task, model=args.model,
             **({"positive": _plain(args.positive)} if task == "binary" else {})))

    if not filesystems.FileSystems.exists(f"{out}/metrics.json"):
        raise UserError(f"no predictions from {args.input}: every row was a dead letter (see {out}/dead_letters)")
    with filesystems.FileSystems.open(f"{out}/metrics.json") as f:
        summary = json.loads(f.read())
    console.say(f"{summary['predictions']:,} predictions, {summary['dead_letters']:,} dead letters; "
                + ", ".join(f"{k} {summary[k]:.4f}" for k in METRICS[task]))
    console.say(f"outputs in {out}/: metrics.json, predictions, windowed_metrics, dead_letters "
                f"(.{args.output_format})")
    return summary


def _is_positive(example: Example, positive) -> Example:
    return dataclasses.replace(example, y=bool(example.y == positive))


def _plain(value):
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _write_json(scores: dict, path: str, counts: dict, **extra):
    summary = {**extra, **scores, "predictions": scores["count"],
               "dead_letters": counts.get("dead_letters", 0)}
    with filesystems.FileSystems.create(path) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode())


if __name__ == "__main__":
    # Run the importable module, not __main__: the functions the pipeline pickles then refer to
    # `pipelines.prequential`, which workers in another process (Flink's worker pool) can import.
    from pipelines import prequential
    sys.exit(main(prequential.run))
