"""Prequential metrics per event-time window and over the whole input, per model key and over
all keys, combined per key and window (a `CombineFn`), equal to `core.scoring.score`.

`core.scoring.score` updates river's metrics prediction by prediction in (event time, event
id, model key) order. Here each metric keeps what it needs of a prediction in an accumulator
that merges, and the river metric is fed at the end:

- **Counted** (`Accuracy`, `MacroF1`, `ROCAUC`): the state is confusion matrices of integer
  counts, which add exactly whatever the order. The accumulator counts predictions per
  (label, predicted label), or for ROC AUC per (label, number of its thresholds the
  probability exceeds), with the earliest such prediction; the metric is fed each group, in
  order of first appearance, as many times as it was counted. Bounded: a few entries.
- **Ordered** (`LogLoss`, `MAE`, `RMSE`, anything else): river keeps a running mean
  (`mean += w / n * (x - mean)`), whose floating-point result depends on the order, and river
  has no exact merge (`Metric.__add__` only makes a `Metrics` list; `stats.Mean`'s `+=` is the
  parallel formula, different in the last bits). An exact result needs every term in event
  order, so the accumulator keeps one compact entry per scored prediction (event time, event
  id, label, probability of the positive class or the predicted value; columns per model key),
  sorted at the end. It is a fraction of the prediction (no features, probabilities dict,
  origin), and it is pre-combined per bundle before the shuffle, so no stage groups the
  predictions themselves; but the terms of one key and window (for `ProgressiveMetrics`, of
  the whole input) meet in one accumulator: the price of results byte-identical to river's.

The '*' scope of a window merges the window's per-key accumulators (a second, small combine).
"""
from __future__ import annotations

import itertools
import typing

import apache_beam as beam
from apache_beam.transforms import window
from river import metrics as river_metrics

from core.records import ALL_KEYS, Prediction, WindowedMetric
from core.scoring import METRICS
from transforms import coders  # noqa: F401  (registers the record coders)
from transforms.chunks import ChunkPerKey

# Metrics whose state is confusion counts only (exact in any order); the others are ordered.
COUNTED = (river_metrics.Accuracy, river_metrics.MacroF1, river_metrics.ROCAUC)


class WindowedMetrics(beam.PTransform):
    """Metrics per event-time window, per model key and over all keys (`scope='*'`).

    Args:
        task: 'binary', 'multiclass' or 'regression'.
        size_s: window length in seconds of event time.
        period_s: for sliding windows, the period; None gives fixed windows.
    """

    def __init__(self, task: str, size_s: float, period_s: float | None = None):
        super().__init__()
        if task not in METRICS:
            raise ValueError(f"task must be one of {sorted(METRICS)}, not {task!r}")
        if size_s <= 0 or (period_s is not None and period_s <= 0):
            raise ValueError("window size and period must be positive")
        self.task, self.size_s, self.period_s = task, size_s, period_s

    def expand(self, predictions):
        windowing = (window.FixedWindows(self.size_s) if self.period_s is None
                     else window.SlidingWindows(self.size_s, self.period_s))
        per_key = (
            predictions
            # Typed, so that the chunks are encoded with the predictions' coder, not pickle.
            | "ByKey" >> beam.Map(lambda p: (p.model_key, p)).with_output_types(beam.typehints.KV[str, Prediction])
            | "Chunk" >> ChunkPerKey(windowfn=windowing)
            | "Combine" >> beam.CombinePerKey(ScoresFn(self.task)))
        overall = (per_key
                   | "AllKeys" >> beam.MapTuple(lambda _, acc: (ALL_KEYS, acc))
                   | "Merge" >> beam.CombinePerKey(MergeScoresFn(self.task)))
        return ((per_key, overall) | "Flatten" >> beam.Flatten()
                | "Score" >> beam.ParDo(_WindowMetricDoFn(self.task)).with_output_types(WindowedMetric))


class _WindowMetricDoFn(beam.DoFn):
    def __init__(self, task: str):
        self.task = task

    def process(self, element, w=beam.DoFn.WindowParam):
        scope, acc = element
        yield WindowedMetric(scope=scope, window_start=w.start.micros // 1000, window_end=w.end.micros // 1000,
                             count=acc["count"], metrics=finish(acc, self.task))


class ProgressiveMetrics(beam.PTransform):
    """Final progressive metrics over all predictions (bounded input: emitted when it ends):
    one dict, or with `by_key` one `(model key, dict)` per model key."""

    def __init__(self, task: str, by_key: bool = False):
        super().__init__()
        self.task, self.by_key = task, by_key

    def expand(self, predictions):
        return (
            predictions
            | "Key" >> beam.Map(lambda p: (p.model_key if self.by_key else "", p)).with_output_types(
                beam.typehints.KV[str, Prediction])
            | "Chunk" >> ChunkPerKey(windowfn=window.GlobalWindows())
            | "Combine" >> beam.CombinePerKey(ScoresFn(self.task))
            | "Score" >> beam.MapTuple(self._score).with_output_types(typing.Any)
        )

    def _score(self, key, acc):
        scores = {"count": acc["count"], **finish(acc, self.task)}
        return (key, scores) if self.by_key else scores  # (key "" when not by key)


class ScoresFn(beam.CombineFn):
    """Chunks of predictions (lists) -> an accumulator that `finish` turns into the scores
    `core.scoring.score` gives over the same predictions."""

    def __init__(self, task: str):
        if task not in METRICS:
            raise ValueError(f"task must be one of {sorted(METRICS)}, not {task!r}")
        self.task = task

    def setup(self):
        self._metrics = _templates(self.task)

    def create_accumulator(self):
        return empty(self.task)

    def add_input(self, acc, chunk):
        metrics = getattr(self, "_metrics", None) or _templates(self.task)
        for p in chunk:
            add(acc, p, self.task, metrics)
        return acc

    def merge_accumulators(self, accs):
        accs = iter(accs)
        merged = next(accs)
        for acc in accs:
            merge_into(merged, acc, self.task)
        return merged

    def extract_output(self, acc):
        return acc


class MergeScoresFn(ScoresFn):
    """Accumulators of `ScoresFn` -> their merge (the inputs are not modified)."""

    def add_input(self, acc, other):
        return merge_into(acc, other, self.task)


def _templates(task: str) -> dict:
    return {name: cls() for name, cls in METRICS[task].items()}


def empty(task: str) -> dict:
    """An empty accumulator: the count, and per metric a dict (counted) or columns per key
    (ordered)."""
    return {"count": 0, **{name: {} for name in METRICS[task]}}


def add(acc: dict, p: Prediction, task: str, metrics: dict) -> None:
    """Adds one prediction as `core.scoring.score` would score it (`metrics`: river metrics of
    the task, read for their kind and thresholds only)."""
    acc["count"] += 1
    if p.y_true is None:
        return
    order = p.order()
    for name, metric in metrics.items():
        y_pred = p.y_pred if task == "regression" or metric.requires_labels else p.y_proba
        if y_pred is None or y_pred == {}:
            continue
        if isinstance(metric, river_metrics.ROCAUC):
            y_pred = y_pred.get(True, 0.0) if isinstance(y_pred, dict) else y_pred
            group = (p.y_true, sum(y_pred > t for t in metric.thresholds))
        elif isinstance(metric, COUNTED):
            group = (p.y_true, y_pred)
        else:  # ordered: one entry (columns per model key)
            if isinstance(metric, river_metrics.LogLoss) and isinstance(y_pred, dict):
                y_pred = y_pred.get(True, 0.0)  # all LogLoss reads of it
            columns = acc[name].get(p.model_key)
            if columns is None:
                columns = acc[name][p.model_key] = ([], [], [], [])
            for column, value in zip(columns, (p.event_time, p.event_id, p.y_true, y_pred)):
                column.append(value)
            continue
        seen = acc[name].get(group)
        if seen is None:
            acc[name][group] = [order, y_pred, 1]
        else:
            seen[2] += 1
            if order < seen[0]:
                seen[0], seen[1] = order, y_pred


def merge_into(acc: dict, other: dict, task: str) -> dict:
    """Adds accumulator `other` to `acc` (which it returns); `other` is left as it was."""
    acc["count"] += other["count"]
    for name, cls in METRICS[task].items():
        mine, ordered = acc[name], not issubclass(cls, COUNTED)
        for key, value in other[name].items():
            if ordered:  # columns of model key `key`
                columns = mine.get(key)
                if columns is None:
                    columns = mine[key] = ([], [], [], [])
                for column, more in zip(columns, value):
                    column.extend(more)
                continue
            seen = mine.get(key)
            if seen is None:
                mine[key] = list(value)
            else:
                seen[2] += value[2]
                if tuple(value[0]) < tuple(seen[0]):
                    seen[0], seen[1] = value[0], value[1]
    return acc


def finish(acc: dict, task: str) -> dict:
    """The scores of an accumulator: river's metrics fed in event order (see the module)."""
    scores = {}
    for name, metric in _templates(task).items():
        state = acc[name]
        if isinstance(metric, COUNTED):
            for (y_true, _), (_, y_pred, n) in sorted(state.items(), key=lambda kv: tuple(kv[1][0])):
                for _ in range(n):
                    metric.update(y_true, y_pred)
        else:
            entries = itertools.chain.from_iterable(
                zip(times, ids, itertools.repeat(key), y_trues, values)
                for key, (times, ids, y_trues, values) in state.items())
            for _, _, _, y_true, y_pred in sorted(entries, key=lambda e: e[:3]):
                metric.update(y_true, y_pred)
        scores[name] = float(metric.get())
    return scores
